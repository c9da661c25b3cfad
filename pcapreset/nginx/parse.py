"""parse: nginx's error.log and access.log lines, read into a :class:`LogSet`.

Message formats, checked in nginx's source (nginx/nginx, 2026):

* time: ``%4d/%02d/%02d %02d:%02d:%02d`` in local time (src/core/ngx_times.c,
  ``cached_err_log_time`` from ``ngx_localtime``), no zone;
* ``(%d: strerror)`` after the message (src/core/ngx_log.c);
* ``connect() failed`` (async, src/http/ngx_http_upstream.c
  ngx_http_upstream_test_connect) and ``connect() to ADDR failed``
  (src/event/ngx_event_connect.c); ``recv() failed`` (src/os/unix/ngx_recv.c),
  ``readv() failed`` / ``writev() failed`` / ``send() failed`` / ``sendfile()
  failed``; ``upstream timed out`` (ngx_connection_error with NGX_ETIMEDOUT),
  ``upstream prematurely closed connection``, ``no live upstreams``,
  ``upstream sent ...`` (ngx_http_upstream.c);
* context ``, client: C, server: S, request: "R", upstream: "SCHEMA PEER URI",
  host: "H"`` (src/http/ngx_http_request.c ngx_http_log_error_handler); for a
  unix socket PEER is ``unix:/path`` followed by ``:`` and the URI; for ``no
  live upstreams`` PEER is the upstream group's name.

"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import stat
import time
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from ..errors import PcapResetError
from .conf_model import normalize_addr

_LEVELS = {"error", "crit", "alert", "emerg"}

_ERR_RE = re.compile(
    r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$"
)
_ERRNO_RE = re.compile(r"\((\d+): [^)]*\)")
_CTX_RE = re.compile(r", client: ")
_REQUEST_RE = re.compile(r', request: "(.*?)"(?=, (?:subrequest|upstream|host|referrer): |$)')
_UPSTREAM_RE = re.compile(r', upstream: "([^"]*)"')
_SCHEMA_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")


class NginxLogError(PcapResetError):
    """An nginx log or time zone the user named cannot be used."""


# ------------------------------------------------------------- error.log
@dataclass
class ErrorLine:
    ts: float  # epoch seconds of the logged second
    line: int
    level: str
    errno: int | None
    message: str
    kind: (
        str  # refused | reset | timeout | premature | no_live | denied | protocol | connect | other
    )
    upstream: str | None  # "ip:port", "[v6]:port", "unix:/path" or a group name
    upstream_uri: str | None
    request: str | None
    file: str = ""
    local: dt.datetime | None = None  # the logged wall-clock time (no zone)

    def as_dict(self) -> dict:
        return {
            "ts": self.ts,
            "line": self.line,
            "errno": self.errno,
            "message": self.message,
            "upstream": self.upstream,
            "request": self.request,
            "kind": self.kind,
            "file": self.file,
        }


def failure_kind(message: str, errno: int | None) -> str:
    """What failed, from the message text and errno (Linux errno values)."""
    m = message
    if "no live upstreams" in m:
        return "no_live"
    if m.startswith("upstream timed out") or errno == 110:
        return "timeout"
    if m.startswith("upstream prematurely closed"):
        return "premature"
    if m.startswith("connect()"):
        if errno == 13:  # EACCES: refused by the kernel (SELinux), no packet sent
            return "denied"
        return "refused" if errno == 111 else "connect"
    if errno in (104, 32):  # ECONNRESET; EPIPE (write after the peer's RST)
        return "reset"
    if m.startswith("upstream sent"):
        return "protocol"
    return "other"


def parse_upstream(text: str) -> tuple[str | None, str | None]:
    """``http://10.0.0.2:3000/p`` -> ("10.0.0.2:3000", "/p"); IPv6 -> "[addr]:port"."""
    rest = _SCHEMA_RE.sub("", text, count=1)
    if rest.startswith("unix:"):
        cut = rest.find(":", 5)
        return (rest, None) if cut < 0 else (rest[:cut], rest[cut + 1 :] or None)
    start = rest.find("]") + 1 if rest.startswith("[") else 0
    cut = rest.find("/", start)
    peer, uri = (rest, None) if cut < 0 else (rest[:cut], rest[cut:])
    if not peer:
        return None, uri
    norm = normalize_addr(peer)
    # a group name ("no live upstreams") stays as written, without a made-up port
    if ":" not in peer and not peer.startswith("["):
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            return peer, uri
    return norm, uri


