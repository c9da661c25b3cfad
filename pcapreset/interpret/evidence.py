"""evidence: named facts about each RST event, computed once.

A *fact* is a name plus a sentence a person reads ("the backend answered the
SYN with RST,ACK"). :func:`rst_facts` returns the facts that hold for one RST
event; a fact that does not hold is simply absent. Cross-connection context
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
from dataclasses import dataclass

from ..capture.tcp import ACK
from ..track.conn import Conn, RstEvent
from .context import Context, fin_crossed, is_refused, rtt_of
from .thresholds import (
    BURST_CONNECTS,
    INSTANT_S,
    MASS_RESETS,
    RACE_SLACK_S,
    RESTART_WINDOW_S,
    RIGHT_AFTER_S,
    TIMEOUT_MATCH,
)
from .vantage import hops, initial_ttl, side_ttl


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    text: str


def _count_within(times: Sequence[float], t: float, before: float, after: float) -> int:
    lo = bisect.bisect_left(times, t - before)
    hi = bisect.bisect_right(times, t + after)
    return hi - lo


#: Fact objects by (name, text), shared between resets (most texts are
#: constant; a report keeps every reset's facts); at most _SHARED_FACTS_MAX
_shared_facts: dict[tuple[str, str], Fact] = {}
_SHARED_FACTS_MAX = 4096


class _Facts(dict):
    def add(self, name: str, text: str) -> None:
        f = _shared_facts.get((name, text))
        if f is None:
            f = Fact(name, text)
            if len(_shared_facts) < _SHARED_FACTS_MAX:
                _shared_facts[(name, text)] = f
        self[name] = f


def _packet_facts(f: _Facts, conn: Conn, ev: RstEvent) -> None:
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


def _handshake_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
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


def _exchange_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """Where the RST fell relative to requests and responses."""
    if ev.outstanding and ev.phase == "request":
        f.add("request_outstanding", "a request was sent and no response had started")
    if ev.phase == "response":
        f.add("response_partial", "the response had started but was not complete")
    if ev.phase == "after_response":
        f.add(
            "after_complete_response",
            f"RST {ev.since_last_data_s or 0:.3f} s after a complete response, no new request",
        )
    if ev.phase == "idle":
        f.add("idle_connection", "the connection was idle (no request outstanding)")
    if ev.requests_before:
        f.add("reused_connection", f"{ev.requests_before} request(s) completed earlier on it")
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
    p0 = ev.packets[0]
    if p0.ack is not None and not ev.from_client and conn.c.base is not None:
        acked = (p0.ack - conn.c.base) & 0xFFFFFFFF
        if acked < conn.c.max_end and conn.c.max_end - acked < 1 << 30:
            f.add(
                "client_data_unacked", "the RST does not acknowledge all the data the client sent"
            )


def _timing_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
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
    r = _count_within(ctx.refused_times.get(conn.server, []), ev.ts, 0.0, RESTART_WINDOW_S)
    if r and not is_refused(conn, ev):
        f.add(
            "refused_after",
            f"{r} refused connect(s) to this server within {RESTART_WINDOW_S:g} s after",
        )


def _forgery_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """Does the RST fit the claimed sender's other packets (Weaver/Sommer/Paxson)?

    TTL is compared with the same sender's other packets *in this flow*, so a
    capture on either host (where one side arrives un-decremented) is no
    evidence by itself. Only when the sender sent nothing else in this flow is
    the RST compared with that host's packets in other flows.
    """
    p0 = ev.packets[0]
    sender = conn.c if ev.from_client else conn.s
    others = sender.ttls
    if others:
        seen = "/".join(str(t) for t in sorted(others))
        if p0.ttl not in others:
            f.add(
                "ttl_mismatch", f"RST TTL {p0.ttl} differs from the sender's other packets ({seen})"
            )
        else:
            f.add("ttl_consistent", f"RST TTL {p0.ttl} matches the sender's other packets")
    else:
        host = (conn.client if ev.from_client else conn.server) >> 16
        usual = ctx.host_hops.get(host)
        if usual is not None and hops(p0.ttl) != usual:
            f.add(
                "ttl_mismatch_host",
                f"RST arrives {hops(p0.ttl)} hop(s) below its initial TTL; this host's packets "
                f"in other connections arrive {usual} hop(s) below",
            )
    if p0.ipid > 0 and sender.ipid_last > 0:
        gap = (p0.ipid - sender.ipid_last) & 0xFFFF
        if gap > 1024:
            f.add(
                "ipid_jump",
                f"RST IP ID {p0.ipid} far from the sender's sequence ({sender.ipid_last})",
            )
            usual = side_ttl(sender)
            if usual is not None and initial_ttl(usual) == 64:
                # Linux gives a connected TCP socket's DF packets a per-socket IP ID
                # counter (ip_select_ident_segs, include/net/ip.h): its own RST
                # (tcp_send_active_reset) takes the next value, a stateless RST
                # (tcp_v4_send_reset, unconnected control socket) gets 0.  A non-zero
                # IP ID far from the counter fits neither: someone else sent it.
                f.add(
                    "ipid_out_of_sequence",
                    f"RST IP ID {p0.ipid} is neither 0 nor the next value of the sender's "
                    f"per-connection counter ({sender.ipid_last}, TTL 64 stack): a Linux "
                    "stack's own RSTs always are one of the two",
                )
    dirs = {p.from_client for p in ev.packets if p.ts - ev.ts <= INSTANT_S}
    if len(dirs) == 2:
        f.add("rst_both_directions", "RSTs went towards both ends in the same instant")
    if ev.sender_data_after:
        f.add(
            "sender_data_after_rst",
            f"the 'resetting' side sent {ev.sender_data_after} data packet(s) after the RST",
        )
    if p0.in_window is False:
        f.add("rst_out_of_window", "RST sequence number is outside the sender's sequence space")


def rst_facts(conn: Conn, ev: RstEvent, ctx: Context) -> dict[str, Fact]:
    """The facts that hold for one RST event, by name."""
    f = _Facts()
    _packet_facts(f, conn, ev)
    _handshake_facts(f, conn, ev, ctx)
    _exchange_facts(f, conn, ev, ctx)
    _timing_facts(f, conn, ev, ctx)
    _forgery_facts(f, conn, ev, ctx)
    return dict(f)


#: every fact name rst_facts can produce (rules must only name these)
FACT_NAMES = frozenset(
    {
        "from_client", "from_server", "rst_with_ack", "bare_rst", "seq_is_peer_ack",
        "no_options", "stateless_rst", "active_rst", "repeated_rst",
        "rst_answers_syn", "rst_after_handshake", "syn_retransmitted", "synack_retransmitted",
        "concurrent_connects",
        "request_outstanding", "response_partial", "after_complete_response",
        "idle_connection", "reused_connection", "idle_gap", "server_fin_before",
        "client_fin_before", "data_after_fin", "fin_crossed_request", "rst_soon_after_request",
        "client_data_unacked",
        "idle_matches_server_timeout", "mass_reset", "refused_after",
        "ttl_mismatch", "ttl_consistent", "ttl_mismatch_host", "ipid_jump",
        "ipid_out_of_sequence",
        "rst_both_directions", "sender_data_after_rst", "rst_out_of_window",
    }
)  # fmt: skip
