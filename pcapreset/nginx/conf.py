"""nginxconf: the upstream keep-alive and proxy timeouts of an nginx.conf.

Reads what the reset analysis compares against: each ``upstream {}`` block's
servers, ``keepalive`` (connection cache size; without it nginx does not reuse
upstream connections at all), ``keepalive_timeout`` / ``keepalive_time`` /
``keepalive_requests``, and the ``proxy_read_timeout``, ``proxy_connect_timeout``,
``proxy_send_timeout``, ``proxy_next_upstream`` and ``proxy_http_version``
directives wherever they are set. ``include`` files are followed (globs,
relative to the main file's directory, as nginx resolves them against its
conf prefix).

Never raises on odd syntax or unreadable files: it returns what it found and
lists what it could not read in ``warnings``.

Defaults (checked in nginx's source, src/http/modules/
ngx_http_upstream_keepalive_module.c: ``timeout`` 60000 ms, ``time`` 3600000 ms,
``requests`` 1000; ngx_http_proxy_module.c: connect/read/send timeouts 60000 ms;
``proxy_next_upstream`` defaults to ``error timeout``). Time values follow
ngx_parse_time (src/core/ngx_parse.c): units ms s m h d w M y, combinable
("1m 30s"), a bare number is seconds.
"""

from __future__ import annotations

import glob
import ipaddress
import itertools
import os
import re
import stat
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import PcapResetError

UPSTREAM_KEEPALIVE_TIMEOUT_DEFAULT_S = 60.0
UPSTREAM_KEEPALIVE_TIME_DEFAULT_S = 3600.0
UPSTREAM_KEEPALIVE_REQUESTS_DEFAULT = 1000
PROXY_TIMEOUT_DEFAULT_S = 60.0
PROXY_NEXT_UPSTREAM_DEFAULT = ("error", "timeout")

PROXY_DIRECTIVES = (
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_http_version",
    "proxy_pass",
)
PASS_DIRECTIVES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass")
_TIME_DIRECTIVES = {
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream_timeout",
    "keepalive_timeout",
    "keepalive_time",
}
_MAX_FILES = 256
_MAX_DEPTH = 16
_MAX_BYTES = 8 << 20

_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "M": 30 * 86400.0,
    "y": 365 * 86400.0,
}
_TIME_PART = re.compile(r"(\d+)(ms|[smhdwMy])?\s*")


def parse_time_s(text: str) -> float | None:
    """nginx time value ("60s", "500ms", "1m 30s", "75") -> seconds, None if invalid."""
    text = text.strip()
    if not text:
        return None
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _TIME_PART.match(text, pos)
        if not m:
            return None
        unit = m.group(2)
        if unit is None and m.end() != len(text):
            return None  # a bare number is only allowed last
        total += int(m.group(1)) * _UNIT_S[unit or "s"]
        pos = m.end()
    return total


def normalize_addr(addr: str) -> str:
    """An upstream ``server`` address as pcapreset writes endpoints ("ip:port").

    "10.0.0.2:3000" stays; "[FD77::0002]:3000" -> "[fd77::2]:3000"; a bare IP
    gets port 80 (nginx's default); host names and unix: sockets are kept as
    written.
    """
    addr = addr.strip()
    if addr.startswith("unix:"):
        return addr
    host, port = addr, "80"
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass
class Setting:
    """One directive found in the file: where, in which block, with which value."""

    directive: str
    args: list[str]
    context: str  # e.g. "http > server > location /api"
    source: str  # "file:line"

    @property
    def value_s(self) -> float | None:
        if self.directive in _TIME_DIRECTIVES and self.args:
            return parse_time_s(" ".join(self.args))
        return None

    def as_dict(self) -> dict:
        out: dict = {
            "directive": self.directive,
            "value": " ".join(self.args),
            "context": self.context,
            "source": self.source,
        }
        if self.value_s is not None:
            out["value_s"] = self.value_s
        return out


