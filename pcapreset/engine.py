"""engine: wires the offline pipeline together.

    sources (files -> FrameBatch) -> decode (-> TcpBatch) -> merge by time
    -> flows (FlowTracker) -> EngineResult

Evidence, rules and the report work on the :class:`EngineResult`.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .decode import SUPPORTED_LINKTYPES, AddressBook, Decoder, DecodeStats, TcpBatch, concat
from .decode import linktype_name as linktype_name
from .errors import CaptureError
from .flows import Conn, FlowTracker, RstEvent
from .sources import CaptureReader, FrameBatch, SourceInfo

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

    def endpoint(self, key: int) -> str:
        return self.book.endpoint(key)


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
) -> EngineResult:
    """Read, decode and rebuild connections for one or several capture files.

    ``jobs`` > 1 shards connection tracking across processes (see
    :mod:`pcapreset.shard`); ``pipelined`` reads and decodes in a forked child
    while this process tracks connections (:mod:`pcapreset.pipeline`; used by
    the one-shot CLI, not by default in library calls, since forking a
    process that runs threads — a notebook kernel — is unsafe). Either way
    the result is identical to one process.
    """
    if jobs > 1 and tracker is None:
        from .shard import run_sharded

        return run_sharded(list(paths), port, jobs, progress)
    if pipelined and tracker is None:
        from . import pipeline

        if pipeline.usable(list(paths)):
            return pipeline.run_pipelined(list(paths), port, progress)
    readers = open_readers(paths)
    book = AddressBook()
    dec = Decoder(book)
    ft = tracker or FlowTracker(port=port, server_ports=[port] if port else [])
    total = sum(r.size for r in readers)
    with paused_gc():
        return _run_one(readers, dec, ft, total, progress, port)


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


def _run_one(readers, dec, ft, total, progress, port) -> EngineResult:
    try:
        for b in decoded_timeline(readers, dec):
            ft.feed(b)
            if progress is not None:
                progress(sum(r.bytes_read() for r in readers), total, dec.stats.frames)
    finally:
        for r in readers:
            r.close()
    return finish(ft, dec, [r.info for r in readers], port)


def run_batches(
    batches: Iterable[FrameBatch],
    infos: list[SourceInfo],
    port: int | None = None,
    on_rst: Callable[[RstEvent], None] | None = None,
    on_batch: Callable[[FlowTracker, Decoder], None] | None = None,
) -> EngineResult:
    """The same pipeline as :func:`run` over an iterator of FrameBatches (live capture).

    ``infos`` are the sources' :class:`SourceInfo` objects, read when the
    iterator is exhausted. ``on_rst`` sees each new RstEvent as it is found;
    ``on_batch`` runs after every batch, empty ones included (a live source
    yields empty batches on its clock tick).
    """
    dec = Decoder(AddressBook())
    ft = FlowTracker(port=port, server_ports=[port] if port else [])
    ft.on_rst = on_rst
    for fb in batches:
        if len(fb.off):
            ft.feed(dec.decode(fb))
        if on_batch is not None:
            on_batch(ft, dec)
    return finish(ft, dec, infos, port)


def order_conns(conns: list[Conn]) -> list[Conn]:
    """Deterministic order and ids: by start time, then endpoints."""
    conns.sort(key=lambda c: (c.start, c.client, c.server))
    for i, c in enumerate(conns):
        c.id = i
    return conns


def finish(
    ft: FlowTracker, dec: Decoder, infos: list[SourceInfo], port: int | None
) -> EngineResult:
    return assemble(ft.finish(), dec.stats, dec.book, infos, port)


def assemble(
    conns: list[Conn],
    st: DecodeStats,
    book: AddressBook,
    infos: list[SourceInfo],
    port: int | None,
) -> EngineResult:
    conns = order_conns(conns)
    res = EngineResult(
        sources=infos, decode=st, conns=conns, book=book, port=port, packets=st.frames
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
