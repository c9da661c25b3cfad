"""spill: an append-only list of ``bytes`` that goes to a temporary file.

What a long capture keeps for its report grows with the capture: a packed
reset connection (:mod:`pcapreset.packed`), a reset's record
(:func:`pcapreset.report.build`), a block of the Rollup's rows
(:mod:`pcapreset.rollup`). A :class:`Spill` keeps such items in memory until
they add up to ``limit`` bytes, then writes them out to an unnamed temporary
file (``tempfile.TemporaryFile``: gone when closed, or when the process
ends) and keeps only where each one is: 16 bytes per item. Reading an item
back is one ``pread`` (from the page cache, most of the time).

A Spill is pickled with its items inline, and unpickled as a new Spill that
spills again past its limit. A forked worker (the reader child, a ``--jobs``
shard) instead writes its Spills to a file its parent opened before the fork
(:func:`shared_file`, :func:`write_to`): its Spills pickle as where their
items are in that file, and the parent copies them into its own Spills a
chunk at a time. The worker's end of the run then does not read everything
it spilled back into one pickle (+11 MB at the end of the reader child of a
10M-packet run).
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO

from ..errors import PcapResetError

#: bytes a Spill keeps in memory before it writes them out
SPILL_AFTER = 1 << 20


class _File:
    """A spill file and where it ends; ``key`` is set for a shared one."""

    __slots__ = ("f", "end", "key")

    def __init__(self, key: int | None = None) -> None:
        try:
            self.f: IO[bytes] = tempfile.TemporaryFile(prefix="pcapreset-")
        except OSError as e:
            raise _no_room(e) from None
        self.end = 0
        self.key = key

    def write(self, data: bytes) -> int:
        """Append ``data``; returns its offset."""
        at = self.end
        fd = self.f.fileno()
        done = 0
        try:
            while done < len(data):
                done += os.pwrite(fd, memoryview(data)[done:], at + done)
        except OSError as e:
            raise _no_room(e) from None
        self.end = at + len(data)
        return at

    def read(self, n: int, at: int) -> bytes:
        return _pread(self.f.fileno(), n, at)


def _no_room(e: OSError) -> SpillError:
    return SpillError(
        f"cannot write a temporary file in {tempfile.gettempdir()} ({e.strerror or e}): "
        "a long capture keeps its resets' data there; set TMPDIR to a directory with room"
    )


class SpillError(PcapResetError):
    """A spill file could not be made or written (the temporary directory)."""


#: files opened for forked workers, by key (:func:`shared_file`)
_shared: dict[int, _File] = {}
#: the shared file this process's Spills write to (:func:`write_to`)
_out: _File | None = None


def shared_file() -> int:
    """Open a spill file for a worker about to be forked; returns its key
    (for :func:`write_to` in the worker, :func:`release` here when done)."""
    key = max(_shared, default=0) + 1
    _shared[key] = _File(key)
    return key


def write_to(key: int) -> None:
    """In a forked worker: every Spill flushes to shared file ``key`` from now
    on (the worker ends with the run: the file is its parent's to drop)."""
    global _out
    _out = _shared[key]


def release(key: int) -> None:
    """Close a shared file (its Spills have been copied)."""
    sf = _shared.pop(key, None)
    if sf is not None:
        sf.f.close()


class Spill:
    """Items ``0 .. len-1``: the first ``len(self._off)`` in the file (offset,
    length), the rest in memory, in order."""

    __slots__ = ("limit", "_off", "_len", "_mem", "_mem_bytes", "_file")

    def __init__(self, limit: int | None = None) -> None:
        #: bytes kept in memory before writing out (None: ``SPILL_AFTER`` when
        #: the first item comes; tests set 0 to spill every item)
        self.limit = limit
        self._off = array("q")
        self._len = array("q")
        self._mem: list[bytes] = []
        self._mem_bytes = 0
        self._file: _File | None = None

    def __len__(self) -> int:
        return len(self._off) + len(self._mem)

    def __bool__(self) -> bool:
        return bool(self._off) or bool(self._mem)

    @property
    def spilled(self) -> int:
        """How many items are in the file."""
        return len(self._off)

    def append(self, b: bytes) -> int:
        """Add an item; returns its index."""
        n = len(self._off) + len(self._mem)
        self._mem.append(b)
        self._mem_bytes += len(b)
        limit = SPILL_AFTER if self.limit is None else self.limit
        if self._mem_bytes > limit:
            self.flush()
        return n

    def extend(self, items: Iterator[bytes] | Spill) -> None:
        for b in items:
            self.append(b)

    def flush(self) -> None:
        """Write the items held in memory out to the file."""
        if not self._mem:
            return
        if self._file is None:
            self._file = _out if _out is not None else _File()
        at = self._file.write(b"".join(self._mem))
        for b in self._mem:
            self._off.append(at)
            self._len.append(len(b))
            at += len(b)
        self._mem.clear()
        self._mem_bytes = 0

    def __getitem__(self, i: int) -> bytes:
        n = len(self._off)
        if i < 0:
            i += n + len(self._mem)
        if i >= n:
            return self._mem[i - n]
        if i < 0:
            raise IndexError(i)
        assert self._file is not None
        return self._file.read(self._len[i], self._off[i])

    def __iter__(self) -> Iterator[bytes]:
        if self._off:
            assert self._file is not None
            yield from _items(self._file, self._off, self._len)
        yield from list(self._mem)

    def close(self) -> None:
        """Drop every item and the file (unless shared: its owner drops it)."""
        if self._file is not None and self._file.key is None:
            self._file.f.close()
        self._file = None
        self._off, self._len = array("q"), array("q")
        self._mem.clear()
        self._mem_bytes = 0

    def __getstate__(self) -> tuple:
        if self._file is not None and self._file.key is not None:
            # a worker's: where its items are in the shared file
            return ("shared", self.limit, self._file.key, self._off, self._len, self._mem)
        lens = array("q", self._len)
        lens.extend(len(b) for b in self._mem)
        return ("inline", self.limit, lens, b"".join(self))

    def __setstate__(self, state: tuple) -> None:
        Spill.__init__(self, state[1])
        if state[0] == "shared":
            _kind, _limit, key, off, lens, mem = state
            self.extend(_items(_shared[key], off, lens))
            self.extend(iter(mem))
            return
        _kind, _limit, lens, data = state
        view = memoryview(data)
        at = 0
        for n in lens:
            self.append(bytes(view[at : at + n]))
            at += n


def _items(sf: _File, off: array, lens: array) -> Iterator[bytes]:
    """Items at ``off`` / ``lens`` in ``sf``, contiguous ones read together,
    ~1 MiB at a time (a shared file's Spills can be interleaved)."""
    i, n = 0, len(off)
    while i < n:
        start = off[i]
        end = start + lens[i]
        j = i + 1
        while j < n and off[j] == end and end + lens[j] - start <= SPILL_AFTER:
            end += lens[j]
            j += 1
        chunk = sf.read(end - start, start)
        for k in range(i, j):
            a = off[k] - start
            yield chunk[a : a + lens[k]]
        i = j


def _pread(fd: int, n: int, at: int) -> bytes:
    b = os.pread(fd, n, at)
    while len(b) < n:  # (a short read: only on odd file systems)
        more = os.pread(fd, n - len(b), at + len(b))
        if not more:
            raise OSError(f"spill file ended early at {at + len(b)}")
        b += more
    return b
