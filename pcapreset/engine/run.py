"""engine: wires the offline pipeline together.

    sources (files -> FrameBatch) -> decode (-> TcpBatch) -> merge by time
    -> flows (FlowTracker) -> EngineResult

Evidence, rules and the report work on the :class:`EngineResult`.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..capture.decode import (
    SUPPORTED_LINKTYPES,
    AddressBook,
    Decoder,
    DecodeStats,
    TcpBatch,
    concat,
)
from ..capture.decode import linktype_name as linktype_name
from ..capture.sources import CaptureReader, FrameBatch, SourceInfo
from ..errors import CaptureError
from ..interpret.evidence import conn_order
from ..track.flows import Conn, FlowTracker, RstEvent, conn_keys, freeze_conn
from .packed import packable
from .rollup import Rollup
from .rollup import split as rollup_split

#: Called as progress(bytes_done, bytes_total, packets_done)
Progress = Callable[[int, int, int], None]


@dataclass
class EngineResult:
    sources: list[SourceInfo]
    decode: DecodeStats
    conns: list[Conn]
    book: AddressBook
    port: int | None
    packets: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    warnings: list[dict] = field(default_factory=list)
    live: dict | None = None  # kernel drop counts etc. for live captures
    #: connections summarised and dropped during the run (run(..., evict=True));
    #: ``conns`` then holds only the others, with the ids they have among all
    rollup: Rollup | None = None

    def endpoint(self, key: int) -> str:
        return self.book.endpoint(key)

    def each_conn(self) -> Iterator[tuple[Conn, int | None]]:
        """Every connection kept for the report, in report order, with where
        it is packed: those kept whole (``conns``, None) and the packed ones
        (:mod:`pcapreset.packed`, their index), unpacked one at a time."""
        packed = self.rollup.packed if self.rollup is not None else None
        whole = ((c, None) for c in self.conns)
        if not packed:
            return whole
        return heapq.merge(whole, packed.conns(), key=_pair_order)


def _pair_order(pair: tuple[Conn, int | None]) -> tuple[float, int, int]:
    return conn_order(pair[0])


def open_readers(paths: Sequence[str]) -> list[CaptureReader]:
    if not paths:
        raise CaptureError("no capture file given")
    readers = []
    try:
        for i, p in enumerate(paths):
            r = CaptureReader(os.fspath(p), file_index=i)
            readers.append(r)
            lts = r.info.linktypes
            if r.info.file_format.startswith("pcap") and r.info.file_format != "pcapng":
                if lts and lts[0] not in SUPPORTED_LINKTYPES:
                    raise CaptureError(
                        f"{p}: unsupported link type {linktype_name(lts[0])}; "
                        "pcapreset reads Ethernet, Linux cooked (SLL/SLL2), raw IP and BSD loopback"
                    )
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers


def probe_inputs(paths: Sequence[str]) -> int:
    """Open every input once, so bad input fails fast with the usual one-line
    error before any worker process starts; returns their total size in bytes."""
    readers = open_readers(paths)
    total = sum(r.size for r in readers)
    for r in readers:
        r.close()
    return total


def decoded_timeline(readers: list[CaptureReader], dec: Decoder) -> Iterator[TcpBatch]:
    """Every reader's frames, decoded, merged into one timeline."""
    return merge_by_time([_decoded(r, dec) for r in readers])


def _decoded(reader: CaptureReader, dec: Decoder) -> Iterator[TcpBatch]:
    for fb in reader.batches():
        yield dec.decode(fb)


def merge_by_time(streams: list[Iterator[TcpBatch]]) -> Iterator[TcpBatch]:
    """Merge per-file batch streams into one timeline (watermark merge).

    Files that do not overlap in time (rotated sets) pass through unsorted;
    overlapping ones are interleaved by timestamp, batch by batch.
    """
    if len(streams) == 1:
        yield from streams[0]
        return
    pending: list[TcpBatch | None] = []

    def pull(it: Iterator[TcpBatch]) -> TcpBatch | None:
        for b in it:
            if len(b):
                return b
        return None

    pending = [pull(s) for s in streams]
    while True:
        live = [i for i, b in enumerate(pending) if b is not None]
        if not live:
            return
        wm = min(float(pending[i].ts.max()) for i in live)  # type: ignore[union-attr]
        parts = []
        for i in live:
            b = pending[i]
            assert b is not None
            m = b.ts <= wm
            if m.all():
                parts.append(b)
                pending[i] = pull(streams[i])
            elif m.any():
                parts.append(b.take(np.nonzero(m)[0]))
                pending[i] = b.take(np.nonzero(~m)[0])
        if not parts:
            continue
        if len(parts) == 1:
            yield parts[0]
            continue
        merged = concat(parts)
        order = np.argsort(merged.ts, kind="stable")
        yield merged.take(order)


#: files smaller than this are analysed in one process (start-up costs more)
AUTO_JOBS_MIN_BYTES = 64 << 20


