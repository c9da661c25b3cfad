"""evidence: named facts about each RST event, computed once.

A *fact* is a name plus a sentence a person reads ("the backend answered the
SYN with RST,ACK"). :func:`rst_facts` returns the facts that hold for one RST
event; a fact that does not hold is simply absent. Cross-connection context
(bursts of connects, many resets at one instant, the backend's idle timeout,
round-trip times, the vantage point) is computed once per capture by
:func:`build_context`.

Nothing here decides a cause: that is :mod:`pcapreset.rules`. Which facts each
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
from array import array
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..capture.decode import ACK
from ..track.flows import Conn, Dir, RstEvent
from .conversation import GOODBYE_MAX, conn_app, conversation_facts, waiting_at
from .hosts import ODD_TTL_MAX, HostBase, host_bases

#: initial TTL / hop-limit families of common stacks (Linux/macOS 64, Windows 128,
#: network gear 255; 32 for a few embedded stacks)
TTL_FAMILIES = (32, 64, 128, 255)
#: packets within this window count as "the same instant" (a process exit closes all
#: its sockets in one pass, microseconds apart; 100 ms absorbs capture jitter)
INSTANT_S = 0.1
#: concurrent connects: this many SYNs to one server within INSTANT_S is a burst
BURST_CONNECTS = 4
#: this many server resets within INSTANT_S is a mass reset
MASS_RESETS = 3
#: a RST this soon after the last data is "right after" it: well under any server
#: idle timeout (>= 1 s in every server we know) and above delayed-ACK timers
#: (Linux 40-200 ms, Windows 200 ms)
RIGHT_AFTER_S = 1.0
#: scheduling slack between a segment's arrival and the RST it provokes: the kernel
#: answers in softirq (microseconds); a close() in the same event-loop turn takes
#: milliseconds. Added to the connection's round-trip time.
RACE_SLACK_S = 0.05
#: an idle gap matches the backend's idle timeout when within this fraction of it
#: (timers fire late by scheduling and tick granularity, e.g. gunicorn's 1 s loop)
TIMEOUT_MATCH = 0.25
#: idle closes shorter than this are "close after the response", not an idle timer
MIN_IDLE_CLOSE_S = 0.5
#: refused connects within this long after a server reset suggest a restart
RESTART_WINDOW_S = 30.0


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    text: str


def initial_ttl(ttl: int) -> int:
    """The initial TTL family a received TTL most likely started from."""
    for f in TTL_FAMILIES:
        if ttl <= f:
            return f
    return 255


def hops(ttl: int) -> int:
    return initial_ttl(ttl) - ttl


# ------------------------------------------------------------------ vantage
@dataclass
class Vantage:
    """Where the capture was taken, from the TTLs of each side's packets."""

    where: str
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


def side_ttl(d: Dir, conn: Conn | None = None, from_client: bool = True) -> int | None:
    """The usual TTL of one side's packets; falls back to its RSTs' TTL."""
    if d.ttls:
        return max(d.ttls, key=d.ttls.__getitem__)
    if conn is not None:
        for ev in conn.rst_events:
            for p in ev.packets:
                if p.from_client == from_client:
                    return p.ttl
    return None


def _where(ch: int | None, sh: int | None) -> str:
    if ch == 0 and sh == 0:
        return "same host or same link"
    if ch == 0:
        return "client host (nginx side)"
    if sh == 0:
        return "server host (backend side)"
    if ch is not None and sh is not None:
        return "in the path (neither end)"
    if ch is not None:
        return f"not the client host (client packets {ch} hop(s) away; server never answered)"
    if sh is not None:
        return f"not the server host (server packets {sh} hop(s) away)"
    return "unknown"


# ------------------------------------------------------------------ votes
#: where a connection stands in the report: the order engine.order_conns numbers
#: connections in, plus 0 for a vote about its client side, 1 for its server side
VoteKey = tuple[float, int, int, int]