def _is_upstream_line(level: str, message: str, kind: str, has_upstream: bool) -> bool:
    if level not in _LEVELS:
        return False
    if "client prematurely closed" in message or message.startswith("client "):
        return False
    return kind != "other" or has_upstream


def parse_error_line(text: str, lineno: int, tz: dt.tzinfo | None = None) -> ErrorLine | None:
    """One error.log line -> ErrorLine if it is about an upstream, else None.

    ``tz`` is the zone nginx ran in; None: this machine's local zone (with DST).
    """
    m = _ERR_RE.match(text.rstrip("\r\n"))
    if not m:
        return None
    y, mo, d, h, mi, s, level, body = m.groups()
    cut = _CTX_RE.search(body)
    message = body[: cut.start()] if cut else body
    ctx = body[cut.start() :] if cut else ""
    em = _ERRNO_RE.search(message)
    errno = int(em.group(1)) if em else None
    kind = failure_kind(message, errno)
    um = _UPSTREAM_RE.search(ctx)
    if not _is_upstream_line(level, message, kind, um is not None):
        return None
    try:
        when = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
    except ValueError:
        return None
    upstream, uri = parse_upstream(um.group(1)) if um else (None, None)
    rm = _REQUEST_RE.search(ctx)
    return ErrorLine(
        ts=_epoch(when, tz),
        line=lineno,
        level=level,
        errno=errno,
        message=message,
        kind=kind,
        upstream=upstream,
        upstream_uri=uri,
        request=rm.group(1) if rm else None,
        local=when,
    )


def _epoch(local: dt.datetime, tz: dt.tzinfo | None) -> float:
    """Wall-clock time in zone ``tz`` (None: local, like nginx's localtime) -> epoch s."""
    return float(int(local.replace(tzinfo=tz).timestamp()))


# ------------------------------------------------------------ access.log
@dataclass
class AccessLine:
    ts: float  # end of the request ($msec when logged, else $time_local)
    line: int
    status: int
    request: str
    attempts: list[tuple[str, str]]  # ($upstream_addr, $upstream_status) per try
    error_line: ErrorLine | None = None
    file: str = ""
    utc_offset_s: int | None = None  # from $time_local

    @property
    def failed_attempts(self) -> list[tuple[str, str]]:
        return [(a, s) for a, s in self.attempts if s in ("502", "504")]


_ACCESS_RE = re.compile(
    r'^\S+ \S+ \S+ \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "((?:[^"\\]|\\.)*)" '
    r"(\d{3}) (.*)$"
)
_ADDR = r"(?:\d{1,3}(?:\.\d{1,3}){3}:\d+|\[[0-9A-Fa-f:.]+\]:\d+|unix:[^\s,]+)"
_ADDRS = rf"{_ADDR}(?:(?:, | : )(?:{_ADDR}|[\w.-]+))*"
_STATUS = r"(?:\d{3}|-)(?:(?:, | : )(?:\d{3}|-))*"
_UPS_RE = re.compile(rf'(?:^|\s)"?({_ADDRS})"? "?({_STATUS})"?(?=\s|$)')
_MSEC_RE = re.compile(r"\s(\d{9,11}\.\d{3})\s*$")
_SEP = re.compile(r", | : ")


def parse_access_line(text: str, lineno: int) -> AccessLine | None:
    m = _ACCESS_RE.match(text.rstrip("\r\n"))
    if not m:
        return None
    stamp, request, status, rest = m.groups()
    try:
        local = dt.datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        return None
    ms = _MSEC_RE.search(" " + rest)
    ts = float(ms.group(1)) if ms else local.timestamp()
    offset = local.utcoffset()
    attempts: list[tuple[str, str]] = []
    um = _UPS_RE.search(rest)
    if um:
        addrs = _SEP.split(um.group(1))
        codes = _SEP.split(um.group(2))
        attempts = [
            (normalize_addr(a) if a[:1].isdigit() or a[:1] == "[" else a, c)
            for a, c in zip(addrs, codes, strict=False)
        ]
    return AccessLine(
        ts,
        lineno,
        int(status),
        request,
        attempts,
        utc_offset_s=None if offset is None else int(offset.total_seconds()),
    )


