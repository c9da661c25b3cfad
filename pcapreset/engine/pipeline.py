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
copied), so a slot is handed back to the child when its batch is fed. A
single capture file is read straight into the ring's slots
(``CaptureReader.alloc``), so its bytes are copied once, by ``read``. A
batch's HTTP heads are parsed by the child, or by the parent when it has
time (:func:`_parent_is_idle`): the work goes to the less busy side.

With eviction (``analyze``) the child can also track a share of the
connections itself: those whose 4-tuple hash falls in its buckets
(:data:`CHILD_BUCKETS` of :data:`BUCKETS`; none by default, see there),
exactly as a ``--jobs`` shard does (pcapreset/shard.py), and sends its
connections and its Rollup at the end. A connection never straddles the
two trackers, so merging is a concatenation. Without eviction (``load``)
the child would have to send every connection back, so it only reads.

Same input, same output as :func:`pcapreset.engine.run` in one process.
"""

from __future__ import annotations

import marshal
import mmap
import multiprocessing as mp
import os
from typing import Any

import numpy as np

from ..capture.decode import Decoder
from ..capture.sources import CHUNK, MAX_RECORD
from ..capture.tcp import _COLS, AddressBook, TcpBatch
from ..capture.timeline import decoded_timeline, open_readers, probe_inputs
from ..errors import PcapResetError
from ..report.result import EngineResult
from ..track.flows import preparse_http
from . import spill
from .gcpause import no_gc_in_this_process
from .lifetime import die_with_parent
from .result import Progress, assemble
from .shard import shard_of
from .tracking import Tracking

#: batches in flight; on the 1M bench file 2, 3, 4 and 6 slots ran equally fast
#: (best of 5: 1.05-1.07 s) at 60, 68, 69-73 and 82 MB peak RSS
SLOTS = 4
#: one chunk of packet bytes, its decoded columns and its parsed HTTP heads
SLOT_SIZE = CHUNK + 2 * MAX_RECORD + (8 << 20)
_INT_COLS = tuple(c for c in _COLS if c != "ts")
#: with eviction (analyze), the child may also track the connections whose
#: hash bucket (of BUCKETS) is below CHILD_BUCKETS, as a --jobs shard does.
#: No share is fastest on 2 CPUs: reading (the read() copy), decoding and
#: HTTP heads already keep the child busier than the parent's tracking, and
#: splitting each batch in two costs the child ~0.05 s per 1M packets on top
#: of its share (1M bench pcap, perf stat -r 7: 0 -> 0.58-0.59 s,
#: 8 -> 0.66-0.67 s, 48 -> 0.72-0.73 s; docs/performance-log.md). Any share gives
#: the same report (tests/test_pipeline.py runs 0 to 256).
BUCKETS = 256
CHILD_BUCKETS = 0
#: inputs smaller than this are read in one process (the fork costs more)
MIN_BYTES = 16 << 20


def usable(paths: list[str]) -> bool:
    if (os.cpu_count() or 1) < 2:
        return False
    try:
        return sum(os.path.getsize(p) for p in paths) >= MIN_BYTES
    except OSError:
        return False


class _Ring:
    """The child's side of the ring: the free slots, and the slot the reader
    is reading a chunk into (a single capture file is read straight into the
    ring, so its packet bytes are not copied a second time)."""

    def __init__(self, shm: mmap.mmap, free_in: Any) -> None:
        self.shm = shm
        self.view = memoryview(shm)
        self.base = np.frombuffer(shm, dtype=np.uint8, count=1).ctypes.data
        self.free_in = free_in
        self.free = list(range(SLOTS))
        #: the slot the reader read its last chunk into, until a batch ships it
        self.reading: int | None = None

    def poll(self) -> None:
        while self.free_in.poll():
            self.free.append(self.free_in.recv())

    def take(self) -> int:
        if not self.free:
            self.free.append(self.free_in.recv())  # wait for the parent
        return self.free.pop()

    def alloc(self, size: int) -> memoryview:
        """CaptureReader.alloc: a whole slot for the reader's next chunk."""
        if size > SLOT_SIZE:
            raise ValueError(f"a chunk of {size} bytes does not fit a ring slot")
        if self.reading is not None:
            # its chunk's batches are done and none went through this slot
            self.free.append(self.reading)
        self.reading = self.take()
        return self.view[self.reading * SLOT_SIZE : (self.reading + 1) * SLOT_SIZE]

    def offset(self, x: object) -> int | None:
        """Where ``x`` lies in the ring, if it is a view of it."""
        if isinstance(x, memoryview) and x.obj is self.shm and len(x):
            return int(np.frombuffer(x, dtype=np.uint8, count=1).ctypes.data) - self.base
        return None


