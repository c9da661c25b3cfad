"""instream: captures read from a stream — standard input (``-``), a pipe, a
FIFO, ``/dev/stdin``, a shell's ``<(...)`` — which can be read once, forwards.

:func:`open_stream` gives :mod:`pcapreset.sources` the same ``(file, compression,
first bytes)`` triple as for a regular file, without ever seeking: the first
bytes, read to recognise the format, are handed back in front of the rest of
the stream by :class:`Prefixed`; gzip, bzip2 and xz are decompressed as they
arrive. A stream is read in one pass by one process (:func:`is_stream`: the
engine neither forks readers for it nor reads it twice).
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import IO, cast

from ..errors import CaptureError

#: the file name that means standard input
STDIN = "-"
#: read size from a stream (the reader asks for its own chunk size on top)
BUFFER = 1 << 20


def is_stream(path: str) -> bool:
    """``path`` is ``-`` or names something other than a regular file (a pipe,
    a FIFO, a character device): it can be read once, and never seeked."""
    if path == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # (opening it reports the error)
        return False


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIN else path


class Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``raw``: bytes already read from a
    stream put back in front of it. Not seekable."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._raw.readinto(b)  # type: ignore[attr-defined]

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


def _read_exactly(fh: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream (a pipe hands
    out what its writer has written so far)."""
    parts, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _open_raw(path: str) -> IO[bytes]:
    if path == STDIN:
        try:
            fd = os.dup(sys.stdin.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            # (no descriptor behind sys.stdin, e.g. a test harness: read its buffer)
            return cast(IO[bytes], _Unclosed(sys.stdin.buffer))
        return open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror or e}") from None


class _Unclosed(io.RawIOBase):
    """A stream whose close() leaves the underlying one open (sys.stdin)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_stream(path: str) -> tuple[IO[bytes], str, bytes]:
    """Open a stream capture: ``(file, compression, first bytes)``; ``file``
    starts at the beginning of the (decompressed) capture."""
    name = display_name(path)
    raw = _open_raw(path)
    try:
        head = _read_exactly(raw, 6)
    except OSError as e:
        raw.close()
        raise CaptureError(f"{name}: cannot read: {e.strerror or e}") from None
    fh: IO[bytes] = cast(IO[bytes], io.BufferedReader(Prefixed(head, raw), BUFFER))
    comp = ""
    import bz2  # (the decompressors: only for a stream, once)
    import gzip
    import lzma

    if head[:2] == b"\x1f\x8b":
        fh, comp = cast(IO[bytes], gzip.GzipFile(fileobj=fh)), "gzip"
    elif head[:3] == b"BZh":
        fh, comp = cast(IO[bytes], bz2.BZ2File(fh)), "bzip2"
    elif head[:6] == b"\xfd7zXZ\x00":
        fh, comp = cast(IO[bytes], lzma.LZMAFile(fh)), "xz"
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        fh.close()
        raise CaptureError(f"{name}: zstd-compressed; decompress it first (e.g. `zstd -dc`)")
    else:
        return fh, comp, head
    try:
        inner = _read_exactly(fh, 4)
    except (OSError, EOFError, lzma.LZMAError) as e:
        fh.close()
        raise CaptureError(f"{name}: broken {comp} data: {e}") from None
    return cast(IO[bytes], io.BufferedReader(Prefixed(inner, fh), BUFFER)), comp, inner
