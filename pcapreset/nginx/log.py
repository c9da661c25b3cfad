"""nginxlog: nginx error.log / access.log lines about an upstream -> the wire.

Parses nginx's error.log (and an access.log with ``$upstream_addr
$upstream_status``, detected by its format) and ties each upstream error line,
one to one, to the reset or finding on the wire that produced it: same second
(±1 s, nginx logs whole seconds), same upstream address, a compatible kind of
failure, and the same request URI where the capture shows it.

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

The URI in ``upstream:`` is ``u->uri``, the request target nginx wrote on the
upstream connection, so it can be compared with the request seen on the wire.
"""

from __future__ import annotations

import bisect
import datetime as dt
import ipaddress
import os
import re
import textwrap
import time
import zoneinfo
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..engine.packed import full_conn
from ..errors import PcapResetError
from ..interpret.evidence import retry_burst
from ..interpret.findings import conn_findings
from ..track.flows import Conn
from .conf import normalize_addr

WIDTH = 80
#: how far (s) a wire event may lie outside the logged second and still match
MATCH_WINDOW_S = 1.0
#: an access.log request may end this long after its upstream error line
ACCESS_WINDOW_S = 120.0
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
    kind: str  # refused | reset | timeout | premature | no_live | protocol | connect | other
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


def resolve_tz(name: str | None) -> dt.tzinfo | None:
    """--nginx-tz: "UTC", "Europe/Berlin", "+02:00"; None/"" -> None (local zone)."""
    if not name:
        return None
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        off = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return dt.timezone(-off if m.group(1) == "-" else off)
    if name.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise NginxLogError(f"--nginx-tz {name!r}: unknown time zone") from e


def read_logs(paths: Sequence[str | os.PathLike], tz: dt.tzinfo | None = None) -> LogSet:
    """Read error.log and access.log files (told apart by their line format)."""
    out = LogSet()
    for p in paths:
        path = os.fspath(p)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError as e:
            raise NginxLogError(f"{path}: {e.strerror or e}") from None
        out.files.append(path)
        _read_lines(lines, path, tz, out)
    return out


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


# ------------------------------------------------------------ wire events
@dataclass
class WireEvent:
    kind: str  # "reset" | "finding"
    cause: str
    sender: str | None
    client: str
    server: str
    ts: float  # the reset's / finding's time, as reported
    match_ts: float  # when nginx noticed (e.g. its own FIN before its RST)
    target: str | None  # request target outstanding on the wire, if seen

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "cause": self.cause,
            "client": self.client,
            "server": self.server,
            "ts": round(self.ts, 6),
        }


def _target(c: Conn, at: float | None = None) -> str | None:
    """The request outstanding at ``at`` (or the last one) on connection ``c``."""
    exs = [x for x in c.exchanges if x.req_ts is not None and (at is None or x.req_ts <= at)]
    return exs[-1].target if exs else None


def _gave_up_ts(c: Conn, rst_ts: float) -> float:
    """For nginx's own RST: its FIN before the RST with a request outstanding (a timeout)."""
    fin = c.c.fin_ts
    if fin is None or fin >= rst_ts:
        return rst_ts
    for x in c.exchanges:
        if (
            x.req_ts is not None
            and x.req_ts < fin
            and (x.resp_end_ts is None or x.resp_end_ts > fin)
        ):
            return fin
    return rst_ts


_FINDING_TS = {
    "premature_close": lambda c: c.s.fin_ts,
    "upstream_timeout": lambda c: c.c.fin_ts,
    "mtu_blackhole": lambda c: c.c.fin_ts or c.end,
    "backlog_overflow": lambda c: c.c.fin_ts or c.end,
}


