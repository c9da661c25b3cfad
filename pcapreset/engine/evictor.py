"""evictor: connections that are over folded into a rollup as the capture is read."""

from __future__ import annotations

import numpy as np

from ..capture.tcp import TcpBatch
from ..track.conn import Conn, conn_keys, freeze_conn
from ..track.flows import FlowTracker
from .fold import split as rollup_split
from .packed import packable
from .rollup import Rollup

#: a closed connection is evicted once the capture clock is this far past the
#: moment Zeek would drop it (packets a little out of order still find it)
EVICT_SLACK_S = 1.0
#: look for connections to evict when the capture clock advanced this much
SWEEP_EVERY_S = 1.0
#: ... and the packets fed since the last look are at least this fraction of
#: the connections it looks at (bounds the scans' cost by the packets')
SWEEP_WORK = 0.5
#: drop evicted connections from tracker.conns once they are this share of it
COMPACT_SHARE = 0.25
#: pack the slimmed reset connections (pcapreset.engine.packed) beyond this
#: many held whole, the oldest first: a short capture's report never unpacks
#: any (~3.5 KB each whole, ~1.5 KB packed; packing, unpacking and the packed
#: record's encoding cost ~45-60 us each). Only the excess is packed: of the
#: 1,129 resets of the 1M bench file, 105.
PACK_AFTER = 1024
#: a connection attempt whose handshake never completed (SYNs and SYN-ACKs
#: only) is folded into the rollup once it had no packet for this long: a
#: Linux client gives up 127 s after its first SYN (tcp_syn_retries 6), its
#: last wait 64 s; a listener drops a request after ~63 s (tcp_synack_retries 5)
ATTEMPT_IDLE_S = 130.0
#: ... and at most this many are tracked, as a kernel's SYN queue holds a
#: bounded number (tcp_max_syn_backlog): beyond it the oldest are folded, down
#: to half of it. Bounds the memory of a SYN flood (~3 KB per attempt tracked)
ATTEMPT_CAP = 8192
#: look for idle attempts when the capture clock advanced this much
ATTEMPT_SWEEP_S = 10.0
#: a batch is fed and evicted after in pieces of at most this many packets
#: (:meth:`Evictor.feed`)
FEED_MAX = 8192