#: below this many CPUs sharding does not pay: every worker still reads and
#: decodes the whole input (measured on 2 cores: 3.5 s with 2 jobs vs 2.6 s with 1)
AUTO_JOBS_MIN_CPUS = 4


def auto_jobs(paths: Sequence[str]) -> int:
    """Processes to use by default: 1 for small inputs or few CPUs, else up to 4."""
    cpus = os.cpu_count() or 1
    if cpus < AUTO_JOBS_MIN_CPUS:
        return 1
    try:
        size = sum(os.path.getsize(p) for p in paths)
    except OSError:
        return 1
    if size < AUTO_JOBS_MIN_BYTES:
        return 1
    return min(cpus, 4)


def run(
    paths: Sequence[str],
    port: int | None = None,
    progress: Progress | None = None,
    tracker: FlowTracker | None = None,
    jobs: int = 1,
    pipelined: bool = False,
    evict: bool = False,
) -> EngineResult:
    """Read, decode and rebuild connections for one or several capture files.

    ``jobs`` > 1 shards connection tracking across processes (see
    :mod:`pcapreset.shard`); ``pipelined`` reads and decodes in a forked child
    while this process tracks connections (:mod:`pcapreset.pipeline`; used by
    the one-shot CLI, not by default in library calls, since forking a
    process that runs threads — a notebook kernel — is unsafe). Either way
    the result is identical to one process.

    ``evict``: fold connections that are over and need nothing more into
    ``result.rollup`` and drop them (see :class:`Evictor`), so memory stays
    flat however long the capture; ``result.conns`` then holds only the
    others. The report built from it is the same. Ignored with ``tracker``.
    """
    evict = evict and tracker is None
    if jobs > 1 and tracker is None:
        from .shard import run_sharded

        res = run_sharded(list(paths), port, jobs, progress, evict)
    elif pipelined and tracker is None and _pipeline_usable(paths):
        from . import pipeline

        res = pipeline.run_pipelined(list(paths), port, progress, evict)
    else:
        readers = open_readers(paths)
        book = AddressBook()
        dec = Decoder(book)
        ft = tracker or FlowTracker(port=port, server_ports=[port] if port else [])
        total = sum(r.size for r in readers)
        with paused_gc():
            res = _run_one(readers, dec, ft, total, progress, port, evict)
    if res.rollup is not None and res.rollup.reordered:
        # the capture's clock went back behind an evicted connection: its
        # packets may have belonged to it; analyse again keeping everything
        return run(paths, port, progress, None, jobs, pipelined, evict=False)
    return res


def _pipeline_usable(paths: Sequence[str]) -> bool:
    from . import pipeline

    return pipeline.usable(list(paths))


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while connections are built and reported.

    The tracker allocates many small long-lived objects; the cyclic GC would
    rescan them again and again (measured: ~10-15% of a run). Nothing in the
    pass builds garbage cycles that need collecting before it ends.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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
#: pack the slimmed reset connections (pcapreset.packed) beyond this many
#: held whole, the oldest first: a short capture's report never unpacks any
#: (~3.5 KB each whole, ~1.5 KB packed; packing, unpacking and the packed
#: record's encoding cost ~45-60 us each). Until the sixth session every
#: held one was packed once the count passed the threshold: with the reader
#: child tracking no share (pipeline.CHILD_BUCKETS), all 1,129 resets of
#: the 1M bench file were then in the parent's evictor and 1,033 were packed,
#: 0.05-0.06 s of a 0.6 s run; now 105 are.
PACK_AFTER = 1024


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
    clock goes backwards), ``rollup.reordered`` is set: :func:`run` then
    analyses again without eviction.

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
        if self.clock >= self.next_sweep and self.work >= SWEEP_WORK * len(self.watch):
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
            self.watch += new
            self.seen = len(conns)

    def sweep(self, horizon: float) -> None:
        """Evict the watched connections that are over by ``horizon``."""
        keep, out, frozen = rollup_split(self.watch, horizon)
        self.watch = keep
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

    def _evict(self, out: list[Conn]) -> None:
        dead = self.dead
        self.rollup.add_many(out)
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
            if c.zk.delete_at > until:
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


def _run_one(readers, dec, ft, total, progress, port, evict=False) -> EngineResult:
    ev = Evictor(ft) if evict else None
    try:
        for b in decoded_timeline(readers, dec):
            ft.feed(b)
            if ev is not None:
                ev.after(b.ts)
            if progress is not None:
                progress(sum(r.bytes_read() for r in readers), total, dec.stats.frames)
    finally:
        for r in readers:
            r.close()
    return finish(ft, dec, [r.info for r in readers], port, ev)


