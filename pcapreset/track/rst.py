"""rst: RST packets grouped into RST events, each with where in the connection it came.

RSTs of one connection with no data in between are one event (retransmitted
and duplicate RSTs collapse); :func:`_snapshot` records the state of the
connection when the event began (observation only: interpretation is
pcapreset.interpret).
"""

from __future__ import annotations

from typing import cast

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]


from ..capture.tcp import ACK, TcpBatch, parse_tcp_options
from .conn import Conn, Dir, RstEvent, RstPacket

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled

M32 = 0xFFFFFFFF
HALF = 1 << 31


def rst_event(conn: Conn, d: Dir, o: Dir, up: bool, ts: float, seq: int, ack: int,
              flags: int, win: int, plen: int, ttl: int, ipid: int, optlen: int,
              b: TcpBatch, i: int) -> RstEvent | None:  # fmt: skip
    """A RST packet (packet ``i`` of ``b``) into the connection's open RST
    event, or a new event (returned; None when it joined the open one)."""
    d.rst += 1  # (the R/r history letter comes from connstate.control_history)
    opts: list[str] | None = None
    if optlen:
        poff = int(b.poff[i])
        raw = bytes(_buf_of(b, i)[poff - optlen : poff])
        opts = cast("list[str]", parse_tcp_options(raw)["kinds"])
    frame = int(b.frame[i])
    # where the RST's seq sits relative to what the peer acknowledged
    peer_ack = o.last_ack
    if peer_ack is None:
        rel = None
    else:
        rel = (seq - peer_ack) & M32
        if rel >= HALF:
            rel -= 1 << 32
    in_window = None
    if d.base is not None:
        nxt = (d.base + d.max_end) & M32
        diff = (seq - nxt) & M32
        in_window = diff < 65535 << 4 or diff > M32 - (65535 << 4)
    pkt = RstPacket(
        ts=ts, from_client=up, flags=flags, seq=seq, ack=ack if flags & ACK else None,
        ttl=ttl, ipid=ipid, optlen=optlen, win=win, plen=plen, opts=opts, frame=frame,
        seq_vs_peer_ack=rel, in_window=in_window,
    )  # fmt: skip
    if conn._rst_open and conn.rst_events:
        ev = conn.rst_events[-1]
        ev.packets.append(pkt)
        return None
    ev = RstEvent(conn, pkt)
    ev.index = len(conn.rst_events)
    _snapshot(conn, ev, d, o, up, ts)
    conn.rst_events.append(ev)
    conn._rst_open = True
    return ev


def _snapshot(conn: Conn, ev: RstEvent, d: Dir, o: Dir, up: bool, ts: float) -> None:
    """Record where in the connection's life the RST came (observation only)."""
    ex = conn.exchanges[-1] if conn.exchanges else None
    done = sum(1 for e in conn.exchanges if e.complete)
    ev.requests_before = done
    ev.exchange = ex
    ev.since_last_packet_s = ts - conn.end if conn.packets > 1 else None
    ev.prev_pkt_from_peer = conn.packets > 1 and conn.last_pkt_from_client != up
    ev.since_last_data_s = ts - conn.last_data_ts if conn.last_data_ts is not None else None
    last_resp = None
    for e in reversed(conn.exchanges):
        if e.last_resp_ts is not None:
            last_resp = e.last_resp_ts
            break
    ev.since_last_response_s = ts - last_resp if last_resp is not None else None
    ev.sender_fin_before = d.fin_ts is not None
    ev.sender_ipid = d.ipid_last
    ev.peer_ipid = o.ipid_last
    ev.peer_fin_before = o.fin_ts is not None
    any_data = conn.c.data_pkts or conn.s.data_pkts
    outstanding = ex is not None and not ex.complete
    ev.outstanding = outstanding
    # the activity that the RST ends: the outstanding request, else the RST itself
    if outstanding and ex is not None and ex.req_ts is not None:
        trigger = ex.req_ts
    else:
        trigger = ts
    ev.trigger_ts = trigger
    prev_data = _last_data_before(conn, trigger)
    if prev_data is not None:
        ev.idle_before_s = max(0.0, trigger - prev_data)
    else:
        ref = conn.hs_ts or conn.syn_ts or conn.start
        ev.idle_before_s = max(0.0, trigger - ref) if trigger != ref else 0.0
    if not any_data and not (d.fin or o.fin):
        phase = "handshake"
    elif outstanding and ex is not None:
        phase = "response" if ex.resp_ts is not None else "request"
    elif d.fin_ts is not None or o.fin_ts is not None:
        phase = "closing"
    elif ev.since_last_data_s is not None and ev.since_last_data_s < 1.0 and done:
        phase = "after_response"
    elif (
        any_data
        and not conn.exchanges
        and ev.since_last_data_s is not None
        and (ev.since_last_data_s < 1.0)
    ):
        phase = "request" if conn.last_pkt_from_client != up else "response"
    else:
        phase = "idle"
    ev.phase = phase
    if d.fin_ts is not None and o.last_data_ts is not None and o.last_data_ts > d.fin_ts:
        ev.peer_data_after_fin = True


def data_after_rst(conn: Conn, up: bool) -> None:
    """A data packet after the connection's last RST event: the event is
    closed, and the packet counts as data of its sender or its peer after it."""
    conn._rst_open = False
    ev = conn.rst_events[-1]
    if up == ev.from_client:
        ev.sender_data_after += 1
    else:
        ev.peer_data_after += 1


def _buf_of(b: TcpBatch, i: int) -> bytes:
    """The buffer packet ``i`` of ``b`` points into."""
    bufs = b.bufs
    return bufs[0] if len(bufs) == 1 else bufs[int(b.bufidx[i])]


def _last_data_before(conn: Conn, t: float) -> float | None:
    """Time of the last payload packet strictly before ``t`` (from the exchanges)."""
    best = None
    for e in conn.exchanges:
        for v in (e.req_ts, e.last_resp_ts, e.resp_end_ts):
            if v is not None and v < t and (best is None or v > best):
                best = v
    if best is None and conn.last_data_ts is not None and conn.last_data_ts < t:
        best = conn.last_data_ts
    return best