@dataclass
class Upstream:
    name: str
    source: str
    servers: list[str] = field(default_factory=list)  # normalized addresses
    keepalive: int | None = None  # connection cache size; None: no reuse at all
    keepalive_timeout: Setting | None = None
    keepalive_time: Setting | None = None
    keepalive_requests: int | None = None

    @property
    def keepalive_timeout_s(self) -> float:
        v = self.keepalive_timeout.value_s if self.keepalive_timeout else None
        return UPSTREAM_KEEPALIVE_TIMEOUT_DEFAULT_S if v is None else v

    @property
    def keepalive_timeout_source(self) -> str:
        if self.keepalive_timeout and self.keepalive_timeout.value_s is not None:
            return self.keepalive_timeout.source
        return "nginx default"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "servers": self.servers,
            "keepalive": self.keepalive,
            "keepalive_timeout_s": self.keepalive_timeout_s if self.keepalive else None,
            "keepalive_timeout_source": self.keepalive_timeout_source,
            "keepalive_requests": self.keepalive_requests,
        }


@dataclass
class NginxConf:
    path: str
    files: list[str] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    proxy: list[Setting] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the upstream protocols nginx speaks here: fastcgi_pass, uwsgi_pass, ...
    passes: set[str] = field(default_factory=set)

    def upstream_for(self, servers: Iterable[str]) -> Upstream | None:
        """The upstream block whose servers were seen in the capture, else the only one."""
        seen = {normalize_addr(s) for s in servers}
        hits = [u for u in self.upstreams if seen & set(u.servers)]
        if hits:
            return max(hits, key=lambda u: len(seen & set(u.servers)))
        return self.upstreams[0] if len(self.upstreams) == 1 else None

    def keepalive_timeout_s(self, servers: Iterable[str] = ()) -> tuple[float, str] | None:
        """(seconds, source) of the upstream keepalive_timeout that applies, or None.

        None when no upstream block applies or it has no ``keepalive`` directive
        (nginx then closes every upstream connection after its request).
        """
        u = self.upstream_for(servers)
        if u is None:
            cached = [u for u in self.upstreams if u.keepalive]
            if len({c.keepalive_timeout_s for c in cached}) != 1:
                return None
            u = cached[0]
        if not u.keepalive:
            return None
        return u.keepalive_timeout_s, u.keepalive_timeout_source

    def evidence(self) -> set[str]:
        """What the configuration shows for the advice table
        (:data:`pcapreset.interpret.advice.BACKEND_ADVICE`): ``fastcgi`` / ``uwsgi``
        (the pass directive), ``http10`` (proxy_pass with an upstream ``keepalive`` but
        no ``proxy_http_version 1.1``: nginx speaks HTTP/1.0 and never reuses)."""
        out = {p.removesuffix("_pass") for p in self.passes if p != "proxy_pass"}
        v11 = any(st.args[:1] == ["1.1"] for st in self.get("proxy_http_version"))
        if "proxy_pass" in self.passes and any(u.keepalive for u in self.upstreams) and not v11:
            out.add("http10")
        return out

    def get(self, directive: str) -> list[Setting]:
        return [s for s in self.proxy if s.directive == directive]

    def as_dict(self, servers: Iterable[str] = ()) -> dict:
        ka = self.keepalive_timeout_s(servers)
        return {
            "path": self.path,
            "files": self.files,
            "upstreams": [u.as_dict() for u in self.upstreams],
            "upstream_keepalive_timeout_s": ka[0] if ka else None,
            "upstream_keepalive_timeout_source": ka[1] if ka else None,
            "proxy": [s.as_dict() for s in self.proxy],
            "warnings": self.warnings,
        }


# ------------------------------------------------------------------ tokens
Token = tuple[str, bool, str, int]  # text, is_word, file, line


