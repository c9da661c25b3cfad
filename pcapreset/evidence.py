"""evidence: named facts about each RST event, computed once.

A *fact* is a name plus a sentence a person reads ("the backend answered the
SYN with RST,ACK"). :func:`rst_facts` returns the facts that hold for one RST
event; a fact that does not hold is simply absent. Cross-connection context
(bursts of connects, many resets at one instant, the backend's idle timeout,
the vantage point) is computed once per capture by :func:`build_context`.

Nothing here decides a cause: that is :mod:`pcapreset.rules`.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from .decode import ACK
from .flows import Conn, RstEvent

#: initial TTL families of common stacks (Linux/macOS 64, Windows 128, network gear 255)
TTL_FAMILIES = (32, 64, 128, 255)
#: packets sent within this window count as "the same instant" (burst, mass reset)
INSTANT_S = 0.1
#: a RST this soon after the last data is "right after" it (well under any idle timeout,
#: above delayed-ACK timers of 40-200 ms)
RIGHT_AFTER_S = 1.0
#: an idle gap matches the backend's idle timeout when within this fraction of it
#: (timers fire late by scheduling, early never; the race window is one RTT)
TIMEOUT_MATCH = 0.25


@dataclass(frozen=True)
class Fact:
    name: str
    text: str


def initial_ttl(ttl: int) -> int:
    for f in TTL_FAMILIES:
        if ttl <= f:
            return f
    return 255


@dataclass
class Vantage:
    """Where the capture was taken, from the TTLs of each side's packets."""

    where: str  # "client host", "server host", "same host", "in the path", "unknown"
    client_hops: int | None
    server_hops: int | None
    basis: str

    def as_dict(self) -> dict:
        return {
            "where": self.where,
            "client_hops": self.client_hops,
            "server_hops": self.server_hops,
            "basis": self.basis,
        }


def infer_vantage(conns: list[Conn]) -> Vantage:
    """Majority over connections of (hops from client, hops from server)."""
    votes: dict[tuple[int, int], int] = defaultdict(int)
    for c in conns:
        if not c.c.ttls or not c.s.ttls:
            continue
        ct = max(c.c.ttls, key=c.c.ttls.__getitem__)
        st = max(c.s.ttls, key=c.s.ttls.__getitem__)
        votes[(initial_ttl(ct) - ct, initial_ttl(st) - st)] += 1
    if not votes:
        return Vantage("unknown", None, None, "no connection with packets from both sides")
    (ch, sh), n = max(votes.items(), key=lambda kv: kv[1])
    total = sum(votes.values())
    basis = (
        f"client packets arrive {ch} hop(s) below their initial TTL, server packets {sh} "
        f"(in {n} of {total} connections)"
    )
    if ch == 0 and sh == 0:
        where = "same host or same link"
    elif ch == 0:
        where = "client host (nginx side)"
    elif sh == 0:
        where = "server host (backend side)"
    else:
        where = "in the path (neither end)"
    return Vantage(where, ch, sh, basis)


