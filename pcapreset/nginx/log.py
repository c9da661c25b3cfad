"""log: nginx error.log / access.log lines about an upstream -> the wire.

Ties each upstream error line of nginx's error.log (and an access.log with
``$upstream_addr $upstream_status``; both read by :mod:`.parse`), one to one,
to the reset or finding on the wire that produced it: same second (±1 s,
nginx logs whole seconds), same upstream address, a compatible kind of
failure, and the same request URI where the capture shows it. The URI in
``upstream:`` is ``u->uri``, the request target nginx wrote on the upstream
connection, so it can be compared with the request seen on the wire.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.packed import full_conn
from ..interpret.context import retry_burst
from ..interpret.findings import conn_findings
from ..textsafe import utc
from ..track.conn import Conn
from .parse import _ERRNO_RE, MAX_LINE, AccessLine, ErrorLine, LogSet, _fmt_offset

WIDTH = 80
#: how far (s) a wire event may lie outside the logged second and still match
MATCH_WINDOW_S = 1.0
#: an access.log request may end this long after its upstream error line
ACCESS_WINDOW_S = 120.0


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
    if logs.long_lines:
        skipped = f"{logs.long_lines} line(s) longer than {MAX_LINE} characters skipped"
        hint = f"{hint}; {skipped}" if hint else skipped
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
    return utc("%H:%M:%S", ts)


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