def conn_order(c: Conn) -> tuple[float, int, int]:
    """The key :func:`pcapreset.engine.order_conns` sorts connections by."""
    return (c.start, c.client, c.server)


class Votes:
    """Counts per value, each with the key of its first voter in report order.

    :meth:`best` is ``Counter.most_common(1)`` over the connections in report
    order (the most votes; on a tie, the value voted for first), whatever order
    the votes came in: connections summarised early (:mod:`pcapreset.rollup`)
    and the ones kept give the same answer as counting them all in order.
    """

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v: dict[Hashable, list] = {}  # value -> [count, first VoteKey]

    def add(self, value: Hashable, key: VoteKey, n: int = 1) -> None:
        e = self.v.get(value)
        if e is None:
            self.v[value] = [n, key]
        else:
            e[0] += n
            if key < e[1]:
                e[1] = key

    def merge(self, other: Votes) -> None:
        for value, (n, key) in other.v.items():
            self.add(value, key, n)

    def copy(self) -> Votes:
        out = Votes()
        out.v = {k: list(e) for k, e in self.v.items()}
        return out

    def total(self) -> int:
        return sum(e[0] for e in self.v.values())

    def best(self) -> tuple | None:
        """(value, count) with the most votes, the first-voted on a tie; None if empty."""
        if not self.v:
            return None
        value, (n, _key) = min(self.v.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        return value, n

    def __bool__(self) -> bool:
        return bool(self.v)


def vantage_votes(c: Conn, pairs: Votes, conly: Votes, sonly: Votes) -> None:
    """One connection's vote for :func:`infer_vantage`."""
    ct = side_ttl(c.c, c, True)
    st = side_ttl(c.s, c, False)
    if ct is None and st is None:
        return
    key = (c.start, c.client, c.server, 0)
    if ct is not None and st is not None:
        pairs.add((hops(ct), hops(st)), key)
    elif ct is not None:
        conly.add(hops(ct), key)
    elif st is not None:
        sonly.add(hops(st), key)


def host_hop_votes(c: Conn, votes: dict[int, Votes]) -> None:
    """One connection's votes for :func:`_host_hops` (its client's and its server's)."""
    for side, host, d in ((0, c.client, c.c), (1, c.server, c.s)):
        if d.ttls:
            v = votes.get(host >> 16)
            if v is None:
                v = votes[host >> 16] = Votes()
            v.add(hops(max(d.ttls, key=d.ttls.__getitem__)), (c.start, c.client, c.server, side))


def infer_vantage(conns: list[Conn], rollup: Summarised | None = None) -> Vantage:
    """Majority over connections of (hops from client, hops from server).

    A packet that left a local stack carries its initial TTL (0 hops); one that
    crossed routers carries less. Connections where only one side sent anything
    (SYNs nobody answered) vote for that side only. ``rollup``: the votes of
    connections already summarised.
    """
    if rollup is not None:
        pairs, conly, sonly = rollup.pairs.copy(), rollup.conly.copy(), rollup.sonly.copy()
    else:
        pairs, conly, sonly = Votes(), Votes(), Votes()
    for c in conns:
        vantage_votes(c, pairs, conly, sonly)
    if pairs:
        (ch, sh), n = pairs.best()  # type: ignore[misc]
        total = pairs.total()
        basis = (
            f"client packets arrive {ch} hop(s) below their initial TTL, server packets {sh} "
            f"(in {n} of {total} connections)"
        )
        return Vantage(_where(ch, sh), ch, sh, basis)
    if conly:
        ch, n = conly.best()  # type: ignore[misc]
        basis = f"only client packets seen; they arrive {ch} hop(s) below their initial TTL"
        return Vantage(_where(ch, None), ch, None, basis)
    if sonly:
        sh, n = sonly.best()  # type: ignore[misc]
        basis = f"only server packets seen; they arrive {sh} hop(s) below their initial TTL"
        return Vantage(_where(None, sh), None, sh, basis)
    return Vantage("unknown", None, None, "no packets with a TTL")


# ------------------------------------------------------------------ context
@dataclass
class Context:
    """Per-capture facts used by the per-RST facts."""

    vantage: Vantage
    #: server endpoint -> sorted SYN times of its connections (array("d"): one
    #: per connection, evicted ones included)
    syn_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of RST events sent by the server (array("d"))
    server_rst_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted SYN times of connections with a retransmitted SYN
    #: or SYN-ACK (array("d"))
    retry_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of the server's FINs that came less than
    #: RIGHT_AFTER_S after its last data, on connections that then had a RST
    #: (no idle timer fires that soon: the server closed them for another reason)
    short_fins: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of refused connects (RST,ACK to a SYN; array("d"))
    refused_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> idle gaps (s) after which the server closed a keep-alive
    #: connection: its last response -> its FIN (array("d"))
    idle_closes: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> idle gaps (s) before requests the server reset as it closed
    race_gaps: dict[int, list[float]] = field(default_factory=dict)
    #: inferred idle timeout per server endpoint
    idle_timeout: dict[int, float] = field(default_factory=dict)
    #: server endpoint -> "idle closes" or "raced requests" (what the estimate rests on)
    idle_timeout_basis: dict[int, str] = field(default_factory=dict)
    #: server endpoint -> median handshake round-trip time (s)
    rtt: dict[int, float] = field(default_factory=dict)
    #: host (addr id) -> usual hop count of its non-RST packets, over all its flows
    host_hops: dict[int, int] = field(default_factory=dict)
    #: host (addr id) -> what its stack looks like over all its kept connections
    hosts: dict[int, HostBase] = field(default_factory=dict)


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


def last_response_end(conn: Conn) -> float | None:
    for e in reversed(conn.exchanges):
        if e.resp_end_ts is not None:
            return e.resp_end_ts
        if e.last_resp_ts is not None:
            return e.last_resp_ts
    return None


def conn_rtt(conn: Conn) -> float | None:
    """SYN -> the client's handshake ACK: one round trip from any vantage point."""
    if conn.syn_ts is not None and conn.hs_ts is not None and conn.hs_ts > conn.syn_ts:
        return conn.hs_ts - conn.syn_ts
    return None


def rtt_of(conn: Conn, ctx: Context) -> float:
    r = conn_rtt(conn)
    if r is None:
        r = ctx.rtt.get(conn.server, 0.0)
    return r


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


def _host_hops(conns: list[Conn], rollup: Summarised | None = None) -> dict[int, int]:
    """Host (addr id) -> the hop count most of its flows' packets arrive with."""
    votes: dict[int, Votes] = {}
    if rollup is not None:
        votes = {h: v.copy() for h, v in rollup.host_hops.items()}
    for c in conns:
        host_hop_votes(c, votes)
    return {h: v.best()[0] for h, v in votes.items()}  # type: ignore[index]


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


class ContextSamples:
    """What :func:`build_context`'s second pass takes from connections, per
    server endpoint: SYN times, the server's RST times and refused connects,
    idle close gaps (with the order key of the first connection that had one)
    and the idle gaps before raced requests.

    :meth:`add` takes one connection; a connection with its own round-trip
    time can be counted as soon as it is over (``packed.Packed``: nothing it
    adds depends on the rest of the capture), the others need the capture's
    median round-trip time, known at the end. Merging is order-free: the
    report sorts the times and takes medians, and keeps the least order key.
    """

    __slots__ = (
        "syn", "server_rst", "refused", "idle", "idle_first", "race", "retry", "short_fins",
    )  # fmt: skip

    def __init__(self) -> None:
        self.syn: dict[int, array] = {}
        self.server_rst: dict[int, array] = {}
        self.refused: dict[int, array] = {}
        self.idle: dict[int, array] = {}
        self.idle_first: dict[int, tuple[float, int, int]] = {}
        self.race: dict[int, list[float]] = {}
        self.retry: dict[int, array] = {}
        self.short_fins: dict[int, array] = {}

    @staticmethod
    def rtt_free(c: Conn) -> bool:
        """Whether :meth:`add` does not read ``rtt_s`` for ``c`` (no exchange:
        no idle close gap; at most one RST event: no follow-up)."""
        return not c.exchanges and len(c.rst_events) <= 1

    def add(self, c: Conn, rtt_s: float) -> None:
        """Count connection ``c``; ``rtt_s`` is ``rtt_of(c, ctx)``."""
        if c.syn_ts is not None:
            _samples(self.syn, c.server).append(c.syn_ts)
            if c.c.syn_retrans or c.s.synack >= 2:
                _samples(self.retry, c.server).append(c.syn_ts)
        if c.rst_events and short_idle_fin(c):
            _samples(self.short_fins, c.server).append(c.s.fin_ts)  # type: ignore[arg-type]
        for ev in c.rst_events:
            if ev.from_client or is_followup(c, ev, rtt_s):
                continue
            if is_refused(c, ev):
                _samples(self.refused, c.server).append(ev.ts)
            else:
                _samples(self.server_rst, c.server).append(ev.ts)
        gap = idle_close_gap(c, rtt_s)
        if gap is not None:
            _samples(self.idle, c.server).append(gap)
            self.first_idle(c.server, conn_order(c))
        first = c.rst_events[0] if c.rst_events else None
        if (
            first is not None
            and not first.from_client
            and first.outstanding
            and first.requests_before
            and first.idle_before_s is not None
            and first.idle_before_s >= RIGHT_AFTER_S
            and (first.exchange is None or first.exchange.resp_ts is None)
            and (not c.s.ttls or first.packets[0].ttl in c.s.ttls)  # not a forged RST
        ):
            self.race.setdefault(c.server, []).append(first.idle_before_s)

    def first_idle(self, srv: int, key: tuple[float, int, int]) -> None:
        known = self.idle_first.get(srv)
        if known is None or key < known:
            self.idle_first[srv] = key

    def merge(self, other: ContextSamples) -> None:
        for a, b in (
            (self.syn, other.syn),
            (self.idle, other.idle),
            (self.server_rst, other.server_rst),
            (self.refused, other.refused),
            (self.retry, other.retry),
            (self.short_fins, other.short_fins),
        ):
            for srv, arr in b.items():
                _samples(a, srv).extend(arr)
        for srv, xs in other.race.items():
            self.race.setdefault(srv, []).extend(xs)
        for srv, key in other.idle_first.items():
            self.first_idle(srv, key)


class PackedSamples(Protocol):
    """What :func:`build_context` reads of connections kept in packed form:
    their round-trip times and their :class:`ContextSamples`, per server."""

    rtts: dict[int, array]
    samples: ContextSamples
    host_bases: dict[int, HostBase]

    def __len__(self) -> int: ...


class Summarised(Protocol):
    """What the per-capture context reads of the connections no longer held
    one by one (the engine's rollup fills it as the capture is read): their
    votes, their samples per server endpoint (fresh containers at each
    read: the context extends them), and those packed."""

    @property
    def pairs(self) -> Votes: ...
    @property
    def conly(self) -> Votes: ...
    @property
    def sonly(self) -> Votes: ...
    @property
    def host_hops(self) -> dict[int, Votes]: ...
    @property
    def rtts(self) -> dict[int, array]: ...
    @property
    def syn_times(self) -> dict[int, array]: ...
    @property
    def idle_gaps(self) -> dict[int, array]: ...
    @property
    def idle_first(self) -> dict[int, tuple[float, int, int]]: ...
    @property
    def packed(self) -> PackedSamples: ...
    @property
    def host_bases(self) -> dict[int, HostBase]: ...


def build_context(conns: list[Conn], rollup: Summarised | None = None) -> Context:
    """The per-capture context over ``conns`` plus, with ``rollup``, the
    connections already summarised there (the same context as over all of them)."""
    ctx = Context(
        vantage=infer_vantage(conns, rollup),
        host_hops=_host_hops(conns, rollup),
        hosts=host_bases(conns)
        if rollup is None
        else host_bases(conns, rollup.host_bases, rollup.packed.host_bases),
    )
    packed = rollup.packed if rollup is not None else None
    # per-connection samples stay in arrays: a list of boxed floats per
    # evicted connection was the largest part of a report's memory. The
    # rollup's are read back from its blocks at each call: ours to extend
    rtts: dict[int, array] = {}
    if rollup is not None:
        rtts = rollup.rtts
    if packed:
        for srv, arr in packed.rtts.items():
            _samples(rtts, srv).extend(arr)
    for c in conns:
        r = conn_rtt(c)
        if r is not None:
            _samples(rtts, c.server).append(r)
    ctx.rtt = {k: median(v) for k, v in rtts.items()}
    del rtts  # (before the SYN times and idle gaps are read)
    s = ContextSamples()
    if rollup is not None:
        s.syn, s.idle, s.idle_first = rollup.syn_times, rollup.idle_gaps, rollup.idle_first
    if packed:
        s.merge(packed.samples)
    for c in conns:
        s.add(c, rtt_of(c, ctx))
    # idle closes per server, servers in the order of their first sample in
    # report order (the order of ctx.idle_timeout and of its ties)
    ctx.idle_closes = {srv: s.idle[srv] for srv in sorted(s.idle, key=s.idle_first.__getitem__)}
    ctx.syn_times = {srv: _sort(v) for srv, v in s.syn.items()}  # (s.syn is ours)
    ctx.server_rst_times = {srv: _sort(v) for srv, v in s.server_rst.items()}
    ctx.refused_times = {srv: _sort(v) for srv, v in s.refused.items()}
    ctx.retry_times = {srv: _sort(v) for srv, v in s.retry.items()}
    ctx.short_fins = {srv: _sort(v) for srv, v in s.short_fins.items()}
    ctx.race_gaps = s.race
    for srv in set(ctx.idle_closes) | set(ctx.race_gaps):
        if ctx.idle_closes.get(srv):
            ctx.idle_timeout[srv] = median(ctx.idle_closes[srv])
            ctx.idle_timeout_basis[srv] = "idle closes"
        elif len(ctx.race_gaps.get(srv, ())) >= 2:
            # a raced request came just before or just after the timer fired
            ctx.idle_timeout[srv] = median(ctx.race_gaps[srv])
            ctx.idle_timeout_basis[srv] = "raced requests"
    return ctx


def _samples(d: dict[int, array], srv: int) -> array:
    a = d.get(srv)
    if a is None:
        a = d[srv] = array("d")
    return a


def _sort(a: array) -> array:
    """``a`` (an array("d")) sorted in place."""
    if a:
        np.frombuffer(a, dtype=np.float64).sort()
    return a


def median(xs: Sequence[float]) -> float:
    """``statistics.median`` of floats (the same float), sorted in an array
    rather than in a list of boxed floats."""
    s = np.sort(np.asarray(xs, np.float64))
    n = len(s)
    if not n:
        raise ValueError("median of no data")
    if n % 2:
        return float(s[n // 2])
    i = n // 2
    return (float(s[i - 1]) + float(s[i])) / 2


#: this many short-idle server FINs (short_idle_fin) on reset connections
#: within RESTART_CLOSES_S of each other: the server closed them together
RESTART_CLOSES = 2
RESTART_CLOSES_S = 1.0


def short_idle_fin(c: Conn) -> bool:
    """The server's FIN came less than RIGHT_AFTER_S after its own last data:
    no idle timer (>= 1 s in every server we know) closed the connection."""
    fin, last = c.s.fin_ts, c.s.last_data_ts
    return fin is not None and last is not None and 0 <= fin - last < RIGHT_AFTER_S


#: a silent accept-queue overflow shows as several connection attempts with
#: SYN or SYN-ACK retransmissions within this long of each other (one lost
#: SYN or SYN-ACK is ordinary loss)
RETRY_BURST_S = 1.0
RETRY_BURST = 3


def retry_burst(conn: Conn, ctx: Context) -> bool:
    """``conn``'s SYN lies in a burst of connection attempts with retransmitted
    SYNs or SYN-ACKs to its server (RETRY_BURST within RETRY_BURST_S)."""
    times = ctx.retry_times.get(conn.server)
    if conn.syn_ts is None or not times:
        return False
    return _count_within(times, conn.syn_ts, RETRY_BURST_S, RETRY_BURST_S) >= RETRY_BURST


def _count_within(times: Sequence[float], t: float, before: float, after: float) -> int:
    lo = bisect.bisect_left(times, t - before)
    hi = bisect.bisect_right(times, t + after)
    return hi - lo


# ------------------------------------------------------------------ facts
#: an RST IP ID this close to the other end's counter was copied from its segment
PEER_IPID_NEAR = 16
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


def _http_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
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


def _exchange_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context, http: bool) -> None:
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


def _crossing_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
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


def _forgery_facts(f: _Facts, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """Does the RST fit the claimed sender's own stack (Weaver/Sommer/Paxson)?

    Judged against the sender's baseline (:class:`HostBase`): the TTLs its
    packets arrive with in this flow and in its other flows, its IP ID
    behaviour and the IP IDs of its other RSTs. A value the host's stack also
    produces elsewhere is no evidence; nor is any TTL when the host's packets
    carry TTL 1-2 (set on purpose, as eBGP speakers do: no distance to
    compare). TTLs within the flow are compared, so a capture on either host
    (where one side arrives un-decremented) is no evidence by itself.
    """
    p0 = ev.packets[0]
    sender = conn.c if ev.from_client else conn.s
    host = (conn.client if ev.from_client else conn.server) >> 16
    hb = ctx.hosts.get(host)
    host_ttls = hb.ttls if hb is not None else {}
    others = sender.ttls
    rst_hops = hops(p0.ttl)
    if others:
        seen = "/".join(str(t) for t in sorted(others))
        flow_hops = {hops(t) for t in others if t > ODD_TTL_MAX}
        if p0.ttl in others:
            f.add("ttl_consistent", f"RST TTL {p0.ttl} matches the sender's other packets")
        elif p0.ttl in host_ttls:
            f.add(
                "ttl_consistent",
                f"RST TTL {p0.ttl} differs from the sender's packets in this flow ({seen}) but "
                "is one its packets in other connections arrive with",
            )
        elif p0.ttl <= ODD_TTL_MAX or not flow_hops:
            f.add(
                "ttl_family_differs",
                f"RST TTL {p0.ttl} differs from the sender's other packets ({seen}), which "
                "are set on purpose (TTL 1-2, as eBGP and GTSM do): no distance to compare",
            )
        else:
            f.add(
                "ttl_mismatch",
                f"RST TTL {p0.ttl} ({rst_hops} hop(s) below its initial TTL) differs from "
                f"every TTL of the sender's packets ({seen}) in this and its other flows: "
                "another stack sent it",
            )
    elif hb is not None and hb.hop_counts() and p0.ttl > ODD_TTL_MAX:
        if p0.ttl in host_ttls or rst_hops in hb.hop_counts():
            f.add("ttl_consistent", f"RST TTL {p0.ttl} fits this host's packets in other flows")
        else:
            usual = "/".join(str(h) for h in sorted(hb.hop_counts()))
            f.add(
                "ttl_mismatch_host",
                f"RST arrives {rst_hops} hop(s) below its initial TTL; this host's packets "
                f"in other connections arrive {usual} hop(s) below",
            )
    before = ev.sender_ipid if ev.sender_ipid > 0 else sender.ipid_last
    if p0.ipid > 0 and before > 0:
        gap = (p0.ipid - before) & 0xFFFF
        if gap > 1024:
            f.add(
                "ipid_jump",
                f"RST IP ID {p0.ipid} far from the sender's sequence ({before}); no evidence alone",
            )
            kind = hb.ipid_kind() if hb is not None else "unknown"
            if kind == "counter" and hb is not None and hb.rst_zero:
                # the host's packets count up and its other RSTs carry IP ID 0
                # (Linux: the socket's counter for its own RST, 0 for the
                # kernel's stateless one): a far-off non-zero ID is neither
                f.add(
                    "rst_shape_mismatch",
                    f"RST IP ID {p0.ipid} is neither 0, as this host's {hb.rst_zero} other "
                    f"RST(s) in the capture, nor near its packets' counter "
                    f"({sender.ipid_last}): not this host's stack",
                )
    if (
        "ipid_jump" in f
        and ev.sender_ipid > 0
        and ev.peer_ipid > 0
        and min((p0.ipid - ev.peer_ipid) & 0xFFFF, (ev.peer_ipid - p0.ipid) & 0xFFFF)
        <= PEER_IPID_NEAR
    ):
        # an injector that builds its RST from the segment it intercepted
        # copies that segment's IP ID: the other end's counter, not the sender's
        f.add(
            "rst_ipid_of_peer",
            f"RST IP ID {p0.ipid} is the other end's counter ({ev.peer_ipid}), not the "
            f"claimed sender's ({before}): built from an intercepted segment",
        )
    after = sender.ipid_last
    if (
        ev.sender_data_after
        and p0.ipid > 0
        and after > 0
        and hb is not None
        and hb.ipid_kind() == "counter"
        and ((after - p0.ipid) & 0xFFFF) > 1024
        and ((p0.ipid - after) & 0xFFFF) > 1024
    ):
        # the sender kept sending after the RST, its IP ID counter running
        # on to `after`: had it sent the RST, `after` would be a few steps
        # past the RST's IP ID
        f.add(
            "ipid_counter_skips_rst",
            f"the sender's IP ID counter runs on to {after} after the RST (IP ID {p0.ipid}), "
            "not from it: the RST is not in its sequence",
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
    _exchange_facts(f, conn, ev, ctx, conn_app(conn) == "http")
    _timing_facts(f, conn, ev, ctx)
    _forgery_facts(f, conn, ev, ctx)
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
        "socket_reset_before", "message_crossed_close", "restart_closes",
        "rst_both_directions", "sender_data_after_rst", "rst_out_of_window",
        "app_http", "app_websocket", "app_tls", "app_other", "app_none",
        "server_spoke_first", "no_request", "syn_seen", "odd_handshake", "nothing_in_flight",
        "health_check_request", "both_spoke",
        "peer_spoke_last", "sender_spoke_last", "peer_data_unread", "own_data_unacked",
        "peer_goodbye_unread", "own_goodbye_unacked", "peer_closed_first",
        "response_ended_by_fin", "syn_retries_refused",
        "late_segment_no_request",
    }
)  # fmt: skip


@dataclass(frozen=True)
class IdleSummary:
    """The backend idle timeout estimate for one server (see :func:`idle_summary`)."""

    server: int
    timeout_s: float
    min_s: float
    max_s: float
    samples: int
    basis: str
    race_gaps: list[float]


def idle_summary(ctx: Context) -> IdleSummary | None:
    """The backend idle timeout estimate for the server with the most samples.

    ``basis`` says what it rests on: "idle closes" (last response -> server FIN,
    exact) or "raced requests" (idle gap before requests the server reset as it
    closed: a lower bound within one round trip).
    """
    if not ctx.idle_timeout:
        return None

    def samples(srv: int) -> Sequence[float]:
        if ctx.idle_timeout_basis.get(srv) == "idle closes":
            return ctx.idle_closes[srv]
        return ctx.race_gaps.get(srv, [])

    srv = max(ctx.idle_timeout, key=lambda k: len(samples(k)))
    xs = samples(srv)
    return IdleSummary(
        server=srv,
        timeout_s=ctx.idle_timeout[srv],
        min_s=min(xs),
        max_s=max(xs),
        samples=len(xs),
        basis=ctx.idle_timeout_basis[srv],
        race_gaps=sorted(ctx.race_gaps.get(srv, [])),
    )