class Evictor:
    """Folds connections that are over into a :class:`~pcapreset.rollup.Rollup`.

    Driven from the outside after each batch (:meth:`after`): the flow tracker
    stays pure. A connection is evicted when it is closed and past Zeek's
    close delay (``zk.delete_at``; a packet of its 4-tuple after that starts a
    new connection, so it can change no more) by :data:`EVICT_SLACK_S`, has no
    RST event, no finding, and its own round-trip time: then the report needs
    only what :meth:`Rollup.add` keeps. It leaves ``tracker.active`` (or
    ``collided``) at once and ``tracker.conns`` at the next :meth:`compact`.

    New connections' provisional ids (their creation index, used by the live
    verdict stream) are kept as they would be without eviction. If a packet
    older than an evicted connection's close arrives later (a capture whose
    clock goes backwards), ``rollup.reordered`` is set, and each connection
    that begins before the latest evicted one ended is counted in
    ``rollup.late`` (a warning says it may be a late packet of an evicted
    one); eviction stays on, so memory stays bounded.

    A connection attempt that never completes is evicted too, as a kernel's
    SYN queue drops it (:func:`expired_attempts`).

    A connection with a RST event is kept for the report; once it is over
    (the same test) it leaves the tracker's tables and is slimmed
    (:func:`pcapreset.flows.freeze_conn`). Those that can be packed beyond
    :data:`PACK_AFTER` held are packed, the oldest first (``rollup.packed``,
    :mod:`pcapreset.packed`), and leave ``tracker.conns`` too.
    """

    def __init__(self, tracker: FlowTracker, rollup: Rollup | None = None) -> None:
        self.ft = tracker
        self.rollup = rollup if rollup is not None else Rollup()
        self.clock = float("-inf")  # the latest packet time seen
        self.next_sweep = float("-inf")
        self.work = 0  # packets since the last sweep
        #: connections that may still be evicted (no RST event, not yet over)
        self.watch: list[Conn] = []
        self.seen = 0  # tracker.conns[:seen] are in watch or settled
        self.removed = 0  # connections removed from tracker.conns so far
        self.dead: set[int] = set()  # id() of evicted ones still in tracker.conns
        self.evicted_until = float("-inf")  # the latest delete_at evicted or frozen
        self.shared: dict = {}  # containers frozen connections share (flows.freeze_conn)
        self.frozen: list[Conn] = []  # slimmed ones that packing takes (packed.packable)
        self.pack_after = PACK_AFTER
        #: sweep once the watch list is this long, whatever the clock (a flood
        #: of new connections in little capture time)
        self.watch_limit = 2 * ATTEMPT_CAP
        self.next_attempt_sweep = float("-inf")

    def feed(self, b: TcpBatch) -> None:
        """Feed the tracker batch ``b`` and evict after it, in pieces of at
        most :data:`FEED_MAX` packets: a batch of many new connections (a SYN
        flood: ~60,000 in a 4 MB chunk) is not tracked whole before any of
        them can be folded."""
        n = len(b)
        if n <= FEED_MAX:
            self.ft.feed(b)
            self.after(b.ts)
            return
        for lo in range(0, n, FEED_MAX):
            part = b.part(lo, min(n, lo + FEED_MAX))
            self.ft.feed(part)
            self.after(part.ts)

    def after(self, ts: np.ndarray) -> None:
        """Call after the tracker was fed a batch with packet times ``ts``."""
        self._take_new()
        n = len(ts)
        if not n:
            return
        lo, hi = float(ts.min()), float(ts.max())
        if lo < self.evicted_until:
            self.rollup.reordered = True
        if hi > self.clock:
            self.clock = hi
        self.work += n
        if self.work >= SWEEP_WORK * len(self.watch) and (
            self.clock >= self.next_sweep or len(self.watch) > self.watch_limit
        ):
            self.next_sweep = self.clock + SWEEP_EVERY_S
            self.work = 0
            self.sweep(self.clock - EVICT_SLACK_S)

    def _take_new(self) -> None:
        """Watch the connections created since the last call."""
        conns = self.ft.conns
        if len(conns) > self.seen:
            new = conns[self.seen :]
            if self.removed:
                for c in new:
                    c.id += self.removed  # created as len(tracker.conns)
            until = self.evicted_until
            if until > float("-inf"):
                # (a packet older than a folded connection's end that found no
                # connection: it may have been that connection's)
                self.rollup.late += sum(1 for c in new if c.start < until)
            self.watch += new
            self.seen = len(conns)

    def sweep(self, horizon: float) -> None:
        """Evict the watched connections that are over by ``horizon``, and
        connection attempts that are over as a kernel would see them
        (:func:`expired_attempts`)."""
        keep, out, frozen = rollup_split(self.watch, horizon)
        if len(keep) > ATTEMPT_CAP or self.clock >= self.next_attempt_sweep:
            self.next_attempt_sweep = self.clock + ATTEMPT_SWEEP_S
            keep, idle, flood = expired_attempts(keep, horizon - ATTEMPT_IDLE_S, ATTEMPT_CAP)
            out += idle  # (folded as any connection: the report is the same)
            if flood:
                self.rollup.attempts += len(flood)
                self._evict(flood, hostless=True)
        self.watch = keep
        self.watch_limit = max(2 * ATTEMPT_CAP, 2 * len(keep))
        if frozen:
            reachable = self._untrack(frozen)
            for c in frozen:
                if id(c) not in reachable:  # (else its key collides: left whole)
                    freeze_conn(c, self.shared)
                    if packable(c):
                        self.frozen.append(c)
            if len(self.frozen) > self.pack_after:
                self._pack()
        if out:
            self._evict(out)

    def _pack(self) -> None:
        # the oldest beyond the first PACK_AFTER: as many stay whole as the
        # threshold says, so a capture just past it packs only its excess
        k = len(self.frozen) - self.pack_after
        packing, self.frozen = self.frozen[:k], self.frozen[k:]
        self.rollup.packed.add(packing)
        dead = self.dead
        for c in packing:
            dead.add(id(c))
        if len(dead) >= COMPACT_SHARE * len(self.ft.conns):
            self.compact()

    def _evict(self, out: list[Conn], hostless: bool = False) -> None:
        dead = self.dead
        self.rollup.add_many(out, hostless)
        for c in out:
            dead.add(id(c))
        self._untrack(out)
        if len(dead) >= COMPACT_SHARE * len(self.ft.conns):
            self.compact()

    def _untrack(self, out: list[Conn]) -> set[int]:
        """Take connections that are over out of the tracker's tables; returns
        the id() of those left in ``active`` (a key another 4-tuple shares)."""
        ft = self.ft
        active, collided = ft.active, ft.collided
        keys = conn_keys(
            np.fromiter((c.client for c in out), np.int64, len(out)),
            np.fromiter((c.server for c in out), np.int64, len(out)),
        ).tolist()
        shared: set[int] = set()
        if collided:
            # a key two 4-tuples share must stay in `active`: the other one's
            # packets find their connection in `collided` through it
            lo_hi = list(collided)
            shared = set(
                conn_keys(
                    np.array([t[0] for t in lo_hi], np.int64),  # type: ignore[index]
                    np.array([t[1] for t in lo_hi], np.int64),  # type: ignore[index]
                ).tolist()
            )
        until = self.evicted_until
        left: set[int] = set()
        for c, k in zip(out, keys, strict=True):
            if active.get(k) is c:
                if k not in shared:
                    del active[k]
                else:
                    left.add(id(c))
            elif collided:
                t = (c.client, c.server) if c.client < c.server else (c.server, c.client)
                if collided.get(t) is c:
                    del collided[t]
            if until < c.zk.delete_at < _INF:
                until = c.zk.delete_at
        self.evicted_until = until
        return left

    def compact(self) -> None:
        """Remove the evicted connections from ``tracker.conns`` (in place)."""
        dead = self.dead
        if not dead:
            return
        self._take_new()
        conns = self.ft.conns
        conns[:] = [c for c in conns if id(c) not in dead]
        self.removed += len(dead)
        self.seen = len(conns)
        dead.clear()