# ------------------------------------------------------------------ files
@dataclass
class LogSet:
    files: list[str] = field(default_factory=list)
    errors: list[ErrorLine] = field(default_factory=list)
    access: list[AccessLine] = field(default_factory=list)
    access_has_upstream: bool = False
    access_offsets: set[int] = field(default_factory=set)  # UTC offsets seen (s)
    time_zone: str = ""  # how error.log times were read
    long_lines: int = 0  # lines over MAX_LINE characters, skipped


def resolve_tz(name: str | None) -> dt.tzinfo | None:
    """--nginx-tz: "UTC", "Europe/Berlin", "+02:00"; None/"" -> None (local zone)."""
    if not name:
        return None
    shown = repr(name if len(name) <= 60 else name[:60] + "...")
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3))
        if hours > 23 or minutes > 59:
            raise NginxLogError(f"--nginx-tz {shown}: not a UTC offset (-23:59 to +23:59)")
        off = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(-off if m.group(1) == "-" else off)
    if name.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    if len(name) > 255:  # (no zone name is this long; the file system refuses it)
        raise NginxLogError(f"--nginx-tz {shown}: unknown time zone")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise NginxLogError(f"--nginx-tz {shown}: unknown time zone") from e


#: the longest log line read (nginx's own error.log lines stay under ~4 KB;
#: an access.log line with long URIs under ~16 KB); longer ones are skipped
MAX_LINE = 64 << 10


def read_logs(paths: Sequence[str | os.PathLike], tz: dt.tzinfo | None = None) -> LogSet:
    """Read error.log and access.log files (told apart by their line format),
    a line at a time: lines over :data:`MAX_LINE` characters are skipped and
    counted. A device or a directory is refused (a pipe is read)."""
    out = LogSet()
    for p in paths:
        path = os.fspath(p)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                mode = os.fstat(f.fileno()).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                    raise NginxLogError(f"{path}: not a log file (not a regular file or a pipe)")
                out.files.append(path)
                _read_lines(_bounded_lines(f, out), path, tz, out)
        except OSError as e:
            raise NginxLogError(f"{path}: {e.strerror or e}") from None
    return out


def _bounded_lines(f: IO[str], out: LogSet) -> Iterator[str]:
    """The lines of ``f``; one over :data:`MAX_LINE` is read past in pieces
    and given as "" (line numbers stay right), counted in ``out.long_lines``."""
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            out.long_lines += 1
            while line and not line.endswith("\n"):
                line = f.readline(MAX_LINE)
            yield ""
            continue
        yield line


def _read_lines(lines: Iterable[str], path: str, tz: dt.tzinfo | None, out: LogSet) -> None:
    for n, text in enumerate(lines, 1):
        if _ERR_RE.match(text):
            e = parse_error_line(text, n, tz)
            if e is not None:
                e.file = path
                out.errors.append(e)
            continue
        a = parse_access_line(text, n)
        if a is not None:
            a.file = path
            out.access.append(a)
            out.access_has_upstream |= bool(a.attempts)
            if a.utc_offset_s is not None:
                out.access_offsets.add(a.utc_offset_s)


def load(paths: Sequence[str | os.PathLike], tz_name: str | None = None) -> LogSet:
    """Read the logs; error.log times in ``tz_name``, else in the zone access.log's
    $time_local offsets name (one nginx, one zone), else this machine's local zone."""
    tz = resolve_tz(tz_name)
    logs = read_logs(paths, tz)
    logs.time_zone = tz_name or f"local ({time.tzname[0]})"
    if tz is None and len(logs.access_offsets) == 1:
        off = next(iter(logs.access_offsets))
        tz = dt.timezone(dt.timedelta(seconds=off))
        for e in logs.errors:
            if e.local is not None:
                e.ts = _epoch(e.local, tz)
        logs.time_zone = f"UTC{_fmt_offset(off)} (from access.log $time_local)"
    return logs


def _fmt_offset(off: int) -> str:
    return f"{'+' if off >= 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
