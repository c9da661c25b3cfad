"""match: nginx's upstream error lines -> the resets and findings on the wire.

The candidates are the capture's resets and the connections with a finding,
each with the time nginx noticed it (:mod:`pcapreset.nginx.wire`); a line and a
candidate can be tied when the time, the upstream address, the kind of failure
(:data:`COMPAT`) and, where the capture shows it, the request agree. The
assignment is one to one and explains as many lines as possible. A line left
over gets a sentence saying what the capture shows instead
(:func:`unexplained_reason`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..track.conn import Conn
from .wire import MATCH_WINDOW_S, WireEvent, idle_from

if TYPE_CHECKING:
    from .parse import ErrorLine


#: line kind -> {(event kind, cause): preference cost}; sender filters in _edge_cost
COMPAT: dict[str, dict[tuple[str, str], float]] = {
    "refused": {("reset", "connection_refused"): 0.0},
    "reset": {
        ("reset", "keepalive_race"): 0.0,
        ("reset", "backend_crash"): 0.0,
        ("reset", "backend_restart"): 0.0,
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
        ("reset", "abortive_close"): 0.15,  # ... and nothing came after (sender client)
        ("reset", "unknown"): 0.15,
    },
    "premature": {
        ("finding", "premature_close"): 0.0,
        ("finding", "keepalive_race"): 0.0,  # FIN crossed the request, no RST
        ("reset", "keepalive_race"): 0.0,  # nginx read the FIN before the RST
        ("reset", "backend_restart"): 0.05,
        ("reset", "backend_crash"): 0.1,
        ("reset", "unknown"): 0.2,
    },
    # "upstream sent too big header" / "invalid header": nginx rejects the answer
    # and closes with it unread, so its kernel resets the connection
    "protocol": {("reset", "client_abort"): 0.1},
    # connect() failed: 111 is "refused"; 104 (reset right after the handshake,
    # an accept queue that overflowed with tcp_abort_on_overflow=1) and the rest
    "connect": {
        ("reset", "backlog_overflow"): 0.0,
        ("reset", "connection_refused"): 0.1,
        ("reset", "middlebox"): 0.1,
        ("reset", "unknown"): 0.15,
    },
}
_SERVER_SIDE = {"server", "middlebox", "unknown", None}
#: idle spells looked at per reset line (those ending soonest after it)
SPAN_SCAN_MAX = 64
#: preference cost of tying a reset line to a device's later reset of a
#: connection that lay idle at the line's time (nginx's reset unseen here)
UNSEEN_COST = 0.6


def _sender_fits(e: ErrorLine, w: WireEvent) -> bool:
    if e.kind == "protocol":  # nginx's own RST of the answer it rejected
        return w.sender == "client"
    if e.kind == "timeout":  # nginx's own RST after it gave up, or a finding
        return w.kind == "finding" or w.sender == "client" or w.cause == "mtu_blackhole"
    if e.kind == "connect" and e.errno == 104:  # reset during / right after the handshake
        return w.sender in _SERVER_SIDE and w.at_handshake
    return w.sender in _SERVER_SIDE


def _time_cost(e: ErrorLine, w: WireEvent) -> tuple[float, str] | None:
    """Distance of the event from the logged second, or the unseen-reset tie."""
    # nginx logs whole seconds: the event lies in [ts, ts + 1) of the logged second
    lo, hi = e.ts, e.ts + 1.0
    dist = max(lo - w.match_ts, w.match_ts - hi, 0.0)
    if dist <= MATCH_WINDOW_S:
        return dist, "time"
    span = w.unseen_span
    if e.kind == "reset" and span is not None and span[0] < hi and lo <= span[1]:
        return UNSEEN_COST, "idle_then_reset"
    wait = w.waited_span
    if e.kind == "timeout" and wait is not None and wait[0] < hi and lo <= wait[1]:
        return UNSEEN_COST, "waited_unseen"
    return None


def _edge_cost(e: ErrorLine, w: WireEvent) -> tuple[float, str] | None:
    pref = COMPAT.get(e.kind, {}).get((w.kind, w.cause))
    if pref is None or not _sender_fits(e, w):
        return None
    if w.retry is not None and e.kind != "reset":
        return None  # nginx's retry after a reset it got
    tc = _time_cost(e, w)
    if tc is None:
        return None
    cost, how = tc[0] + pref, tc[1]
    up = e.upstream or ""
    if up[:1].isdigit() or up.startswith("["):
        if up != w.server:
            return None
    else:
        cost += 0.3  # group name / unix socket / nothing: any server
    # an unseen reset: the request on the wire is an earlier one, not the line's
    if e.upstream_uri and w.target and how != "idle_then_reset":
        if not (e.upstream_uri.startswith(w.target) or w.target.startswith(e.upstream_uri)):
            return None
        if e.upstream_uri != w.target:
            if w.target_whole:
                return None  # a whole request line that names another target
            cost += 0.05  # a prefix only (query string cut by the capture's snaplen)
        elif how == "time":
            how = "time+request"
    else:
        cost += 0.2
    if w.retry is not None:  # nginx retried the logged request after the unseen reset
        how = "idle_then_retried"
    return cost, how


def match(lines: Sequence[ErrorLine], events: Sequence[WireEvent]) -> dict[int, int]:
    """One-to-one line -> event assignment: cheapest edges first, then augmenting
    paths (Kuhn) so that as many lines as possible are explained. Sets each tied
    event's ``how``."""
    order = sorted(range(len(events)), key=lambda j: events[j].match_ts)
    times = [events[j].match_ts for j in order]
    spans = sorted(
        (j for j in range(len(events)) if events[j].unseen_span is not None),
        key=lambda j: events[j].unseen_span[1],  # type: ignore[index]
    )
    span_ends = [events[j].unseen_span[1] for j in spans]  # type: ignore[index]
    waits = sorted(
        (j for j in range(len(events)) if events[j].waited_span is not None),
        key=lambda j: events[j].waited_span[1],  # type: ignore[index]
    )
    wait_ends = [events[j].waited_span[1] for j in waits]  # type: ignore[index]
    adj: dict[int, list[tuple[float, int]]] = {}
    hows: dict[tuple[int, int], str] = {}
    for i, e in enumerate(lines):
        lo = bisect.bisect_left(times, e.ts - MATCH_WINDOW_S)
        hi = bisect.bisect_right(times, e.ts + 1.0 + MATCH_WINDOW_S)
        near = [order[k] for k in range(lo, hi)]
        seen = set(near)
        far = []
        if e.kind == "reset":  # idle spells ending at or after the line, nearest first
            k = bisect.bisect_left(span_ends, e.ts)
            far = [j for j in spans[k : k + SPAN_SCAN_MAX] if j not in seen]
        elif e.kind == "timeout":  # waits ending at or after the line, nearest first
            k = bisect.bisect_left(wait_ends, e.ts)
            far = [j for j in waits[k : k + SPAN_SCAN_MAX] if j not in seen]
        edges = []
        for j in near + far:
            got = _edge_cost(e, events[j])
            if got is not None:
                edges.append((got[0], j))
                hows[i, j] = got[1]
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
    for i, j in event_of.items():
        events[j].how = hows[i, j]
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