def _tokens(text: str, fname: str) -> Iterator[Token]:
    """nginx's lexer, simplified: words, quoted strings, ``;`` ``{`` ``}``, # comments."""
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in ";{}":
            yield ch, False, fname, line
            i += 1
        elif ch in "\"'":
            start_line = line
            j, buf = i + 1, []
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            yield "".join(buf), True, fname, start_line
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                if text[j] == "$" and j + 1 < n and text[j + 1] == "{":
                    k = text.find("}", j)
                    j = n if k < 0 else k + 1
                    continue
                j += 1
            yield text[i:j], True, fname, line
            i = j


class _Reader:
    """Statement walker over the main file and its includes."""

    def __init__(self, path: str) -> None:
        self.conf = NginxConf(path=path)
        self.prefix = os.path.dirname(os.path.abspath(path))
        self.ctx: list[str] = []
        self.upstream: Upstream | None = None
        self.upstream_depth = -1

    def read_file(self, path: str) -> str | None:
        if len(self.conf.files) >= _MAX_FILES:
            self.conf.warnings.append(f"{path}: not read, more than {_MAX_FILES} files")
            return None
        try:
            # (O_NONBLOCK: opening a FIFO must not wait for a writer; only a
            # regular file is read)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError as e:
            self.conf.warnings.append(f"{path}: {e.strerror or e}")
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.conf.warnings.append(f"{path}: not a regular file, not read")
                return None
            with os.fdopen(fd, "rb") as f:
                fd = -1
                data = f.read(_MAX_BYTES + 1)
        except OSError as e:
            self.conf.warnings.append(f"{path}: {e.strerror or e}")
            return None
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) > _MAX_BYTES:
            self.conf.warnings.append(f"{path}: larger than {_MAX_BYTES} bytes, truncated")
        self.conf.files.append(path)
        return data[:_MAX_BYTES].decode("utf-8", "replace")

    def run(self) -> NginxConf:
        self.walk(self.conf.path, 0)
        if self.ctx:
            self.conf.warnings.append(f"unclosed block(s) at end: {' > '.join(self.ctx)}")
        if self.upstream is not None:
            self.conf.upstreams.append(self.upstream)
        return self.conf

    def walk(self, path: str, depth: int) -> None:
        text = self.read_file(path)
        if text is None:
            return
        words: list[str] = []
        where = ""
        for tok, is_word, fname, line in _tokens(text, path):
            if is_word:
                if not words:
                    where = f"{fname}:{line}"
                words.append(tok)
            elif tok == ";":
                if words:
                    self.directive(words, where, depth)
                words = []
            elif tok == "{":
                self.open_block(words, where)
                words = []
            else:
                if words:
                    self.conf.warnings.append(f"{where}: directive without ';' before '}}'")
                    words = []
                self.close_block(f"{fname}:{line}")
        if words:
            self.conf.warnings.append(f"{where}: directive without ';' at end of file")

    def open_block(self, words: list[str], where: str) -> None:
        self.ctx.append(" ".join(words) or "?")
        if words and words[0] == "upstream" and self.upstream is None:
            name = words[1] if len(words) > 1 else "?"
            self.upstream = Upstream(name=name, source=where)
            self.upstream_depth = len(self.ctx)

    def close_block(self, where: str) -> None:
        if not self.ctx:
            self.conf.warnings.append(f"{where}: unexpected '}}'")
            return
        if self.upstream is not None and len(self.ctx) == self.upstream_depth:
            self.conf.upstreams.append(self.upstream)
            self.upstream = None
        self.ctx.pop()

    def directive(self, words: list[str], where: str, depth: int) -> None:
        name, args = words[0], words[1:]
        if name == "include" and args:
            self.include(args[0], where, depth)
        elif self.upstream is not None and len(self.ctx) == self.upstream_depth:
            self.upstream_directive(name, args, where)
        elif name in PASS_DIRECTIVES:
            self.conf.passes.add(name)
            if name in PROXY_DIRECTIVES:
                self.conf.proxy.append(Setting(name, args, " > ".join(self.ctx), where))
        elif name in PROXY_DIRECTIVES:
            self.conf.proxy.append(Setting(name, args, " > ".join(self.ctx), where))

    def include(self, pattern: str, where: str, depth: int) -> None:
        if depth >= _MAX_DEPTH:
            self.conf.warnings.append(f"{where}: include nested deeper than {_MAX_DEPTH}")
            return
        full = pattern if os.path.isabs(pattern) else os.path.join(self.prefix, pattern)
        if glob.has_magic(full):
            # (lazily, and no further than the files that can still be read:
            # `include /*/*/*/*/*/*;` would walk the whole file system)
            room = _MAX_FILES - len(self.conf.files) + 1
            paths = sorted(itertools.islice(glob.iglob(full), max(room, 1)))
            if len(paths) >= room:
                self.conf.warnings.append(
                    f"{where}: include {pattern}: matches more than the {_MAX_FILES} files "
                    "read at most; the rest not read"
                )
                paths = paths[: max(room - 1, 0)]
        else:
            paths = [full]
        for p in paths:
            self.walk(p, depth + 1)

    def upstream_directive(self, name: str, args: list[str], where: str) -> None:
        u = self.upstream
        assert u is not None
        setting = Setting(name, args, " > ".join(self.ctx), where)
        if name == "server" and args:
            u.servers.append(normalize_addr(args[0]))
        elif name == "keepalive" and args:
            u.keepalive = _int(args[0])
        elif name == "keepalive_timeout" and args:
            u.keepalive_timeout = setting
            if setting.value_s is None:
                self.conf.warnings.append(f"{where}: keepalive_timeout {args[0]!r} not a time")
        elif name == "keepalive_time" and args:
            u.keepalive_time = setting
        elif name == "keepalive_requests" and args:
            u.keepalive_requests = _int(args[0])


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def read_conf(path: str | os.PathLike) -> NginxConf:
    """Parse an nginx.conf (and its includes). Never raises."""
    try:
        return _Reader(os.fspath(path)).run()
    except RecursionError:  # pragma: no cover - bounded by _MAX_DEPTH
        conf = NginxConf(path=os.fspath(path))
        conf.warnings.append("include recursion too deep")
        return conf


