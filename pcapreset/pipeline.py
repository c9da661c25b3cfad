"""pipeline: read + decode in a child process, connection tracking in both.

On a machine with two or more CPUs, reading, decoding and parsing HTTP heads
(sources + decode + httphead) run in a forked child while this process runs
the flow tracker, so the two halves of the offline pipeline overlap. Each
batch travels through a ring of slots in an anonymous shared mapping: the
chunk's packet bytes, its decoded columns and its pre-parsed HTTP heads; the
pipe carries only slot numbers and offsets, so the child never waits for the
parent to drain a large message (measured: with columns and heads pickled
through the pipe, the two processes ran nearly in lockstep). The flow tracker
keeps no reference into a slot after a batch (payload bytes it keeps are
copied), so a slot is handed back to the child when its batch is fed.

With eviction (``analyze``) the child also tracks a share of the connections
itself: those whose 4-tuple hash falls in its buckets (:data:`CHILD_BUCKETS`
of :data:`BUCKETS`), exactly as a ``--jobs`` shard does (pcapreset/shard.py),
and sends its connections and its Rollup at the end. A connection never
straddles the two trackers, so merging is a concatenation. Without eviction
(``load``) the child would have to send every connection back, so it only
reads.

Same input, same output as :func:`pcapreset.engine.run` in one process.
"""

from __future__ import annotations

import gc
import marshal
import mmap
import multiprocessing as mp
import os
from typing import Any

import numpy as np

from .decode import _COLS, AddressBook, Decoder, TcpBatch
from .engine import (
    EngineResult,
    Evictor,
    Progress,
    assemble,
    decoded_timeline,
    open_readers,
    probe_inputs,
)
from .errors import PcapResetError
from .flows import FlowTracker, preparse_http
from .shard import shard_of
from .sources import CHUNK, MAX_RECORD

#: batches in flight; on the 1M bench file 2, 3, 4 and 6 slots ran equally fast
#: (best of 5: 1.05-1.07 s) at 60, 68, 69-73 and 82 MB peak RSS
SLOTS = 4
#: one chunk of packet bytes, its decoded columns and its parsed HTTP heads
SLOT_SIZE = CHUNK + 2 * MAX_RECORD + (8 << 20)
_INT_COLS = tuple(c for c in _COLS if c != "ts")
#: with eviction (analyze), the child also tracks the connections whose hash
#: bucket (of BUCKETS) is below CHILD_BUCKETS, as a --jobs shard does: reading,
#: decoding and parsing HTTP heads cost the child about what tracking the
#: rest costs this process, so the child takes the smaller share
BUCKETS = 256
CHILD_BUCKETS = 64
#: inputs smaller than this are read in one process (the fork costs more)
MIN_BYTES = 16 << 20


def usable(paths: list[str]) -> bool:
    if (os.cpu_count() or 1) < 2:
        return False
    try:
        return sum(os.path.getsize(p) for p in paths) >= MIN_BYTES
    except OSError:
        return False


def _child(
    paths: list[str], shm: mmap.mmap, out: Any, free_in: Any, port: int | None, share: int
) -> None:
    gc.disable()
    try:
        readers = open_readers(paths)
        dec = Decoder(AddressBook())
        free = list(range(SLOTS))
        # this process's own share of the connections (see CHILD_BUCKETS)
        ft = FlowTracker(port=port, server_ports=[port] if port else []) if share else None
        ev = Evictor(ft) if ft is not None else None
        for b in decoded_timeline(readers, dec):
            while free_in.poll():
                free.append(free_in.recv())
            mine = None
            if ev is not None and len(b):
                own = shard_of(b, BUCKETS) < share
                if own.all():
                    b, mine = b.take(np.zeros(0, dtype=np.int64)), b
                elif own.any():
                    b, mine = b.take(np.flatnonzero(~own)), b.take(np.flatnonzero(own))
            _ship(b, dec, readers, shm, out, free, free_in)
            if mine is not None and ft is not None and ev is not None:
                ft.feed(mine)
                ev.after(mine.ts)
        for r in readers:
            r.close()
        conns, rollup = None, None
        if ft is not None and ev is not None:
            ev.compact()
            conns, rollup = ft.finish(), ev.rollup
        out.send(("end", dec.stats, [r.info for r in readers], dec.book, conns, rollup))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        try:
            out.send(("error", e))
        except Exception:  # noqa: BLE001
            out.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        out.close()


