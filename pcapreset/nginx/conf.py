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

The model it fills in (settings, upstream blocks, nginx's defaults) is
:mod:`pcapreset.nginx.conf_model`.
"""

from __future__ import annotations

import glob
import itertools
import os
import stat
import textwrap
from collections.abc import Iterable, Iterator

from ..errors import PcapResetError
from .conf_model import (
    PASS_DIRECTIVES,
    PROXY_DIRECTIVES,
    NginxConf,
    Setting,
    Upstream,
    normalize_addr,
)

_MAX_FILES = 256
_MAX_DEPTH = 16
_MAX_BYTES = 8 << 20


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