class NginxConfError(PcapResetError):
    """The nginx.conf the user named cannot be read at all."""


def load_conf(path: str | os.PathLike) -> NginxConf:
    """:func:`read_conf`, but an unreadable main file is an error (the user named it)."""
    conf = read_conf(path)
    if not conf.files:
        raise NginxConfError(f"--nginx-conf {conf.warnings[0] if conf.warnings else path}")
    return conf


def text_lines(conf: NginxConf, servers: Iterable[str] = ()) -> list[str]:
    """What the text report says about the nginx.conf that was read."""
    out = [f"nginx.conf ({os.path.basename(conf.path)}, {len(conf.files)} file(s))"]
    u = conf.upstream_for(servers)
    if u is not None:
        ka = (
            f"keepalive {u.keepalive}, keepalive_timeout {u.keepalive_timeout_s:g} s "
            f"({os.path.basename(u.keepalive_timeout_source)})"
            if u.keepalive
            else "no `keepalive`: nginx opens a new upstream connection per request"
        )
        out += textwrap.wrap(
            f"upstream {u.name} ({', '.join(u.servers) or 'no servers'}): {ka}",
            80,
            initial_indent="  ",
            subsequent_indent="    ",
        )
    elif conf.upstreams:
        out.append(f"  {len(conf.upstreams)} upstream blocks, none with the captured servers")
    for s in conf.proxy:
        if s.directive != "proxy_pass":
            out.append(f"  {s.directive} {' '.join(s.args)} ({s.context or 'main'})")
    for w in conf.warnings[:5]:
        out += textwrap.wrap(w, 80, initial_indent="  warning: ", subsequent_indent="    ")
    return out
