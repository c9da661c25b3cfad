"""evidence: named facts about each RST event, computed once.

:func:`rst_facts` returns the facts (:class:`~pcapreset.interpret.fact.Fact`)
that hold for one RST event; a fact that does not hold is simply absent. Here:
the RST packet itself, the handshake, HTTP exchanges and messages crossing a
close, idle timeouts, mass resets and restarts; whether the RST fits its
sender's stack is :mod:`~pcapreset.interpret.forgery`, the protocol-free
conversation :mod:`~pcapreset.interpret.conversation`. Cross-connection context
(bursts of connects, many resets at one instant, the backend's idle timeout,
round-trip times, the vantage point) is computed once per capture by
:func:`pcapreset.interpret.context.build_context`.

Nothing here decides a cause: that is :mod:`pcapreset.interpret.rules`. Which facts each
cause relies on, where the thresholds come from and how they can be fooled is
written up in ``docs/rules.md``.

Kernel behaviour the facts lean on (Linux; checked in the kernel source):

* a segment for a socket that no longer exists, or data for a socket the
  application already closed, is answered by ``tcp_v4_send_reset`` /
  ``tcp_v6_send_reset``: if the segment carried ACK, the RST has
  ``seq = segment's ack`` and *no* ACK flag, else ``ack = seq + len`` with
  ACK; no TCP options (besides MD5/AO). It is sent from a per-netns control
  socket that is not connected, so ``ip_select_ident_segs`` gives a DF packet
  IP ID 0 (include/net/ip.h), and the TTL is ``net.ipv4.ip_default_ttl``.
* ``close()`` with unread received data, ``SO_LINGER`` 0, or a process exit
  with unread data, sends ``tcp_send_active_reset``: RST|ACK through the
  socket's own transmit path, so it carries the socket's options (timestamps)
  and its IP ID counter.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..capture.tcp import ACK
from ..track.conn import Conn, RstEvent
from .context import (
    RESTART_CLOSES,
    RESTART_CLOSES_S,
    Context,
    rtt_of,
)
from .conversation import GOODBYE_MAX, REQUEST_APPS, conn_app, conversation_facts, waiting_at
from .fact import Fact, FactTable
from .forgery import forgery_facts
from .readings import fin_crossed, is_refused, short_idle_fin
from .thresholds import (
    BURST_CONNECTS,
    INSTANT_S,
    MASS_RESETS,
    RACE_SLACK_S,
    RESTART_WINDOW_S,
    RIGHT_AFTER_S,
    TIMEOUT_MATCH,
)


def _count_within(times: Sequence[float], t: float, before: float, after: float) -> int:
    lo = bisect.bisect_left(times, t - before)
    hi = bisect.bisect_right(times, t + after)
    return hi - lo


def _packet_facts(f: FactTable, conn: Conn, ev: RstEvent) -> None:
    """What the RST packet itself looks like."""
    p0 = ev.packets[0]
    side = "client (nginx side)" if ev.from_client else "server (backend side)"
    f.add("from_client" if ev.from_client else "from_server", f"RST sent from the {side}")
    if p0.flags & ACK:
        f.add("rst_with_ack", "RST carries the ACK flag")
    else:
        f.add("bare_rst", "bare RST (no ACK flag)")
    if p0.seq_vs_peer_ack == 0:
        f.add("seq_is_peer_ack", "RST sequence number equals the peer's last ACK")
    if not p0.optlen:
        f.add("no_options", "RST carries no TCP options")
    if not p0.flags & ACK and not p0.optlen and p0.seq_vs_peer_ack == 0:
        f.add(
            "stateless_rst",
            "bare RST, no options, seq = the peer's ACK: the kernel answering a segment "
            "for a closed socket (Linux tcp_v4_send_reset)",
        )
    if p0.flags & ACK and p0.optlen:
        f.add(
            "active_rst",
            "RST,ACK with the socket's TCP options: the socket itself aborted "
            "(close() with unread data, SO_LINGER 0 or process exit)",
        )
    if len(ev.packets) > 1:
        f.add("repeated_rst", f"{len(ev.packets)} RST packets in this event")


def _handshake_facts(f: FactTable, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    if is_refused(conn, ev):
        f.add("rst_answers_syn", "the SYN was answered with RST,ACK: nothing listening on the port")
    if (
        not ev.from_client
        and ev.phase == "handshake"
        and conn.hs_ts is not None
        and conn.hs_ts <= ev.ts
    ):
        f.add("rst_after_handshake", "RST right after the 3-way handshake, before any data")
    elif (
        conn.hs_done
        and not ev.from_client
        and not conn.s.data_pkts
        and not ev.requests_before
        and ev.exchange is not None
        and ev.exchange.resp_ts is None
        and conn.s.fin_ts is None
        and ev.trigger_ts is not None
        and conn.hs_ts is not None
        and ev.trigger_ts - conn.hs_ts <= RACE_SLACK_S
        and ev.ts - ev.trigger_ts <= rtt_of(conn, ctx) + RACE_SLACK_S
    ):
        # the request rode with/right behind the handshake ACK and bounced at once:
        # the ACK completing the handshake was refused by a full accept queue
        f.add(
            "rst_after_handshake",
            "RST answered the first segments after the handshake, before the backend read anything",
        )
    p0 = ev.packets[0]
    if not ev.from_client and p0.ack is not None and conn.c.base is not None and conn.c.max_end:
        acked = (p0.ack - conn.c.base) & 0xFFFFFFFF
        if 0 < acked < 1 << 30:
            f.add(
                "rst_acks_payload",
                f"the RST acknowledges {min(acked, conn.c.max_end)} payload byte(s): an open "
                "socket had received them",
            )
    if conn.c.syn_retrans:
        f.add("syn_retransmitted", f"the client retransmitted its SYN {conn.c.syn_retrans} time(s)")
    if conn.s.synack > 1:
        f.add("synack_retransmitted", f"the server sent its SYN-ACK {conn.s.synack} times")
    if conn.syn_ts is not None and conn.server in ctx.syn_times:
        n = _count_within(ctx.syn_times[conn.server], conn.syn_ts, INSTANT_S, INSTANT_S)
        if n >= BURST_CONNECTS:
            f.add(
                "concurrent_connects",
                f"{n} connections to this server opened within {INSTANT_S * 1000:.0f} ms",
            )


def _http_facts(f: FactTable, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """Where the RST fell relative to HTTP requests and responses."""
    ex = ev.exchange
    fin = conn.s.fin_ts
    if (
        ev.phase == "response"
        and ex is not None
        and ex.status is not None
        and ex.resp_len is None
        and not ex.chunked
        and fin is not None
        and fin <= ev.ts
        and (ex.last_resp_ts is None or ex.last_resp_ts <= fin)
    ):
        # a response without a length ends with the server's FIN (HTTP/1.0,
        # Connection: close): complete when the FIN came before the RST
        f.add(
            "response_ended_by_fin",
            "the response had no length and the server's FIN ended it before the RST: complete",
        )
    elif ev.phase == "response":
        f.add("response_partial", "the response had started but was not complete")
    if ev.outstanding and ev.phase == "request":
        f.add("request_outstanding", "a request was sent and no response had started")
    if ev.phase == "after_response":
        f.add(
            "after_complete_response",
            f"RST {ev.since_last_data_s or 0:.3f} s after a complete response, no new request",
        )
    if ev.phase == "idle":
        f.add("idle_connection", "the connection was idle (no request outstanding)")
    if ev.requests_before:
        f.add("reused_connection", f"{ev.requests_before} request(s) completed earlier on it")
        cfin = conn.c.fin_ts
        if not ev.outstanding and not (
            cfin is not None and cfin <= ev.ts and waiting_at(conn, cfin)
        ):
            f.add(
                "exchanges_complete",
                f"every request on the connection ({ev.requests_before}) had its complete "
                "response: nothing in flight",
            )
    rtt = rtt_of(conn, ctx)
    if not ev.from_client and ev.sender_fin_before and ev.outstanding and fin_crossed(conn, rtt):
        f.add(
            "fin_crossed_request",
            "the server's FIN and nginx's request crossed: the server closed before it saw "
            "the request",
        )
    if (
        not ev.from_client
        and ev.outstanding
        and ev.phase == "request"
        and ev.trigger_ts is not None
        and ev.ts - ev.trigger_ts <= rtt + RACE_SLACK_S
    ):
        f.add(
            "rst_soon_after_request",
            f"RST {1000 * (ev.ts - ev.trigger_ts):.1f} ms after the request "
            f"(round trip {1000 * rtt:.1f} ms): no time for the backend to work on it",
        )


def _exchange_facts(f: FactTable, conn: Conn, ev: RstEvent, ctx: Context, http: bool) -> None:
    """Where the RST fell relative to requests and responses (``http``: the
    connection carries HTTP; otherwise only the protocol-free facts)."""
    if http:
        _http_facts(f, conn, ev, ctx)
    if ev.idle_before_s is not None and ev.idle_before_s >= RIGHT_AFTER_S:
        f.add(
            "idle_gap", f"{ev.idle_before_s:.3f} s idle before the activity that ended in the RST"
        )
    if not ev.from_client and ev.sender_fin_before:
        f.add("server_fin_before", "the server had sent a FIN before the RST")
    if ev.from_client and ev.sender_fin_before:
        f.add("client_fin_before", "the client had sent a FIN before the RST")
    if ev.peer_data_after_fin:
        who = "client" if not ev.from_client else "server"
        f.add("data_after_fin", f"the {who} sent data after the other side's FIN")
    if not http and not ev.from_client:
        _crossing_facts(f, conn, ev, ctx)
    p0 = ev.packets[0]
    if p0.ack is not None and not ev.from_client and conn.c.base is not None:
        acked = (p0.ack - conn.c.base) & 0xFFFFFFFF
        if acked < conn.c.max_end and conn.c.max_end - acked < 1 << 30:
            f.add(
                "client_data_unacked", "the RST does not acknowledge all the data the client sent"
            )


def _crossing_facts(f: FactTable, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """A protocol we do not parse (TLS included): the client's next message
    after an idle gap and the server's FIN crossed on the wire, and the
    server's closed socket reset the message (fin_crossed's rule, without
    HTTP's request boundaries: the client's last message, after the server's
    last, is the request)."""
    fin, c_last, s_last = conn.s.fin_ts, conn.c.last_data_ts, conn.s.last_data_ts
    if fin is None or c_last is None or fin > ev.ts or c_last > ev.ts:
        return
    if s_last is not None and s_last >= c_last:
        return  # the server answered it
    if conn.c.last_plen <= GOODBYE_MAX:
        return  # a goodbye, not a request (conversation: after_close)
    rtt = rtt_of(conn, ctx)
    idle = c_last - s_last if s_last is not None else None
    if (
        (c_last >= fin or fin - c_last <= rtt + RACE_SLACK_S)
        and idle is not None
        and idle >= RIGHT_AFTER_S
    ):
        f.add(
            "message_crossed_close",
            f"the client's next message ({conn.c.last_plen} bytes, after {idle:.2f} s idle) "
            "and the server's FIN crossed: the server closed the idle connection as the "
            "client reused it",
        )


def _timing_facts(f: FactTable, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """The idle timeout, mass resets and restarts across connections."""
    to = ctx.idle_timeout.get(conn.server)
    if to is not None and ev.idle_before_s is not None and not ev.from_client:
        if abs(ev.idle_before_s - to) <= TIMEOUT_MATCH * to:
            f.add(
                "idle_matches_server_timeout",
                f"idle gap {ev.idle_before_s:.2f} s matches the server's idle timeout "
                f"(~{to:.2f} s, from {ctx.idle_timeout_basis.get(conn.server, '?')})",
            )
    if ev.from_client:
        return
    n = _count_within(ctx.server_rst_times.get(conn.server, []), ev.ts, INSTANT_S, INSTANT_S)
    if n >= MASS_RESETS:
        f.add("mass_reset", f"{n} connections reset by the server within {INSTANT_S * 1000:.0f} ms")
    fin = conn.s.fin_ts
    if ev.sender_fin_before and fin is not None and short_idle_fin(conn):
        k = _count_within(
            ctx.short_fins.get(conn.server, []), fin, RESTART_CLOSES_S, RESTART_CLOSES_S
        )
        if k >= RESTART_CLOSES:
            f.add(
                "restart_closes",
                f"the server closed {k} connections within {RESTART_CLOSES_S:g} s, each less "
                f"than {RIGHT_AFTER_S:g} s after its last answer (no idle timer), and they were "
                "then used: it was shutting down or recycling",
            )
    r = _count_within(ctx.refused_times.get(conn.server, []), ev.ts, 0.0, RESTART_WINDOW_S)
    if r and not is_refused(conn, ev):
        f.add(
            "refused_after",
            f"{r} refused connect(s) to this server within {RESTART_WINDOW_S:g} s after",
        )


def rst_facts(conn: Conn, ev: RstEvent, ctx: Context) -> dict[str, Fact]:
    """The facts that hold for one RST event, by name."""
    f = FactTable()
    _packet_facts(f, conn, ev)
    _handshake_facts(f, conn, ev, ctx)
    _exchange_facts(f, conn, ev, ctx, conn_app(conn) in REQUEST_APPS)
    _timing_facts(f, conn, ev, ctx)
    forgery_facts(f, conn, ev, ctx)
    conversation_facts(f, conn, ev)
    return dict(f)


#: every fact name rst_facts can produce (rules must only name these)
FACT_NAMES = frozenset(
    {
        "from_client", "from_server", "rst_with_ack", "bare_rst", "seq_is_peer_ack",
        "no_options", "stateless_rst", "active_rst", "repeated_rst",
        "rst_answers_syn", "rst_after_handshake", "syn_retransmitted", "synack_retransmitted",
        "concurrent_connects", "rst_acks_payload",
        "request_outstanding", "response_partial", "after_complete_response",
        "exchanges_complete",
        "idle_connection", "reused_connection", "idle_gap", "server_fin_before",
        "client_fin_before", "data_after_fin", "fin_crossed_request", "rst_soon_after_request",
        "client_data_unacked",
        "idle_matches_server_timeout", "mass_reset", "refused_after",
        "ttl_mismatch", "ttl_consistent", "ttl_mismatch_host", "ttl_family_differs",
        "ipid_jump", "rst_shape_mismatch", "ipid_counter_skips_rst", "late_request_after_close",
        "peer_bulk", "reset_after_own_fin", "reply_after_client_close", "client_said_little",
        "tls_reply_not_tls", "client_waited", "tls_handshake_only", "rst_soon_after_peer",
        "client_unanswered", "sender_gave_up", "client_said_goodbye", "rst_ipid_of_peer",
        "socket_reset_before", "message_crossed_close", "restart_closes", "peer_still_sending",
        "rst_both_directions", "sender_data_after_rst", "rst_out_of_window",
        "app_http", "app_fastcgi", "app_uwsgi", "app_websocket", "app_tls", "app_other", "app_none",
        "server_spoke_first", "no_request", "syn_seen", "odd_handshake", "nothing_in_flight",
        "health_check_request", "both_spoke",
        "peer_spoke_last", "sender_spoke_last", "peer_data_unread", "own_data_unacked",
        "peer_goodbye_unread", "own_goodbye_unacked", "peer_closed_first",
        "response_ended_by_fin", "syn_retries_refused",
        "late_segment_no_request",
    }
)  # fmt: skip