# ------------------------------------------------------------ left over
#: error.log messages about a configuration or permission matter the wire does
#: not show: (substring of the message, what it means and what to change);
#: first match wins
CONFIG_MATTERS = (
    (
        "upstream sent too big header",
        "a configuration matter the wire does not show: the backend's response header "
        "did not fit nginx's header buffer; raise fastcgi_buffer_size (fastcgi_pass), "
        "uwsgi_buffer_size (uwsgi_pass) or proxy_buffer_size (proxy_pass), e.g. to 16k or "
        "32k, or make the backend send fewer or shorter headers (cookies)",
    ),
    (
        "(13: Permission denied) while connecting to upstream",
        "a permission matter the wire does not show: the kernel refused nginx's connect "
        "before any packet left (SELinux: `setsebool -P httpd_can_network_connect 1`; "
        "for a unix socket, its file permissions and the nginx user)",
    ),
    (
        "no live upstreams",
        "a configuration matter the wire does not show: every server of the upstream group "
        "was marked down after earlier failures (max_fails / fail_timeout), so nginx tried "
        "none; look at the failures before it, and add a second server or a `backup`",
    ),
)

_NO_TRACE = {
    "no_live": "nginx tried no connection (every server of the group was marked down)",
    "denied": "the kernel refused nginx's connect before any packet was sent",
    "other": "the message names no failure that leaves a TCP trace",
}
_WHAT = {
    "refused": "refused connect",
    "reset": "reset",
    "timeout": "timeout (nginx's close of a waiting request)",
    "premature": "backend close",
    "connect": "reset of a connect",
    "protocol": "reset by nginx of the answer it rejected",
}


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