_INF = float("inf")


def half_open(c: Conn) -> bool:
    """A connection attempt whose handshake never completed: SYNs and
    SYN-ACKs only (no data, FIN or RST; no finding can come of it)."""
    cl, sv = c.c, c.s
    return (
        not c.hs_done
        and cl.pkts == cl.syn
        and sv.pkts == sv.synack
        and not c.rst_events
        and (cl.syn_retrans == 0 or sv.synack == 0)  # (findings._silent_backlog)
    )


def expired_attempts(
    watch: list[Conn], idle_before: float, cap: int
) -> tuple[list[Conn], list[Conn], list[Conn]]:
    """(the connections of ``watch`` to keep, the half-open attempts with no
    packet since ``idle_before``, the oldest others beyond ``cap // 2`` when
    more than ``cap`` are left: a flood)."""
    attempts = [c for c in watch if half_open(c)]
    if not attempts:
        return watch, [], []
    idle = [c for c in attempts if c.end < idle_before]
    flood: list[Conn] = []
    left = len(attempts) - len(idle)
    if left > cap:
        rest = sorted((c for c in attempts if c.end >= idle_before), key=_last_packet)
        flood = rest[: left - cap // 2]
    if not idle and not flood:
        return watch, [], []
    out = {id(c) for c in idle} | {id(c) for c in flood}
    return [c for c in watch if id(c) not in out], idle, flood


def _last_packet(c: Conn) -> float:
    return c.end