def _child(
    paths: list[str],
    shm: mmap.mmap,
    out: Any,
    free_in: Any,
    port: int | None,
    share: int,
    spill_to: int,
    parent: int = 0,
    parent_ends: tuple = (),
) -> None:
    if parent:
        die_with_parent(parent)
    for c in parent_ends:  # (the parent's ends: with them open here, no EOF ever)
        c.close()
    no_gc_in_this_process()
    if spill_to:
        spill.write_to(spill_to)  # (the parent's file: run_pipelined)
    try:
        readers = open_readers(paths)
        dec = Decoder(AddressBook())
        ring = _Ring(shm, free_in)
        if len(readers) == 1:
            readers[0].alloc = ring.alloc
        # this process's own share of the connections (see CHILD_BUCKETS)
        tr = Tracking(port, evict=True) if share else None
        for b in decoded_timeline(readers, dec):
            mine = None
            if tr is not None and len(b):
                own = shard_of(b, BUCKETS) < share
                if own.all():
                    b, mine = b.take(np.zeros(0, dtype=np.int64)), b
                elif own.any():
                    b, mine = b.take(np.flatnonzero(~own)), b.take(np.flatnonzero(own))
            _ship(b, dec, readers, ring, out)
            if mine is not None and tr is not None:
                tr.feed(mine)
        for r in readers:
            r.close()
        out.send(("end", dec.stats, [r.info for r in readers], dec.book))
        conns, rollup = tr.finish() if tr is not None else (None, None)
        # (a message of its own: the parent reads it once its ring is unmapped)
        out.send(("state", conns, rollup))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        try:
            out.send(("error", e))
        except Exception:  # noqa: BLE001
            out.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        out.close()


def _parent_is_idle(ring: _Ring) -> bool:
    """Whether the parent should parse the next batch's HTTP heads itself:
    it has at most one batch waiting (every slot but that one's and the next
    batch's is free). Then the child sends the batch without them
    (FlowTracker.feed parses a batch that comes without heads); else it
    parses them. The same heads either way: the work moves to the less busy
    process, batch by batch, and the heads the parent parses are not
    marshalled on the way. (1M bench pcap: the parent parsed 74-90 of 193
    batches' heads, 0.59-0.60 -> 0.55-0.56 s; the share moves with the
    machine's load and the format: gzip, whose reading costs the child
    most, 187-193 of 193.)"""
    ring.poll()
    return len(ring.free) + (ring.reading is not None) >= SLOTS - 1