def _ship(
    b: TcpBatch, dec: Decoder, readers: list, shm: mmap.mmap, out: Any, free: list, free_in: Any
) -> None:
    """Send one batch (the parent's share of it) through a free slot, or inline."""
    n = len(b)
    # (marshal, not pickle: heads are tuples, strings, bytes, ints and dicts,
    # and marshal writes them ~2.5x faster)
    heads = marshal.dumps(preparse_http(b)) if n else b""
    done = (dec.stats.frames, sum(r.bytes_read() for r in readers))
    raw = sum(len(x) for x in b.bufs)
    if n and raw + (len(_INT_COLS) + 1) * 8 * n + len(heads) <= SLOT_SIZE:
        # everything in the slot: the pipe carries a few numbers, so this
        # process goes on with the next batch while the parent tracks
        if not free:
            free.append(free_in.recv())
        slot = free.pop()
        pos = slot * SLOT_SIZE
        parts = []
        for x in b.bufs:
            shm[pos : pos + len(x)] = x
            parts.append((pos, len(x)))
            pos += len(x)
        meta = pos
        for f in (*_INT_COLS, "ts"):
            a = np.ascontiguousarray(getattr(b, f))
            shm[pos : pos + a.nbytes] = a.view(np.uint8).data  # one copy
            pos += a.nbytes
        shm[pos : pos + len(heads)] = heads
        out.send(("batch", ("shm", slot, parts, n, meta, len(heads)), done))
    else:
        cols = np.stack([getattr(b, f) for f in _INT_COLS]) if n else None
        spec = ("inline", [bytes(x) for x in b.bufs], b.ts, cols, heads)
        out.send(("batch", spec, done))


def _unpack(spec: tuple, view: memoryview) -> tuple[list, TcpBatch | None]:
    """(buffers to release, the batch) of a child's message; heads are
    decoded, columns and packet bytes stay in the slot until it is released."""
    if spec[0] == "inline":
        _kind, bufs, ts, cols, heads = spec
        if cols is None:
            return [], None
        b = TcpBatch(ts=ts, **dict(zip(_INT_COLS, cols, strict=True)), bufs=bufs)
        b.heads = marshal.loads(heads)
        return [], b
    _kind, _slot, parts, n, meta, hlen = spec
    k = len(_INT_COLS)
    # views into the slot, like the packet bytes: the slot is handed back only
    # after the batch was fed (the tracker keeps numbers and copies, no views)
    cols = np.frombuffer(view, np.int64, k * n, meta).reshape(k, n)
    ts = np.frombuffer(view, np.float64, n, meta + k * n * 8)
    hpos = meta + (k + 1) * n * 8
    heads = marshal.loads(view[hpos : hpos + hlen])
    bufs = [view[p : p + m] for p, m in parts]
    b = TcpBatch(ts=ts, **dict(zip(_INT_COLS, cols, strict=True)), bufs=bufs, heads=heads)
    return bufs, b


def run_pipelined(
    paths: list[str], port: int | None, progress: Progress | None = None, evict: bool = False
) -> EngineResult:
    total = probe_inputs(paths)
    ctx = mp.get_context("fork")
    shm = mmap.mmap(-1, SLOTS * SLOT_SIZE, flags=mmap.MAP_SHARED)
    view = memoryview(shm)
    out_r, out_w = ctx.Pipe(duplex=False)
    free_r, free_w = ctx.Pipe(duplex=False)
    share = CHILD_BUCKETS if evict else 0
    child = ctx.Process(target=_child, args=(paths, shm, out_w, free_r, port, share), daemon=True)
    child.start()
    out_w.close()
    free_r.close()
    ft = FlowTracker(port=port, server_ports=[port] if port else [])
    ev = Evictor(ft) if evict else None
    result: EngineResult | None = None
    try:
        while True:
            try:
                msg = out_r.recv()
            except EOFError:
                raise PcapResetError("the reader process ended unexpectedly") from None
            kind = msg[0]
            if kind == "batch":
                _kind, spec, done = msg
                bufs, b = _unpack(spec, view)
                if b is not None:
                    ft.feed(b)
                    if ev is not None:
                        ev.after(b.ts)
                    del b
                if spec[0] == "shm":
                    for x in bufs:
                        x.release()
                    try:
                        free_w.send(spec[1])
                    except OSError:
                        pass  # the child has already sent everything and exited
                if progress is not None:
                    progress(done[1], total, done[0])
            elif kind == "end":
                _kind, stats, infos, book, child_conns, child_rollup = msg
                if ev is not None:
                    ev.compact()
                rollup = None if ev is None else ev.rollup
                conns = ft.finish()
                if child_conns is not None:
                    conns += child_conns
                if rollup is not None and child_rollup is not None:
                    rollup.merge(child_rollup)
                result = assemble(conns, stats, book, infos, port, rollup)
                break
            else:
                raise msg[1]
    finally:
        out_r.close()
        free_w.close()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
        try:
            view.release()
            shm.close()
        except BufferError:
            pass  # an error left a packet buffer referenced; the mapping goes at exit
    return result