def wire_events(rep) -> list[WireEvent]:
    """Resets and per-connection findings of a Report, with the time nginx saw them."""
    out = []
    for r in rep.resets:
        c, ev, v = full_conn(r.conn), r.event, r.verdict
        match_ts = _gave_up_ts(c, ev.ts) if v.sender == "client" else ev.ts
        tgt = ev.exchange.target if ev.exchange is not None else _target(c, ev.ts)
        out.append(
            WireEvent(
                "reset", v.cause, v.sender, rep.ep(c.client), rep.ep(c.server), ev.ts, match_ts, tgt
            )
        )
    for c, _j in rep.result.each_conn():
        for cause, _msg in conn_findings(c, lambda x: retry_burst(x, rep.ctx)):
            get = _FINDING_TS.get(cause)
            ts = get(c) if get else None
            if ts is None:
                continue
            out.append(
                WireEvent(
                    "finding",
                    cause,
                    None,
                    rep.ep(c.client),
                    rep.ep(c.server),
                    ts,
                    ts,
                    _target(c, ts),
                )
            )
    return out


# --------------------------------------------------------------- matching
#: line kind -> {(event kind, cause or "*"): preference cost}; sender filter below
COMPAT: dict[str, dict[tuple[str, str], float]] = {
    "refused": {("reset", "connection_refused"): 0.0},
    "reset": {
        ("reset", "keepalive_race"): 0.0,
        ("reset", "backend_restart"): 0.0,
        ("reset", "backend_crash"): 0.0,
        ("reset", "abortive_close"): 0.0,
        ("reset", "middlebox"): 0.0,
        ("reset", "backlog_overflow"): 0.0,
        ("reset", "unknown"): 0.1,
    },
    "timeout": {
        ("finding", "mtu_blackhole"): 0.0,  # the root cause, before its timeout
        ("finding", "upstream_timeout"): 0.02,
        ("finding", "backlog_overflow"): 0.05,
        ("reset", "mtu_blackhole"): 0.0,
        ("reset", "client_abort"): 0.1,  # nginx closed on timeout, RST for late data
    },
    "premature": {
        ("finding", "premature_close"): 0.0,
        ("reset", "keepalive_race"): 0.0,  # nginx read the FIN before the RST
        ("reset", "backend_restart"): 0.0,  # the same, the FIN from a shutdown
        ("reset", "backend_crash"): 0.1,
        ("reset", "unknown"): 0.2,
    },
    "connect": {("reset", "connection_refused"): 0.1, ("reset", "middlebox"): 0.1},
}
_SERVER_SIDE = {"server", "middlebox", "unknown", None}


def _edge_cost(e: ErrorLine, w: WireEvent) -> float | None:
    pref = COMPAT.get(e.kind, {}).get((w.kind, w.cause))
    if pref is None:
        return None
    if e.kind != "timeout" and w.sender not in _SERVER_SIDE:
        return None
    # nginx logs whole seconds: the event lies in [ts, ts + 1) of the logged second
    lo, hi = e.ts, e.ts + 1.0
    dist = max(lo - w.match_ts, w.match_ts - hi, 0.0)
    if dist > MATCH_WINDOW_S:
        return None
    cost = dist + pref
    up = e.upstream or ""
    if up[:1].isdigit() or up.startswith("["):
        if up != w.server:
            return None
    else:
        cost += 0.3  # group name / unix socket / nothing: any server
    if e.upstream_uri and w.target:
        if not (e.upstream_uri.startswith(w.target) or w.target.startswith(e.upstream_uri)):
            return None
    else:
        cost += 0.2
    return cost


def match(lines: Sequence[ErrorLine], events: Sequence[WireEvent]) -> dict[int, int]:
    """One-to-one line -> event assignment: cheapest edges first, then augmenting
    paths (Kuhn) so that as many lines as possible are explained."""
    order = sorted(range(len(events)), key=lambda j: events[j].match_ts)
    times = [events[j].match_ts for j in order]
    adj: dict[int, list[tuple[float, int]]] = {}
    for i, e in enumerate(lines):
        lo = bisect.bisect_left(times, e.ts - MATCH_WINDOW_S)
        hi = bisect.bisect_right(times, e.ts + 1.0 + MATCH_WINDOW_S)
        edges = []
        for k in range(lo, hi):
            j = order[k]
            cost = _edge_cost(e, events[j])
            if cost is not None:
                edges.append((cost, j))
        if edges:
            adj[i] = sorted(edges)
    line_of: dict[int, int] = {}  # event -> line
    event_of: dict[int, int] = {}  # line -> event
    for _cost, i, j in sorted((c, i, j) for i, es in adj.items() for c, j in es):
        if i not in event_of and j not in line_of:
            event_of[i], line_of[j] = j, i
    for i in adj:
        if i not in event_of:
            _augment(i, adj, event_of, line_of, set(), [2000])
    return event_of