@dataclass
class Context:
    """Per-capture facts used by the per-RST facts."""

    vantage: Vantage
    #: server endpoint -> sorted SYN times of its connections
    syn_times: dict[int, list[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of RST events sent by the server
    server_rst_times: dict[int, list[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of refused connects (RST,ACK to a SYN)
    refused_times: dict[int, list[float]] = field(default_factory=dict)
    #: server endpoint -> idle gaps (s) after which the server closed a keep-alive connection
    idle_closes: dict[int, list[float]] = field(default_factory=dict)
    #: inferred idle timeout per server endpoint (median of idle_closes)
    idle_timeout: dict[int, float] = field(default_factory=dict)


def is_refused(conn: Conn, ev: RstEvent) -> bool:
    return (
        not ev.from_client
        and conn.c.syn > 0
        and conn.s.synack == 0
        and conn.s.data_pkts == 0
        and bool(ev.packets[0].flags & ACK)
    )


def last_response_end(conn: Conn) -> float | None:
    for e in reversed(conn.exchanges):
        if e.resp_end_ts is not None:
            return e.resp_end_ts
        if e.last_resp_ts is not None:
            return e.last_resp_ts
    return None


def build_context(conns: list[Conn]) -> Context:
    ctx = Context(vantage=infer_vantage(conns))
    for c in conns:
        if c.syn_ts is not None:
            ctx.syn_times.setdefault(c.server, []).append(c.syn_ts)
        for ev in c.rst_events:
            if ev.from_client:
                continue
            if is_refused(c, ev):
                ctx.refused_times.setdefault(c.server, []).append(ev.ts)
            else:
                ctx.server_rst_times.setdefault(c.server, []).append(ev.ts)
        # an idle close: the server's FIN after its last complete response, with
        # no request outstanding, and before any client FIN
        fin = c.s.fin_ts
        if fin is not None and c.exchanges and (c.c.fin_ts is None or c.c.fin_ts > fin):
            done = [e for e in c.exchanges if e.complete and e.resp_end_ts is not None]
            if done:
                last = max(e.resp_end_ts for e in done)  # type: ignore[type-var]
                outstanding = any(
                    e.req_ts is not None and e.req_ts < fin and not e.complete for e in c.exchanges
                )
                if not outstanding and fin > last:
                    ctx.idle_closes.setdefault(c.server, []).append(fin - last)
    for v in (*ctx.syn_times.values(), *ctx.server_rst_times.values(), *ctx.refused_times.values()):
        v.sort()
    for srv, gaps in ctx.idle_closes.items():
        # at least 0.5 s: a close right after the response is not an idle timeout
        gaps = [g for g in gaps if g >= 0.5]
        if gaps:
            ctx.idle_timeout[srv] = statistics.median(gaps)
    return ctx


def _count_within(times: list[float], t: float, before: float, after: float) -> int:
    lo = bisect.bisect_left(times, t - before)
    hi = bisect.bisect_right(times, t + after)
    return hi - lo


def rst_facts(conn: Conn, ev: RstEvent, ctx: Context) -> dict[str, Fact]:
    """The facts that hold for one RST event, by name."""
    f: dict[str, Fact] = {}

    def add(name: str, text: str) -> None:
        f[name] = Fact(name, text)

    p0 = ev.packets[0]
    sender = conn.c if ev.from_client else conn.s
    side = "client (nginx side)" if ev.from_client else "server (backend side)"
    add("from_client" if ev.from_client else "from_server", f"RST sent from the {side}")
    if p0.flags & ACK:
        add("rst_with_ack", "RST carries the ACK flag")
    else:
        add("bare_rst", "bare RST (no ACK flag), as Linux answers a segment for a closed socket")
    if p0.seq_vs_peer_ack == 0:
        add("seq_is_peer_ack", "RST sequence number equals the peer's last ACK")
    if not p0.optlen:
        add("no_options", "RST carries no TCP options")
    if len(ev.packets) > 1:
        add("repeated_rst", f"{len(ev.packets)} RST packets in this event (answers to retransmissions)")

    # --- handshake
    if is_refused(conn, ev):
        add("rst_answers_syn", "the SYN was answered with RST,ACK: nothing listening on the port")
    if conn.hs_done and not conn.c.data_pkts and not conn.s.data_pkts and ev.phase == "handshake":
        add("rst_after_handshake", "RST right after the 3-way handshake, before any data")
    if conn.c.syn_retrans:
        add("syn_retransmitted", f"the client retransmitted its SYN {conn.c.syn_retrans} time(s)")
    if conn.s.synack > 1:
        add("synack_retransmitted", f"the server sent its SYN-ACK {conn.s.synack} times")
    if conn.syn_ts is not None and conn.server in ctx.syn_times:
        n = _count_within(ctx.syn_times[conn.server], conn.syn_ts, INSTANT_S, INSTANT_S)
        if n >= 4:
            add(
                "concurrent_connects",
                f"{n} connections to this server opened within {INSTANT_S * 1000:.0f} ms",
            )

    # --- where in the exchange
    if ev.outstanding and ev.phase == "request":
        add("request_outstanding", "a request was sent and no response had started")
    if ev.phase == "response":
        add("response_partial", "the response had started but was not complete")
    if ev.phase == "after_response":
        add(
            "after_complete_response",
            f"RST {ev.since_last_data_s or 0:.3f} s after a complete response, no new request",
        )
    if ev.phase == "idle":
        add("idle_connection", "the connection was idle (no request outstanding)")
    if ev.requests_before:
        add("reused_connection", f"{ev.requests_before} request(s) completed earlier on this connection")
    if ev.idle_before_s is not None and ev.idle_before_s >= RIGHT_AFTER_S:
        add("idle_gap", f"{ev.idle_before_s:.3f} s idle before the activity that ended in the RST")
    if not ev.from_client and ev.sender_fin_before:
        add("server_fin_before", "the server had sent a FIN before the RST")
    if ev.from_client and ev.sender_fin_before:
        add("client_fin_before", "the client had sent a FIN before the RST")
    if ev.peer_data_after_fin:
        who = "client" if not ev.from_client else "server"
        add("data_after_fin", f"the {who} sent data after the other side's FIN (they crossed)")
    if p0.ack is not None and not ev.from_client and conn.c.base is not None:
        acked = (p0.ack - conn.c.base) & 0xFFFFFFFF
        if acked < conn.c.max_end and conn.c.max_end - acked < 1 << 30:
            add("client_data_unacked", "the RST does not acknowledge all the data the client sent")

    # --- idle timeout
    to = ctx.idle_timeout.get(conn.server)
    if to is not None and ev.idle_before_s is not None and not ev.from_client:
        if abs(ev.idle_before_s - to) <= TIMEOUT_MATCH * to:
            add(
                "idle_matches_server_timeout",
                f"idle gap {ev.idle_before_s:.2f} s matches the server's idle timeout (~{to:.2f} s)",
            )

    # --- many resets at one instant, restart
    if not ev.from_client:
        times = ctx.server_rst_times.get(conn.server, [])
        n = _count_within(times, ev.ts, INSTANT_S, INSTANT_S)
        if n >= 3:
            add("mass_reset", f"{n} connections reset by the server within {INSTANT_S * 1000:.0f} ms")
        r = _count_within(ctx.refused_times.get(conn.server, []), ev.ts - 0.0, 0.0, 30.0)
        if r and not is_refused(conn, ev):
            add("refused_after", f"{r} refused connect(s) to this server within 30 s after")

    # --- does the RST fit the claimed sender's other packets?
    others = sender.ttls
    if others:
        if p0.ttl not in others:
            seen = "/".join(str(t) for t in sorted(others))
            add("ttl_mismatch", f"RST TTL {p0.ttl} differs from the sender's other packets ({seen})")
        else:
            add("ttl_consistent", f"RST TTL {p0.ttl} matches the sender's other packets")
    if p0.ipid >= 0 and sender.ipid_last >= 0 and p0.ipid not in (0,):
        gap = (p0.ipid - sender.ipid_last) & 0xFFFF
        if gap > 1024 and sender.ipid_last != 0:
            add("ipid_jump", f"RST IP ID {p0.ipid} far from the sender's sequence ({sender.ipid_last})")
    if ev.both_directions:
        add("rst_both_directions", "RSTs went towards both ends in the same instant")
    if ev.sender_data_after:
        add(
            "sender_data_after_rst",
            f"the 'resetting' side sent {ev.sender_data_after} data packet(s) after the RST",
        )
    if p0.in_window is False:
        add("rst_out_of_window", "RST sequence number is outside the sender's sequence space")
    return f