def run_batches(
    batches: Iterable[FrameBatch],
    infos: list[SourceInfo],
    port: int | None = None,
    on_rst: Callable[[RstEvent], None] | None = None,
    on_batch: Callable[[FlowTracker, Decoder, Rollup | None], None] | None = None,
    evict: bool = True,
) -> EngineResult:
    """The same pipeline as :func:`run` over an iterator of FrameBatches (live capture).

    ``infos`` are the sources' :class:`SourceInfo` objects, read when the
    iterator is exhausted. ``on_rst`` sees each new RstEvent as it is found;
    ``on_batch(tracker, decoder, rollup)`` runs after every batch, empty ones
    included (a live source yields empty batches on its clock tick); with
    ``evict`` (see :func:`run`) ``rollup`` holds the connections no longer in
    ``tracker.conns``, else it is None.
    """
    dec = Decoder(AddressBook())
    ft = FlowTracker(port=port, server_ports=[port] if port else [])
    ft.on_rst = on_rst
    ev = Evictor(ft) if evict else None
    for fb in batches:
        if len(fb.off):
            b = dec.decode(fb)
            ft.feed(b)
            if ev is not None:
                ev.after(b.ts)
        if on_batch is not None:
            if ev is not None:
                ev.compact()  # tracker.conns without the connections in the rollup
            on_batch(ft, dec, None if ev is None else ev.rollup)
    return finish(ft, dec, infos, port, ev)


def order_conns(conns: list[Conn], rollup: Rollup | None = None) -> list[Conn]:
    """Deterministic order and ids: by start time, then endpoints.

    With ``rollup``, the ids are the ranks among all connections, the evicted
    ones included: what they would be without eviction.
    """
    conns.sort(key=conn_order)
    if rollup is None or not (rollup.count or rollup.packed):
        for i, c in enumerate(conns):
            c.id = i
    else:
        for c, rank in zip(conns, rollup.ranks(conns), strict=True):
            c.id = rank
    return conns


def finish(
    ft: FlowTracker,
    dec: Decoder,
    infos: list[SourceInfo],
    port: int | None,
    ev: Evictor | None = None,
) -> EngineResult:
    if ev is not None:
        ev.compact()
    return assemble(
        ft.finish(), dec.stats, dec.book, infos, port, None if ev is None else ev.rollup
    )


def assemble(
    conns: list[Conn],
    st: DecodeStats,
    book: AddressBook,
    infos: list[SourceInfo],
    port: int | None,
    rollup: Rollup | None = None,
) -> EngineResult:
    conns = order_conns(conns, rollup)
    res = EngineResult(
        sources=infos,
        decode=st,
        conns=conns,
        book=book,
        port=port,
        packets=st.frames,
        rollup=rollup,
    )
    firsts = [i.first_ts for i in infos if i.first_ts is not None]
    lasts = [i.last_ts for i in infos if i.last_ts is not None]
    res.first_ts = min(firsts) if firsts else None
    res.last_ts = max(lasts) if lasts else None
    res.warnings = collect_warnings(infos, st)
    if st.frames == 0 and all(not i.warnings for i in infos):
        pass  # an empty but valid capture: the report says "0 packets"
    unsupported_only = st.frames > 0 and sum(st.unsupported.values()) == st.frames
    if unsupported_only:
        lts = ", ".join(linktype_name(lt) for lt in sorted(st.unsupported))
        raise CaptureError(
            f"no packet could be decoded: unsupported link type {lts}; pcapreset reads "
            "Ethernet, Linux cooked (SLL/SLL2), raw IP and BSD loopback"
        )
    return res


def collect_warnings(infos: list[SourceInfo], st: DecodeStats) -> list[dict]:
    """Reader and decoder warnings, each with a count.

    Packet accounting (checked on every corpus file by tests/test_corpus.py)::

        capture.packets == tcp_packets + other_packets
                           + undecodable + unsupported_linktype + ip_fragments

    ``capture.packets`` is what reached the decoder. Records the reader drops
    before that (pcapng ``undefined_interface``, ``damaged_blocks``) and skipped
    bytes (``damaged_bytes``, ``truncated_record``) have warnings of their own.
    """
    out: list[dict] = []
    multi = len(infos) > 1
    for info in infos:
        for kind, (count, msg) in info.warnings.items():
            prefix = f"{os.path.basename(info.path)}: " if multi else ""
            out.append({"kind": kind, "count": int(count), "message": f"{prefix}{count} {msg}"})
    for reason, count in sorted(st.undecodable.items()):
        out.append(
            {
                "kind": "undecodable",
                "count": count,
                "message": f"{count} packets skipped, undecodable: {reason}",
            }
        )
    for lt, count in sorted(st.unsupported.items()):
        out.append(
            {
                "kind": "unsupported_linktype",
                "count": count,
                "message": f"{count} packets on unsupported link type {linktype_name(lt)} skipped",
            }
        )
    if st.ip_fragments:
        out.append(
            {
                "kind": "ip_fragments",
                "count": st.ip_fragments,
                "message": f"{st.ip_fragments} non-first IP fragments counted, not reassembled",
            }
        )
    if st.snap_truncated:
        out.append(
            {
                "kind": "snaplen_truncated",
                "count": st.snap_truncated,
                "message": f"{st.snap_truncated} TCP packets cut by the snaplen "
                "(headers kept, payload partly missing; still analysed)",
            }
        )
    return out
