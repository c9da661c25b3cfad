"""wire: the resets and findings of a Report as nginx noticed them on the wire.

Each :class:`WireEvent` is a candidate for an nginx error line to be tied to
(:mod:`pcapreset.nginx.match`): the capture's resets and the connections with a
finding, each with the time nginx noticed it (e.g. its own FIN before its RST).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engine.packed import full_conn
from ..interpret.advice import NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
from ..interpret.context import retry_burst
from ..interpret.findings import conn_findings
from ..track.conn import Conn

if TYPE_CHECKING:
    from .parse import ErrorLine


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
    #: the request's head is whole in the capture: its target is not cut short
    target_whole: bool = False
    #: completed exchanges on the connection before the event (resets)
    requests_before: int = 0
    #: the event came within HANDSHAKE_S of the connection's first packet
    at_handshake: bool = False
    #: (from, to): the connection lay idle in between and the reset at ``to``
    #: came from a device in the path, which may have reset it towards nginx
    #: earlier, out of this capture's sight
    unseen_span: tuple[float, float] | None = None
    #: (from, to): a connection the backend never accepted, nginx's request waiting in
    #: between and nginx's close not on the wire (queued behind its unacknowledged data):
    #: nginx gave up somewhere in this span, out of the capture's sight
    waited_span: tuple[float, float] | None = None
    #: nginx's retry of the request on a new connection (its client "ip:port"):
    #: the event is the unseen reset of the idle connection ``client`` it reused
    retry: str | None = None
    how: str = ""  # set by the matcher: how the line was tied

    def as_dict(self) -> dict:
        d = {
            "kind": self.kind,
            "cause": self.cause,
            "client": self.client,
            "server": self.server,
            "ts": round(self.ts, 6),
        }
        if self.how:
            d["how"] = self.how
        if self.retry:
            d["retry"] = self.retry
        return d


#: how far (s) a wire event may lie outside the logged second and still match
MATCH_WINDOW_S = 1.0
#: a reset this soon after the connection's first packet answers the handshake
HANDSHAKE_S = 1.0
#: a device's later reset ties to an earlier line only after this much idle time
UNSEEN_IDLE_S = 1.0


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


def _nginx_closed_ts(c: Conn) -> float | None:
    """When nginx closed the connection: its FIN or its first RST, whichever came first."""
    rst = [ev.ts for ev in c.rst_events if ev.from_client]
    times = [t for t in (c.c.fin_ts, min(rst) if rst else None) if t is not None]
    return min(times) if times else None


def idle_from(c: Conn, before: float) -> float | None:
    """The end of the last exchange before ``before`` (the connection was idle since)."""
    last = None
    for x in c.exchanges:
        if x.req_ts is None or x.req_ts >= before:
            continue
        t = max(v for v in (x.req_ts, x.resp_end_ts, x.last_resp_ts) if v is not None)
        last = t if last is None else max(last, t)
    return last


_FINDING_TS = {
    "premature_close": lambda c: c.s.fin_ts,
    "keepalive_race": lambda c: c.s.fin_ts,  # nginx reads the backend's FIN
    "upstream_timeout": lambda c: c.c.fin_ts,
    "mtu_blackhole": lambda c: c.c.fin_ts or c.end,
    # nginx gave up on a connection the backend never accepted: its FIN or RST
    "backlog_overflow": lambda c: _nginx_closed_ts(c) or c.end,
}


def _waited_span(c: Conn, cause: str) -> tuple[float, float] | None:
    """For a backlog_overflow finding without nginx's FIN or RST: from the request nginx
    sent to the connection's last packet (see WireEvent.waited_span)."""
    if cause != "backlog_overflow" or _nginx_closed_ts(c) is not None:
        return None
    first = c.c.head_ts
    return (first, c.end) if first is not None else None


def _unseen_span(c: Conn, ev, sender: str | None) -> tuple[float, float] | None:
    """A device's reset after an idle spell: the span in which it may have reset
    nginx's side already (conntrack / NAT state gone: nginx's request rejected
    towards nginx only, the backend's later packet rejected towards the backend)."""
    if sender not in ("middlebox", "unknown"):
        return None
    start = idle_from(c, ev.ts)
    if start is None or ev.ts - start < UNSEEN_IDLE_S:
        return None
    return (start, ev.ts)


