"""shard: connection tracking split across processes by connection hash.

Each worker process reads and decodes every packet (the vectorized part is
cheap) but feeds its :class:`~pcapreset.flows.FlowTracker` only the packets of
connections whose canonical 4-tuple hashes to its shard. A connection never
straddles two shards, so merging is a concatenation, and
:func:`pcapreset.engine.order_conns` numbers connections exactly as a single
process does: ``jobs=N`` gives the same result as ``jobs=1``.

Workers are forked (Linux); shard 0 reports progress through shared counters.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import numpy as np

from ..capture.decode import Decoder
from ..capture.tcp import AddressBook, TcpBatch
from ..capture.timeline import decoded_timeline, open_readers, probe_inputs
from ..report.result import EngineResult
from . import spill
from .gcpause import no_gc_in_this_process, paused_gc
from .lifetime import die_with_parent
from .result import Progress, assemble
from .tracking import Tracking

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)
_progress_counter: Any = None


def shard_of(b: TcpBatch, n: int) -> np.ndarray:
    """Shard number of each packet's connection (same for both directions)."""
    lo = np.minimum(b.src, b.dst).astype(np.uint64)
    hi = np.maximum(b.src, b.dst).astype(np.uint64)
    h = (lo * _K1) ^ (hi * _K2)
    h ^= h >> np.uint64(29)
    if n > 0 and n & (n - 1) == 0:  # a power of two (pipeline.BUCKETS): a mask, no division
        return (h & np.uint64(n - 1)).astype(np.int64)
    return (h % np.uint64(n)).astype(np.int64)


def _init(counter: Any, parent: int = 0) -> None:
    global _progress_counter
    _progress_counter = counter
    if parent:
        die_with_parent(parent)  # (a pool worker also waits on pipes forever)


def _worker(
    paths: list[str], port: int | None, shard: int, n: int, evict: bool = False, out: int = 0
) -> tuple:
    if out:
        spill.write_to(out)  # this shard's spill file (its parent's: run_sharded)
    readers = open_readers(paths)
    dec = Decoder(AddressBook())
    tr = Tracking(port, evict)
    no_gc_in_this_process()
    try:
        for b in decoded_timeline(readers, dec):
            if len(b):
                m = shard_of(b, n) == shard
                if m.all():
                    tr.feed(b)
                elif m.any():
                    tr.feed(b.take(np.nonzero(m)[0]))
            if shard == 0 and _progress_counter is not None:
                _progress_counter[0] = dec.stats.frames
                _progress_counter[1] = sum(r.bytes_read() for r in readers)
    finally:
        for r in readers:
            r.close()
    conns, rollup = tr.finish()
    return conns, dec.stats, [r.info for r in readers], dec.book, rollup


def run_sharded(
    paths: list[str],
    port: int | None,
    jobs: int,
    progress: Progress | None = None,
    evict: bool = False,
) -> EngineResult:
    total = probe_inputs(paths)
    ctx = mp.get_context("fork")
    counter = ctx.Array("q", 2, lock=False)
    # each shard spills to a file opened here, before the fork, and its
    # results carry where (spill.py): copied a chunk at a time as they come in
    outs = [spill.shared_file() if evict else 0 for _ in range(jobs)]
    try:
        with ctx.Pool(jobs, initializer=_init, initargs=(counter, os.getpid())) as pool:
            pending = [
                pool.apply_async(_worker, (paths, port, i, jobs, evict, outs[i]))
                for i in range(jobs)
            ]
            while progress is not None and not pending[0].ready():
                pending[0].wait(0.2)
                progress(int(counter[1]), total, int(counter[0]))
            parts = [p.get() for p in pending]
    finally:
        for key in outs:
            spill.release(key)
    with paused_gc():
        conns = [c for part in parts for c in part[0]]
    _conns0, stats, infos, book, rollup = parts[0]
    for part in parts[1:]:
        if part[4] is not None:
            rollup.merge(part[4])
    return assemble(conns, stats, book, infos, port, rollup)
