"""run: wires the offline pipeline together.

    capture (files -> FrameBatch -> TcpBatch, merged by time)
    -> track (FlowTracker) -> EngineResult

in one process, in a reader child and this process (:mod:`.pipeline`), or
sharded over processes (:mod:`.shard`), evicting finished connections into a
rollup as it goes (:mod:`.evictor`). Interpretation and the report work on
the :class:`~pcapreset.engine.result.EngineResult`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from ..capture.decode import Decoder
from ..capture.instream import is_stream
from ..capture.sources import FrameBatch, SourceInfo
from ..capture.tcp import AddressBook
from ..capture.timeline import decoded_timeline, open_readers
from ..report.result import EngineResult
from ..track.conn import RstEvent
from ..track.flows import FlowTracker
from . import pipeline
from .gcpause import paused_gc
from .result import Progress, assemble
from .rollup import Rollup
from .shard import run_sharded
from .tracking import Tracking

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
    if any(is_stream(os.fspath(p)) for p in paths):
        # a stream is read once, by this process: no reader child (the inputs
        # are probed before it starts) and no shards (each reads every input)
        jobs, pipelined = 1, False
    if jobs > 1 and tracker is None:
        res = run_sharded(list(paths), port, jobs, progress, evict)
    elif pipelined and tracker is None and _pipeline_usable(paths):
        res = pipeline.run_pipelined(list(paths), port, progress, evict)
    else:
        readers = open_readers(paths)
        dec = Decoder(AddressBook())
        total = sum(r.size for r in readers)
        with paused_gc():
            res = _run_one(readers, dec, tracker, total, progress, port, evict)
    return res


def _pipeline_usable(paths: Sequence[str]) -> bool:
    return pipeline.usable(list(paths))


def _run_one(readers, dec, ft, total, progress, port, evict=False) -> EngineResult:
    tr = Tracking(port, evict, ft)
    try:
        for b in decoded_timeline(readers, dec):
            tr.feed(b)
            if progress is not None:
                progress(sum(r.bytes_read() for r in readers), total, dec.stats.frames)
    finally:
        for r in readers:
            r.close()
    return finish(tr, dec, [r.info for r in readers], port)


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
    tr = Tracking(port, evict)
    tr.ft.on_rst = on_rst
    for fb in batches:
        if len(fb.off):
            tr.feed(dec.decode(fb))
        if on_batch is not None:
            tr.compact()  # tracker.conns without the connections in the rollup
            on_batch(tr.ft, dec, tr.rollup)
    return finish(tr, dec, infos, port)


def finish(tr: Tracking, dec: Decoder, infos: list[SourceInfo], port: int | None) -> EngineResult:
    conns, rollup = tr.finish()
    return assemble(conns, dec.stats, dec.book, infos, port, rollup)
