"""findings: problems that are not a RST (or not only one), per connection.

Like the rules, a table: each row names a finding code, the test on a
connection's observations, and the sentence it prints. Rows are tried in order
and the first one that holds is the connection's finding (a black hole that
made nginx time out is one problem, not two); ``zero_window`` is independent
and always checked. A finding aggregates into ``{cause, count, evidence,
flows}`` in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..track.conn import PROTO_WEBSOCKET, Conn, Dir
from .readings import conn_rtt, fin_crossed, handshake_ack_dropped
from .thresholds import RACE_SLACK_S

#: True when this module runs compiled (setup.py; only no_finding is typed)
COMPILED: bool = cython.compiled

FINDING_CODES = (
    "backlog_overflow",
    "mtu_blackhole",
    "upstream_timeout",
    "premature_close",
    "keepalive_race",
    "zero_window",
)
#: nginx's shortest sensible proxy_*_timeout is about a second; a client FIN
#: sooner than this after the request is not a timeout
MIN_TIMEOUT_S = 1.0


def _silent_backlog(c: Conn) -> str | None:
    # The client's handshake ACK was dropped by a full accept queue
    # (tcp_abort_on_overflow=0): the server retransmits its SYN-ACK although the
    # client ACKed, and the client's first data is retransmitted un-ACKed.
    if c.s.synack >= 2 and c.hs_done:
        return (
            f"server retransmitted its SYN-ACK {c.s.synack - 1} time(s) after the client's "
            f"ACK; client data retransmitted {c.c.retrans} time(s)"
        )
    if handshake_ack_dropped(c):
        # Linux drops the handshake's ACK when the accept queue is full and keeps the
        # connection half-open; the client's request then goes unacknowledged
        return (
            f"the server sent nothing after its SYN-ACK; the client's request was "
            f"retransmitted {c.c.retrans} time(s), never acknowledged: the handshake's ACK "
            "and the request were dropped by a full accept queue"
        )
    if c.c.syn_retrans >= 1 and c.s.synack >= 1:
        # Linux drops SYNs while the accept queue is full (tcp_conn_request)
        return f"client retransmitted its SYN {c.c.syn_retrans} time(s) before the SYN-ACK"
    return None


def _unacked(d: Dir, peer: Dir) -> int:
    """Bytes this side sent that the peer never acknowledged."""
    if d.base is None or peer.last_ack is None:
        return d.max_end
    acked = (peer.last_ack - d.base) & 0xFFFFFFFF
    return d.max_end - acked if acked <= d.max_end else 0


def _alive_after(d: Dir, t: float) -> bool:
    """This side sent something (new data, a retransmission or a FIN) after ``t``."""
    return (d.last_data_ts or 0.0) > t or (d.fin_ts or 0.0) > t or d.retrans > 0


def _mtu_blackhole(c: Conn) -> str | None:
    # A full-size segment retransmitted again and again (RTO backoff) and never
    # ACKed, while the peer stays alive (its packets keep coming) and this side's
    # small segments get through: something on the path drops big packets and
    # the ICMP "fragmentation needed" never arrives.
    for name, d, o in (("server", c.s, c.c), ("client", c.c, c.s)):
        mss = o.mss or 536
        if (
            d.mss_retrans >= 2
            and d.small_retrans == 0
            and _unacked(d, o) >= mss // 2
            and d.last_data_ts is not None
            and _alive_after(o, d.last_data_ts)
        ):
            return (
                f"{name} retransmitted full-size segments {d.mss_retrans} time(s) with no "
                f"ACK while the other side's packets and its own small segments got "
                f"through"
            )
    return None


def _mtu_blackhole_far_side(c: Conn) -> str | None:
    # Seen from nginx's side of the hole the big segments never arrive, so only
    # their shadow shows: the backend's ACK of the request rode on the first
    # response segment (Linux piggybacks the ACK when the answer is ready before
    # the delayed-ACK timer), so nginx retransmits its small request, the backend
    # ACKs it alone (small packets pass), and then no response byte ever comes
    # until nginx gives up. A weaker signal than the retransmissions on the
    # backend's side: a lost request plus a slow backend looks the same.
    if not c.exchanges:
        return None
    ex = c.exchanges[-1]
    fin = c.c.fin_ts
    if (
        ex.req_ts is None
        or ex.resp_ts is not None
        or fin is None
        or fin - ex.req_ts < MIN_TIMEOUT_S
        or (c.s.fin_ts is not None and c.s.fin_ts <= fin)
        or c.c.small_retrans < 1
        or c.c.mss_retrans
        or _unacked(c.c, c.s) > 1
    ):
        return None
    return (
        "nginx had to retransmit its request, the backend then ACKed it, and no response "
        "byte arrived until nginx gave up: the backend's full-size segments (carrying the "
        "first ACK) are lost on the way, likely an MTU black hole before this capture point"
    )


def _upstream_timeout(c: Conn) -> str | None:
    # nginx closed (FIN) first, a second or more after its request, with the
    # response missing or stalled: proxy_read_timeout / proxy_send_timeout.
    if not c.exchanges:
        return None
    ex = c.exchanges[-1]
    fin = c.c.fin_ts
    if fin is None or ex.req_ts is None or fin <= ex.req_ts:
        return None
    # judged as of nginx's FIN: a response that completed only afterwards (the
    # backend answered too late) still timed out
    if ex.resp_end_ts is not None and ex.resp_end_ts <= fin:
        return None
    if c.s.fin_ts is not None and c.s.fin_ts <= fin:
        return None  # the backend closed first: premature close, not a timeout
    if any(ev.ts <= fin for ev in c.rst_events):
        return None
    wait = fin - ex.req_ts
    started = ex.resp_ts is not None and ex.resp_ts <= fin
    stalled = ex.last_resp_ts is not None and ex.last_resp_ts <= fin - 1.0
    if wait >= MIN_TIMEOUT_S and (not started or stalled):
        got = "no response" if not started else "an incomplete response"
        late = ""
        if ex.resp_ts is not None and ex.resp_ts > fin:
            late = f"; the backend answered {ex.resp_ts - ex.req_ts:.1f} s after the request"
        return f"nginx gave up after {wait:.1f} s with {got} (proxy_read_timeout){late}"
    return None


def _websocket_idle(c: Conn) -> str | None:
    # nginx closed (FIN) an upgraded connection without a WebSocket close frame from its
    # client, a second or more after the backend's last frame: proxy_read_timeout ran out
    # (nginx speaks no WebSocket: it closes the TCP connection). Ping and pong frames
    # count as the backend's liveness; a close frame first is a goodbye, not a timeout.
    st = c.pstate
    fin = c.c.fin_ts
    if c.proto != PROTO_WEBSOCKET or st is None or fin is None or st.close_ts[0] is not None:
        return None
    if (c.s.fin_ts is not None and c.s.fin_ts <= fin) or st.close_ts[1] is not None:
        return None  # the backend closed first
    if any(ev.ts <= fin for ev in c.rst_events):
        return None
    last = st.last_frame_ts[1]
    if last is None and c.exchanges:
        last = c.exchanges[-1].resp_end_ts  # the 101 answer
    if last is None or fin - last < MIN_TIMEOUT_S:
        return None
    return (
        f"nginx closed the WebSocket {fin - last:.1f} s after the backend's last frame, "
        "without a close frame (proxy_read_timeout): the backend sent nothing, not even a ping"
    )


def _premature_close(c: Conn) -> str | None:
    # The backend closed (FIN) with a request in hand: the request reached it
    # (the FIN did not cross it on the wire) and no complete response came.
    fin = c.s.fin_ts
    if fin is None or not c.exchanges:
        return None
    if c.c.fin_ts is not None and c.c.fin_ts < fin:
        return None
    rtt = conn_rtt(c) or 0.0
    for ex in c.exchanges:
        if ex.req_ts is None or ex.req_ts >= fin or ex.complete:
            continue
        if ex.resp_ts is not None and ex.resp_len is None and not ex.chunked:
            # no length (HTTP/1.0, Connection: close, multipart/byteranges
            # without Content-Length): the server's FIN is the response's end
            continue
        if ex is c.exchanges[-1] and fin_crossed(c, rtt):
            return None  # keep-alive race: the server closed before it saw the request
        if any(not ev.from_client and ev.ts <= fin + RACE_SLACK_S for ev in c.rst_events):
            return None
        got = "before responding" if ex.resp_ts is None else "in the middle of the response"
        return f"the backend closed (FIN) {got} to a request it had received"
    return None


def _race_without_rst(c: Conn) -> str | None:
    # The backend closed an idle connection (FIN) as nginx's next request was on
    # its way and never answered it, and no RST followed: a keep-alive race whose
    # only trace is the crossing. Servers that close with a lingering close
    # (Apache httpd: FIN, then read and discard until the peer closes) answer the
    # late request with an ACK instead of a RST; nginx logs "upstream prematurely
    # closed connection" (502, or a retry for idempotent requests).
    fin = c.s.fin_ts
    if fin is None or not c.exchanges or (c.c.fin_ts is not None and c.c.fin_ts < fin):
        return None
    if any(not ev.from_client for ev in c.rst_events):
        return None  # the RST is the reset's own verdict (keepalive_race)
    if not fin_crossed(c, conn_rtt(c) or 0.0):
        return None
    done = [e.resp_end_ts for e in c.exchanges if e.resp_end_ts is not None and e.resp_end_ts < fin]
    if not done:
        return None  # no answered request before: not a kept-alive connection
    return (
        f"the backend closed the keep-alive connection (FIN after {fin - max(done):.1f} s "
        "idle) as nginx's next request "
        "was on its way, and never answered it (no RST: a lingering close, as Apache "
        "httpd does): nginx logs 'upstream prematurely closed connection'"
    )


def _zero_window(c: Conn) -> str | None:
    for name, d in (("client", c.c), ("server", c.s)):
        if d.zero_win:
            return f"{name} advertised a zero window {d.zero_win} time(s)"
    return None


@dataclass(frozen=True)
class FindingRule:
    cause: str
    test: Callable[[Conn], str | None]
    exclusive: bool = True  # False: checked even when an earlier row matched


FINDING_RULES: tuple[FindingRule, ...] = (
    FindingRule("backlog_overflow", _silent_backlog),
    FindingRule("mtu_blackhole", _mtu_blackhole),
    FindingRule("mtu_blackhole", _mtu_blackhole_far_side),
    FindingRule("premature_close", _premature_close),
    FindingRule("keepalive_race", _race_without_rst),
    FindingRule("upstream_timeout", _upstream_timeout),
    FindingRule("upstream_timeout", _websocket_idle),
    FindingRule("zero_window", _zero_window, exclusive=False),
)


def no_finding(c: Conn) -> bool:
    """True when no row of :data:`FINDING_RULES` can hold for ``c``: a cheap
    test from its counters and its exchanges' times, so that eviction need not
    run every rule on the many plain connections. False only means "maybe":
    then :func:`conn_findings` decides. (A new rule must be added here too:
    tests/test_findings_fast.py checks this agrees with the rules.)
    """
    cd, sd = c.c, c.s
    if (
        sd.synack >= 2  # backlog_overflow (with hs_done), or ...
        or cd.syn_retrans  # ... a retransmitted SYN (with a SYN-ACK)
        or cd.mss_retrans >= 2  # mtu_blackhole
        or sd.mss_retrans >= 2
        or cd.small_retrans  # mtu_blackhole (far side)
        or cd.zero_win  # zero_window
        or sd.zero_win
    ):
        return False
    if c.proto == PROTO_WEBSOCKET and cd.fin_ts is not None:
        return False  # upstream_timeout of a WebSocket (its frames decide)
    exs = c.exchanges
    if not exs:
        return True  # the other rules need an exchange
    for ex in exs:
        # premature_close needs a request without a complete response
        if ex.resp_end_ts is None and ex.req_ts is not None:
            return False
    # upstream_timeout: nginx's FIN after the last request, before its response ended
    fin = cd.fin_ts
    ex = exs[-1]
    if fin is None or ex.req_ts is None or fin <= ex.req_ts:
        return True
    return ex.resp_end_ts is not None and ex.resp_end_ts <= fin


def conn_findings(c: Conn, burst: Callable[[Conn], bool] | None = None) -> list[tuple[str, str]]:
    """The connection's findings. ``burst``: whether its connection attempt
    was one of a burst with retransmitted SYNs or SYN-ACKs
    (:func:`pcapreset.evidence.retry_burst`); the silent backlog_overflow
    needs one (a single lost SYN or SYN-ACK is ordinary loss)."""
    out = []
    taken = False
    for r in FINDING_RULES:
        if r.exclusive and taken:
            continue
        if r.test is _silent_backlog and burst is not None and not burst(c):
            continue
        msg = r.test(c)
        if msg:
            out.append((r.cause, msg))
            taken = taken or r.exclusive
    return out