def _augment(
    i: int,
    adj: dict[int, list[tuple[float, int]]],
    event_of: dict[int, int],
    line_of: dict[int, int],
    seen: set[int],
    budget: list[int],
) -> bool:
    for _cost, j in adj[i]:
        if j in seen or budget[0] <= 0:
            continue
        seen.add(j)
        budget[0] -= 1
        k = line_of.get(j)
        if k is None or _augment(k, adj, event_of, line_of, seen, budget):
            event_of[i], line_of[j] = j, i
            return True
    return False


# ---------------------------------------------------------------- section
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


def correlate(rep, logs: LogSet) -> tuple[dict, list[str]]:
    """The ``nginx_log`` JSON section and its text-report lines."""
    first, last = rep.result.first_ts, rep.result.last_ts
    if first is None or last is None:
        inside: list[ErrorLine] = []
    else:
        inside = [e for e in logs.errors if e.ts + 1.0 >= first - 1.0 and e.ts <= last + 1.0]
    events = wire_events(rep)
    assigned = match(inside, events)
    _tie_access(logs.access, inside)
    errors = []
    for i, e in enumerate(inside):
        d = e.as_dict()
        j = assigned.get(i)
        d["explained_by"] = events[j].as_dict() if j is not None else None
        errors.append(d)
    section = {
        "files": logs.files,
        "time_zone": logs.time_zone,
        "upstream_errors": len(inside),
        "explained": len(assigned),
        "outside_capture": len(logs.errors) - len(inside),
        "errors": errors,
    }
    if "server" in rep.ctx.vantage.as_dict().get("where", ""):
        section["vantage_server_side"] = True
    hint = _tz_hint(logs.errors, inside, first, last)
    if hint:
        section["warning"] = hint
    if logs.access:
        section["access_log"] = _access_summary(logs, inside, assigned, first, last)
    return section, _text(section, inside, assigned)


def _tie_access(access: list[AccessLine], lines: list[ErrorLine]) -> None:
    """Each failed upstream try in access.log -> its error.log line (same upstream,
    same request, error line at or before the request's end)."""
    free = set(range(len(lines)))
    for a in sorted(access, key=lambda a: a.ts):
        if not a.failed_attempts:
            continue
        best = None
        for i in free:
            e = lines[i]
            if e.request != a.request or not (a.ts - ACCESS_WINDOW_S <= e.ts <= a.ts + 1.0):
                continue
            if e.upstream and e.upstream not in {x for x, _ in a.failed_attempts}:
                continue
            if best is None or abs(a.ts - e.ts) < abs(a.ts - lines[best].ts):
                best = i
        if best is not None:
            free.discard(best)
            a.error_line = lines[best]


def _access_summary(logs: LogSet, inside, assigned, first, last) -> dict:
    explained_lines = {id(inside[i]) for i in assigned}
    span = [a for a in logs.access if first is not None and first - 1 <= a.ts <= last + 2]
    bad = [a for a in span if a.status in (502, 504)]
    retried = [a for a in span if a.failed_attempts and a.status not in (502, 504)]
    return {
        "requests": len(span),
        "has_upstream_fields": logs.access_has_upstream,
        "status_502": sum(a.status == 502 for a in bad),
        "status_504": sum(a.status == 504 for a in bad),
        "bad_gateway_explained": sum(
            1 for a in bad if a.error_line is not None and id(a.error_line) in explained_lines
        ),
        "failed_tries_retried": len(retried),
    }


