"""context: what a capture says as a whole, computed once before any reset is read.

Per server endpoint: SYN times (bursts of connects), the server's RST times
(mass resets), refused connects, idle closes and the idle timeout they
show, round-trip times; per host: its usual hop count; the vantage point.
:func:`build_context` computes it over the connections held plus those the
engine summarised (:class:`Summarised`), from what each connection shows by
itself (:mod:`pcapreset.interpret.readings`).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..track.conn import Conn
from .hosts import HostBase, host_bases
from .readings import (
    conn_rtt,
    handshake_ack_dropped,
    idle_close_gap,
    is_followup,
    is_refused,
    short_idle_fin,
)
from .thresholds import RIGHT_AFTER_S
from .vantage import Vantage, VantageVotes, Votes, conn_order, host_hop_votes, infer_vantage


@dataclass
class Context:
    """Per-capture facts used by the per-RST facts."""

    vantage: Vantage
    #: server endpoint -> sorted SYN times of its connections (array("d"): one
    #: per connection, evicted ones included)
    syn_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of RST events sent by the server (array("d"))
    server_rst_times: dict[int, Sequence[float]] = field(default_factory=dict)
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
    #: host (addr id) -> what its stack looks like over all its connections
    hosts: dict[int, HostBase] = field(default_factory=dict)
    #: server endpoint -> sorted SYN times of connections with a retransmitted SYN
    #: or SYN-ACK (array("d"))
    retry_times: dict[int, Sequence[float]] = field(default_factory=dict)
    #: server endpoint -> sorted times of the server's FINs that came less than
    #: RIGHT_AFTER_S after its last data, on connections that then had a RST
    #: (no idle timer fires that soon: the server closed them for another reason)
    short_fins: dict[int, Sequence[float]] = field(default_factory=dict)


def rtt_of(conn: Conn, ctx: Context) -> float:
    r = conn_rtt(conn)
    if r is None:
        r = ctx.rtt.get(conn.server, 0.0)
    return r


def _host_hops(conns: list[Conn], rollup: Summarised | None = None) -> dict[int, int]:
    """Host (addr id) -> the hop count most of its flows' packets arrive with."""
    votes: dict[int, Votes] = {}
    if rollup is not None:
        votes = {h: v.copy() for h, v in rollup.host_hops.items()}
    for c in conns:
        host_hop_votes(c, votes)
    return {h: v.best()[0] for h, v in votes.items()}  # type: ignore[index]


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
            if c.c.syn_retrans or c.s.synack >= 2 or handshake_ack_dropped(c):
                _samples(self.retry, c.server).append(c.syn_ts)
        if c.rst_events and short_idle_fin(c):
            _samples(self.short_fins, c.server).append(c.s.fin_ts)  # type: ignore[arg-type]
        self.add_resets(c, rtt_s)
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

    def add_resets(self, c: Conn, rtt_s: float) -> None:
        """The server's RSTs of ``c`` (refused connects apart), follow-ups not counted."""
        for ev in c.rst_events:
            if ev.from_client or is_followup(c, ev, rtt_s):
                continue
            if is_refused(c, ev):
                _samples(self.refused, c.server).append(ev.ts)
            else:
                _samples(self.server_rst, c.server).append(ev.ts)

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


class Summarised(VantageVotes, Protocol):
    """What the per-capture context reads of the connections no longer held
    one by one (the engine's rollup fills it as the capture is read): their
    votes, their samples per server endpoint (fresh containers at each
    read: the context extends them), and those packed."""

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

    def rows_from(self, k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Its rows from row ``k`` on, a block at a time (floats: start,
        round-trip time, SYN time, idle close gap; integers: client, server, vote)."""
        ...


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


#: a silent accept-queue overflow shows as several connection attempts with
#: SYN or SYN-ACK retransmissions within this long of each other (one lost
#: SYN or SYN-ACK is ordinary loss)
RETRY_BURST_S = 1.0
RETRY_BURST = 3
#: this many short-idle server FINs (short_idle_fin) on reset connections
#: within RESTART_CLOSES_S of each other: the server closed them together
RESTART_CLOSES = 2
RESTART_CLOSES_S = 1.0


def retry_burst(conn: Conn, ctx: Context) -> bool:
    """``conn``'s SYN lies in a burst of connection attempts with retransmitted
    SYNs or SYN-ACKs to its server (RETRY_BURST within RETRY_BURST_S)."""
    times = ctx.retry_times.get(conn.server)
    if conn.syn_ts is None or not times:
        return False
    lo = bisect.bisect_left(times, conn.syn_ts - RETRY_BURST_S)
    hi = bisect.bisect_right(times, conn.syn_ts + RETRY_BURST_S)
    return hi - lo >= RETRY_BURST


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
