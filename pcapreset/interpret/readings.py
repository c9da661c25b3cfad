"""readings: what one connection shows by itself, which both the per-capture
context and a reset's facts read: its round-trip time, whether a RST refused
its connect or only followed up an earlier one, whether the server's FIN
crossed the last request, the idle gap before the server closed it.
"""

from __future__ import annotations

from ..track.conn import Conn, RstEvent
from .thresholds import MIN_IDLE_CLOSE_S, RACE_SLACK_S, RIGHT_AFTER_S


def is_refused(conn: Conn, ev: RstEvent) -> bool:
    """The server answered the SYN with RST (RST,ACK from a kernel; a bare RST
    from some stacks and crafted traffic): no SYN-ACK, no data."""
    return (
        not ev.from_client
        and conn.c.syn > 0
        and conn.s.synack == 0
        and conn.s.data_pkts == 0
        and conn.c.data_pkts == 0
    )


def conn_rtt(conn: Conn) -> float | None:
    """SYN -> the client's handshake ACK: one round trip from any vantage point."""
    if conn.syn_ts is not None and conn.hs_ts is not None and conn.hs_ts > conn.syn_ts:
        return conn.hs_ts - conn.syn_ts
    return None


def fin_crossed(conn: Conn, rtt_s: float) -> bool:
    """The server's FIN and the client's last request crossed on the wire.

    Either the request came after the FIN (backend-side view), or the FIN
    arrived less than one round trip after the request left (nginx-side view):
    the server cannot have seen the request when it decided to close.
    """
    fin = conn.s.fin_ts
    if fin is None or not conn.exchanges:
        return False
    ex = conn.exchanges[-1]
    if ex.req_ts is None or ex.resp_ts is not None:
        return False
    return ex.req_ts >= fin or fin - ex.req_ts <= rtt_s + RACE_SLACK_S


def _idle_close_gap(c: Conn, rtt_s: float) -> float | None:
    """Last complete response -> server FIN, on a connection the server closed idle."""
    fin = c.s.fin_ts
    if fin is None or not c.exchanges or (c.c.fin_ts is not None and c.c.fin_ts < fin):
        return None
    done = [e.resp_end_ts for e in c.exchanges if e.resp_end_ts is not None and e.resp_end_ts < fin]
    if not done:
        return None
    for e in c.exchanges:
        waiting = e.req_ts is not None and e.req_ts < fin and not e.complete
        if waiting and not (e is c.exchanges[-1] and fin_crossed(c, rtt_s)):
            return None  # the server closed with a request in hand: not an idle close
    return fin - max(done)


def is_followup(conn: Conn, ev: RstEvent, rtt_s: float) -> bool:
    """A RST that only answers segments already in flight when the previous one left.

    Same sender (and TTL) as the previous RST event of the connection, no data
    from that sender since, and within one round trip: one reset, not two (the flow
    tracker splits events when the peer's in-flight data lands in between).
    """
    if ev.index == 0 or ev.index > len(conn.rst_events):
        return False
    prev = conn.rst_events[ev.index - 1]
    return (
        prev.from_client == ev.from_client
        and prev.packets[0].ttl == ev.packets[0].ttl  # the same stack sent both
        and not prev.sender_data_after
        and ev.ts - prev.packets[-1].ts <= rtt_s + RACE_SLACK_S
    )


def idle_close_gap(c: Conn, rtt_s: float) -> float | None:
    """The idle close gap :func:`build_context` counts for ``c``: at least
    MIN_IDLE_CLOSE_S, else None."""
    gap = _idle_close_gap(c, rtt_s)
    return gap if gap is not None and gap >= MIN_IDLE_CLOSE_S else None


def short_idle_fin(c: Conn) -> bool:
    """The server's FIN came less than RIGHT_AFTER_S after its own last data:
    no idle timer (>= 1 s in every server we know) closed the connection."""
    fin, last = c.s.fin_ts, c.s.last_data_ts
    return fin is not None and last is not None and 0 <= fin - last < RIGHT_AFTER_S


#: a client's first data retransmitted this often with no answer at all: dropped
DATA_RETRIES = 2


def handshake_ack_dropped(c: Conn) -> bool:
    """The server sent nothing after its SYN-ACK while the client, its handshake done,
    retransmitted its first data again and again, never acknowledged: the listener's full
    accept queue dropped the handshake's ACK and the data (tcp_abort_on_overflow=0)."""
    return (
        c.hs_done
        and c.s.synack > 0
        and c.s.pkts == c.s.synack
        and c.c.data_pkts > 0
        and c.c.retrans >= DATA_RETRIES
    )