def _fmt_offset(off: int) -> str:
    return f"{'+' if off >= 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"


def _tz_hint(all_lines: list[ErrorLine], inside, first, last) -> str | None:
    """If no line falls inside the capture but a whole-hour shift would, say so."""
    if inside or not all_lines or first is None:
        return None
    for hours in sorted(range(-14, 15), key=abs):
        shift = hours * 3600
        hit = next((e for e in all_lines if first - 1 <= e.ts - shift <= last + 1), None)
        if hit is not None and hit.local is not None:
            used = int(hit.local.replace(tzinfo=dt.UTC).timestamp() - hit.ts)
            return (
                "no error.log line falls inside the capture's time span; read with "
                f"--nginx-tz {_fmt_offset(used + shift)} they would (error.log times carry "
                "no zone)"
            )
    return "no error.log line falls inside the capture's time span"


# ------------------------------------------------------------------- text
def _hms(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def _wrap(text: str, first: str = "  ", rest: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest) or [first]


def _short(message: str) -> str:
    """Short form: "recv() failed (104: ...) while ..." -> "recv() failed (104)"."""
    head = message.split(" while ", 1)[0]
    return _ERRNO_RE.sub(lambda m: f"({m.group(1)})", head)


def _text(section: dict, inside: list[ErrorLine], assigned: dict[int, int]) -> list[str]:
    n, m = section["explained"], section["upstream_errors"]
    names = ", ".join(os.path.basename(f) for f in section["files"])
    out = _wrap(f"nginx log ({names}; times read as {section['time_zone']})", "", "  ")
    out.append(f"  {n} of {m} upstream errors explained by the capture")
    ties = Counter(
        (_short(e["message"]), e["explained_by"]["kind"], e["explained_by"]["cause"])
        for e in section["errors"]
        if e["explained_by"]
    )
    for (msg, kind, cause), k in ties.most_common():
        out += _wrap(f"{k:5}  {msg} <- {cause} {kind}", "  ", "         ")
    acc = section.get("access_log")
    if acc:
        bad = acc["status_502"] + acc["status_504"]
        out.append(
            f"  access.log: {acc['bad_gateway_explained']} of {bad} 502/504 responses "
            f"explained ({acc['status_502']} x 502, {acc['status_504']} x 504)"
        )
        if acc["failed_tries_retried"]:
            out += _wrap(
                f"{acc['failed_tries_retried']} request(s) got a 502/504 from a first try "
                "and were answered by a retry (proxy_next_upstream)",
                "  access.log: ",
                "    ",
            )
    if section["outside_capture"]:
        out.append(f"  {section['outside_capture']} upstream error line(s) outside the capture")
    if section.get("warning"):
        out += _wrap(section["warning"], "  warning: ", "    ")
    missing = [e for i, e in enumerate(inside) if i not in assigned]
    if any(e.kind == "reset" for e in missing) and section.get("vantage_server_side"):
        out += _wrap(
            "nginx got resets this capture on the backend's host does not show: a device "
            "in between (firewall, NAT/conntrack, load balancer) may have sent them; "
            "capture on nginx's host too",
            "  note: ",
            "    ",
        )
    if missing:
        out.append("  unexplained (time UTC, line, upstream, message):")
        for e in missing[:20]:
            head = f"    {_hms(e.ts)} {e.line:5} {e.upstream or '-'} "
            room = max(WIDTH - len(head), 20)
            msg = _short(e.message)
            out.append(head + (msg if len(msg) <= room else msg[: room - 3] + "..."))
        if len(missing) > 20:
            out.append(f"    ... and {len(missing) - 20} more (see --format json)")
    return out


def attach(rep, logs: LogSet) -> None:
    """Add the ``nginx_log`` section (and its text lines) to a Report."""
    section, lines = correlate(rep, logs)
    rep.extra["nginx_log"] = section
    text = rep.extra.setdefault("_text_lines", [])
    text.extend(([""] if text else []) + lines)