#: connections looked at (latest started first) for an idle one at a line's time
IDLE_SCAN_MAX = 2000


class Leftovers:
    """Says why a line stays unexplained, from indexes built once: events by
    time, connections by server and start (scans are bounded)."""

    def __init__(self, events: Sequence[WireEvent], used: set[int], conns) -> None:
        """``used``: indices of events tied to lines; ``conns``: (server "ip:port",
        client "ip:port", connection) for every connection in the capture."""
        self.events, self.used = events, used
        self.order = sorted(range(len(events)), key=lambda j: events[j].match_ts)
        self.times = [events[j].match_ts for j in self.order]
        self.by_server: dict[str | None, list[tuple[float, str, Conn]]] = {}
        for srv, cli, c in conns:
            self.by_server.setdefault(srv, []).append((c.start, cli, c))
            self.by_server.setdefault(None, []).append((c.start, cli, c))
        for v in self.by_server.values():
            v.sort(key=lambda x: x[0])

    def reason(self, e: ErrorLine) -> tuple[str, str]:
        """(what this line's capture shows, if anything particular; the general reason)."""
        for needle, why in CONFIG_MATTERS:
            if needle in e.message:
                return "", why
        if e.kind in _NO_TRACE:
            return "", _NO_TRACE[e.kind] + ": nothing on the wire to tie it to"
        up = e.upstream if e.upstream and e.upstream[:1] in "0123456789[" else None
        mine = self.by_server.get(up, [])
        if not mine:
            return "", f"the capture holds no connection to {up or 'any upstream'}"
        what = _WHAT.get(e.kind, "event")
        lo, hi = e.ts - MATCH_WINDOW_S, e.ts + 1.0 + MATCH_WINDOW_S
        taken = [
            j
            for j in self.order[
                bisect.bisect_left(self.times, lo) : bisect.bisect_right(self.times, hi)
            ]
            if (self.events[j].kind, self.events[j].cause) in COMPAT.get(e.kind, {})
            and (up is None or self.events[j].server == up)
        ]
        if taken and all(j in self.used for j in taken):
            return "", f"the {what}(s) at that second are tied to other lines"
        idle = self._idle_conn(e, mine, lo, hi) if e.kind in _IDLE_KINDS else None
        if idle is not None:
            since, cli = idle
            return (
                f"{cli} idle here since {_clock(since)}",
                "a connection to that upstream lay idle then and this capture shows no reset "
                "or close of it: nginx's request and the answer it got did not pass this "
                "capture point (a device in between, such as a conntrack or NAT REJECT, "
                "answers nginx only)",
            )
        where = f" to {up}" if up else ""
        return "", f"no {what}{where} on the wire within 1 s of the logged second"

    @staticmethod
    def _idle_conn(e: ErrorLine, mine, lo: float, hi: float) -> tuple[float, str] | None:
        """The connection open and idle at the line's time that went idle last."""
        best = None
        k = bisect.bisect_left(mine, lo, key=lambda x: x[0])  # started before lo
        for _start, cli, c in reversed(mine[max(0, k - IDLE_SCAN_MAX) : k]):
            ends = [t for t in (c.c.fin_ts, c.s.fin_ts) if t is not None]
            ends += [ev.ts for ev in c.rst_events]
            if ends and min(ends) < e.ts:
                continue  # closed before the line
            since = idle_from(c, hi)
            if since is not None and since < lo and (best is None or since > best[0]):
                best = (since, cli)
        return best


_IDLE_KINDS = ("reset", "premature", "timeout")