def _ship(b: TcpBatch, dec: Decoder, readers: list, ring: _Ring, out: Any) -> None:
    """Send one batch (the parent's share of it) through a slot, or inline.

    A batch whose packet bytes were read into the ring goes out in that slot
    (the parent then owns it until it hands it back); others are copied into
    a free slot.
    """
    n = len(b)
    done = (dec.stats.frames, sum(r.bytes_read() for r in readers))
    shm = ring.shm
    at = ring.offset(b.bufs[0]) if n and len(b.bufs) == 1 else None
    in_slot = at is not None and ring.reading == at // SLOT_SIZE
    # the batch's HTTP heads: parsed here, or by the parent if it has time
    idle = _parent_is_idle(ring)
    # (marshal, not pickle: heads are tuples, strings, bytes, ints and dicts,
    # and marshal writes them ~2.5x faster)
    heads = b"" if not n or idle else marshal.dumps(preparse_http(b))
    raw = 0 if in_slot else sum(len(x) for x in b.bufs)
    meta_room = (len(_INT_COLS) + 1) * 8 * n + len(heads)
    if in_slot:
        assert at is not None
        slot = at // SLOT_SIZE
        pos = at + len(b.bufs[0])
        fits = pos + meta_room <= (slot + 1) * SLOT_SIZE
    else:
        fits = raw + meta_room <= SLOT_SIZE
    if n and fits:
        # everything in the slot: the pipe carries a few numbers, so this
        # process goes on with the next batch while the parent tracks
        parts = []
        if in_slot:
            assert at is not None
            ring.reading = None  # the parent's now
            parts.append((at, len(b.bufs[0])))
        else:
            slot = ring.take()
            pos = slot * SLOT_SIZE
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
        hlen = len(heads) if heads else -1  # (-1: the parent parses them)
        out.send(("batch", ("shm", slot, parts, n, meta, hlen), done))
    elif not n:
        out.send(("batch", ("inline", [], b.ts, None, b""), done))  # progress only
    else:
        if not heads:
            heads = marshal.dumps(preparse_http(b))
        cols = np.stack([getattr(b, f) for f in _INT_COLS])
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
    heads = marshal.loads(view[hpos : hpos + hlen]) if hlen >= 0 else None
    bufs = [view[p : p + m] for p, m in parts]
    b = TcpBatch(ts=ts, **dict(zip(_INT_COLS, cols, strict=True)), bufs=bufs, heads=heads)
    return bufs, b


def _recv(conn: Any) -> tuple:
    try:
        return conn.recv()  # type: ignore[no-any-return]
    except EOFError:
        raise PcapResetError("the reader process ended unexpectedly") from None


def _unmap(view: memoryview, shm: mmap.mmap) -> None:
    try:
        view.release()
        shm.close()
    except BufferError:
        pass  # an error left a packet buffer referenced; the mapping goes at exit


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
    # the child spills to a file opened here: its Rollup and packed
    # connections come back as where they are in it (spill.py)
    spill_to = spill.shared_file() if share else 0
    child = ctx.Process(
        target=_child,
        args=(paths, shm, out_w, free_r, port, share, spill_to, os.getpid(), (out_r, free_w)),
        daemon=True,
    )
    try:
        child.start()
    except BaseException:
        spill.release(spill_to)
        raise
    out_w.close()
    free_r.close()
    tr = Tracking(port, evict)
    end: tuple | None = None
    try:
        while True:
            msg = _recv(out_r)
            kind = msg[0]
            if kind == "batch":
                _kind, spec, done = msg
                bufs, b = _unpack(spec, view)
                if b is not None:
                    tr.feed(b)
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
                end = msg
                break
            else:
                raise msg[1]
        # the ring is unmapped before the child's connections and Rollup come
        # in, and before ranking every connection (assemble): neither adds to
        # the peak it held
        _unmap(view, shm)
        state = _recv(out_r)  # (its Spills copied into this process's as it unpickles)
        if state[0] != "state":
            raise state[1]
    finally:
        spill.release(spill_to)
        out_r.close()
        free_w.close()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
        _unmap(view, shm)
    assert end is not None  # (the loop leaves only with it, or raises)
    _kind, stats, infos, book = end
    _kind, child_conns, child_rollup = state
    conns, rollup = tr.finish()
    if child_conns is not None:
        conns += child_conns
    if rollup is not None and child_rollup is not None:
        rollup.merge(child_rollup)
    return assemble(conns, stats, book, infos, port, rollup)