def wire_events(rep) -> list[WireEvent]:
    """Resets and per-connection findings of a Report, with the time nginx saw them."""
    out = []
    # on nginx's own host every reset nginx got is in the capture: no unseen ones
    on_nginx_host = rep.ctx.vantage.where == "client host (nginx side)"
    for r in rep.resets:
        c, ev, v = full_conn(r.conn), r.event, r.verdict
        match_ts = _gave_up_ts(c, ev.ts) if v.sender == "client" else ev.ts
        tgt = ev.exchange.target if ev.exchange is not None else _target(c, ev.ts)
        out.append(
            WireEvent(
                "reset",
                v.cause,
                v.sender,
                rep.ep(c.client),
                rep.ep(c.server),
                ev.ts,
                match_ts,
                tgt,
                requests_before=ev.requests_before,
                at_handshake=ev.requests_before == 0 and ev.ts - c.start <= HANDSHAKE_S,
                unseen_span=None if on_nginx_host else _unseen_span(c, ev, v.sender),
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
                    waited_span=_waited_span(c, cause),
                )
            )
    return out


#: connections looked at (latest started first) for the idle one nginx reused
REUSED_SCAN_MAX = 256


def _reused_idle(
    group: list[tuple[float, Conn]], retry: Conn, longest: float, taken: set[int]
) -> Conn | None:
    """The connection nginx most likely reused before ``retry``: same nginx address,
    same upstream, one exchange or more, no FIN or RST, its last packet here at
    least UNSEEN_IDLE_S and at most ``longest`` s (nginx's upstream keepalive_timeout)
    before the retry, and nothing of it afterwards. Of several, the one idle since
    latest: nginx's keep-alive cache hands out the connection it saved last
    (ngx_http_upstream_keepalive_module.c: saved at the head, searched from the head)."""
    best = None
    k = bisect.bisect_left(group, retry.start, key=lambda x: x[0])
    for _start, c in reversed(group[max(0, k - REUSED_SCAN_MAX) : k]):
        if c is retry or id(c) in taken or c.client >> 16 != retry.client >> 16:
            continue
        if c.rst_events or c.c.fin_ts is not None or c.s.fin_ts is not None:
            continue
        if not any(x.complete for x in c.exchanges):
            continue
        if not UNSEEN_IDLE_S <= retry.start - c.end <= longest:
            continue
        if best is None or c.end > best.end:
            best = c
    return best


def retry_events(rep, lines: Sequence[ErrorLine], conns) -> list[WireEvent]:
    """Resets nginx got that this capture point never saw, shown by nginx's retry.

    When a reused keep-alive connection fails, nginx grants the request one more
    try (ngx_http_upstream.c, ``ngx_http_upstream_next``: ``u->peer.cached`` and
    an error -> ``u->peer.tries++``) and sends it on a new connection at once. So
    for each reset line (``lines``) with an upstream address, a new connection to
    that upstream opened within the window of the logged second (``retry``) and
    carrying a request, paired with the idle connection nginx had reused
    (:func:`_reused_idle`: nginx's request on it never reached this point, and
    neither did the reset nginx got, so a device in between sent that reset), is
    an event at the retry's first packet. ``conns``: (server "ip:port", client
    "ip:port", connection) for every connection. Nothing on nginx's own host,
    where every reset nginx got is on the wire."""
    if rep.ctx.vantage.where == "client host (nginx side)":
        return []
    wanted = {e.upstream for e in lines if e.kind == "reset" and e.upstream}
    by_server: dict[str, list[tuple[float, Conn]]] = {}
    for srv, _cli, c in conns:
        if srv in wanted:
            by_server.setdefault(srv, []).append((c.start, c))
    for group in by_server.values():
        group.sort(key=lambda x: x[0])
    retries: dict[int, tuple[str, Conn]] = {}
    for e in lines:
        if e.kind != "reset":
            continue
        group = by_server.get(e.upstream or "", [])
        lo = bisect.bisect_left(group, e.ts - MATCH_WINDOW_S, key=lambda x: x[0])
        hi = bisect.bisect_right(group, e.ts + 1.0 + MATCH_WINDOW_S, key=lambda x: x[0])
        for _start, c in group[lo:hi]:
            if c.c.syn and c.exchanges:
                retries[id(c)] = (e.upstream or "", c)
    longest = rep.nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
    out: list[WireEvent] = []
    reused: set[int] = set()
    for srv, r in sorted(retries.values(), key=lambda x: x[1].start):
        c = _reused_idle(by_server[srv], r, longest, reused)
        if c is None:
            continue
        reused.add(id(c))
        out.append(
            WireEvent(
                "reset",
                "middlebox",
                "middlebox",
                rep.ep(c.client),
                srv,
                r.start,
                r.start,
                r.exchanges[0].target,
                target_whole=r.exchanges[0].req_len is not None,
                retry=rep.ep(r.client),
            )
        )
    return out
