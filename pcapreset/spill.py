"""spill: an append-only list of ``bytes`` that goes to a temporary file.

What a long capture keeps for its report grows with the capture: a packed
reset connection (:mod:`pcapreset.packed`), a reset's record
(:func:`pcapreset.report.build`), a block of the Rollup's rows
(:mod:`pcapreset.rollup`). A :class:`Spill` keeps such items in memory until
they add up to ``limit`` bytes, then writes them out to an unnamed temporary
file (``tempfile.TemporaryFile``: gone when closed, or when the process
ends) and keeps only where each one is: 16 bytes per item. Reading an item
back is one ``pread`` (from the page cache, most of the time).

A Spill is pickled with its items inline (a shard worker's or the reader
child's, sent to the parent at the end of the run), and unpickled as a new
Spill that spills again past its limit.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO

#: bytes a Spill keeps in memory before it writes them out
SPILL_AFTER = 1 << 20


class Spill:
    """Items ``0 .. len-1``: the first ``len(self._off)`` in the file (offset,
    length), the rest in memory, in order."""

    __slots__ = ("limit", "_off", "_len", "_mem", "_mem_bytes", "_file", "_end")

    def __init__(self, limit: int | None = None) -> None:
        #: bytes kept in memory before writing out (None: ``SPILL_AFTER`` when
        #: the first item comes; tests set 0 to spill every item)
        self.limit = limit
        self._off = array("q")
        self._len = array("q")
        self._mem: list[bytes] = []
        self._mem_bytes = 0
        self._file: IO[bytes] | None = None
        self._end = 0

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
            self._file = tempfile.TemporaryFile(prefix="pcapreset-")
        at = self._end
        for b in self._mem:
            self._off.append(at)
            self._len.append(len(b))
            at += len(b)
        data = b"".join(self._mem)
        fd = self._file.fileno()
        done = 0
        while done < len(data):
            done += os.pwrite(fd, memoryview(data)[done:], self._end + done)
        self._end = at
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
        return _pread(self._file.fileno(), self._len[i], self._off[i])

    def __iter__(self) -> Iterator[bytes]:
        if self._off:
            assert self._file is not None
            fd = self._file.fileno()
            # the file's items in reads of ~1 MiB
            i, n = 0, len(self._off)
            while i < n:
                j, start = i, self._off[i]
                while j < n and self._off[j] + self._len[j] - start <= SPILL_AFTER:
                    j += 1
                j = max(j, i + 1)
                end = self._off[j - 1] + self._len[j - 1]
                chunk = _pread(fd, end - start, start)
                for k in range(i, j):
                    a = self._off[k] - start
                    yield chunk[a : a + self._len[k]]
                i = j
        yield from list(self._mem)

    def close(self) -> None:
        """Drop every item and the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._off, self._len = array("q"), array("q")
        self._mem.clear()
        self._mem_bytes = self._end = 0

    def __getstate__(self) -> tuple:
        lens = array("q", self._len)
        lens.extend(len(b) for b in self._mem)
        return (self.limit, lens, b"".join(self))

    def __setstate__(self, state: tuple) -> None:
        limit, lens, data = state
        Spill.__init__(self, limit)
        view = memoryview(data)
        at = 0
        for n in lens:
            self.append(bytes(view[at : at + n]))
            at += n


def _pread(fd: int, n: int, at: int) -> bytes:
    b = os.pread(fd, n, at)
    while len(b) < n:  # (a short read: only on odd file systems)
        more = os.pread(fd, n - len(b), at + len(b))
        if not more:
            raise OSError(f"spill file ended early at {at + len(b)}")
        b += more
    return b
