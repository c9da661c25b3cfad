"""compressed: gzip, bzip2 and xz captures, decompressed as they are read.

:func:`open_compressed` wraps a file whose first bytes name a compression
(:func:`pcapreset.capture.sources.CaptureReader` sniffs them) in a reader
that keeps every byte before damage (:class:`_Salvage`); gzip goes through
ISA-L's igzip when it is installed (:func:`gzip_reader`).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Iterator
from typing import IO, cast

from ..errors import CaptureError
from .sources import CHUNK


def open_compressed(path: str, raw: IO[bytes], comp: str) -> tuple[IO[bytes], str, bytes]:
    """``raw`` (at offset 0), compressed with ``comp`` ("gzip", "bzip2" or
    "xz"): (the decompressed stream, ``comp``, its first 4 bytes)."""
    fh = _decompressor(raw, comp)
    try:
        inner = fh.read(4)
    except decompress_errors() as e:
        raw.close()
        raise CaptureError(f"{path}: broken {comp} data: {e}") from None
    fh.close()
    raw.seek(0)
    return cast(IO[bytes], _Salvage(_decompressor(raw, comp), raw)), comp, inner


def _decompressor(raw: IO[bytes], comp: str) -> IO[bytes]:
    if comp == "gzip":
        return gzip_reader(raw)
    return cast(IO[bytes], bz2.BZ2File(raw) if comp == "bzip2" else lzma.LZMAFile(raw))


class _Salvage:
    """A decompressing reader that keeps every byte before damage, as zcat
    does: read in pieces of at most one decompression step (``read1``), so a
    bad CRC, trailing junk or a stream cut short ends the data where it
    happens instead of losing the piece being read; :attr:`problem` then
    says what stopped it (the reader turns it into a warning)."""

    PIECE = 1 << 16

    def __init__(self, fh, raw: IO[bytes]) -> None:
        self._fh = fh
        self.fileobj = raw  # (CaptureReader.bytes_read)
        self.problem: str | None = None
        self.at = 0  # bytes of decompressed data returned

    def seekable(self) -> bool:
        return False

    def _pieces(self, n: int) -> Iterator[bytes]:
        """Up to ``n`` bytes, a decompression step at a time."""
        got = 0
        while got < n and self.problem is None:
            try:
                d = self._fh.read1(min(n - got, self.PIECE))
            except decompress_errors() as e:
                self.problem = str(e) or type(e).__name__
                return
            if not d:
                return
            got += len(d)
            yield d

    def read(self, n: int) -> bytes:
        d = b"".join(self._pieces(n))
        self.at += len(d)
        return d

    def readinto(self, mv: memoryview) -> int:
        got = 0
        for d in self._pieces(len(mv)):  # (each piece copied in: no joined copy)
            mv[got : got + len(d)] = d
            got += len(d)
        self.at += got
        return got

    def close(self) -> None:
        self._fh.close()
        self.fileobj.close()


def gzip_reader(raw: IO[bytes]) -> IO[bytes]:
    """The gzip stream in ``raw``, decompressed: by ISA-L's igzip (package
    ``isal``, ~4x zlib's inflate speed) when it is installed and ``raw`` can
    seek, else by the standard library's gzip (zlib). Same bytes, same stream
    checks, and on damage the same bytes and error as zlib (:class:`_IsalGzip`)."""
    # (GzipFile's first positional argument is a file *name*)
    try:
        from isal.igzip import IGzipFile
    except ImportError:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if not raw.seekable():
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    return cast(IO[bytes], _IsalGzip(raw, cast(IO[bytes], IGzipFile(fileobj=raw))))


class _IsalGzip:
    """igzip, with zlib's reading of a damaged stream: igzip drops the output
    of the last input block it was given when the stream then proves cut
    short or corrupt (a small file: all of it), where zlib returns it first.
    So on any error the stream is read again by zlib's GzipFile up to the
    position reached, and that reader goes on from there."""

    def __init__(self, raw: IO[bytes], fast: IO[bytes]) -> None:
        self.fileobj = raw  # (CaptureReader.bytes_read)
        self._fh = fast
        self._pos = 0  # decompressed bytes returned
        self._slow = False

    def _to_zlib(self) -> None:
        self._slow = True
        self.fileobj.seek(0)
        self._fh = cast(IO[bytes], gzip.GzipFile(fileobj=self.fileobj))
        left = self._pos
        while left > 0:
            got = len(self._fh.read(min(left, CHUNK)))
            if not got:
                break
            left -= got

    def read(self, n: int = -1) -> bytes:
        if not self._slow:
            try:
                d = self._fh.read(n)
            except decompress_errors():
                self._to_zlib()
            else:
                self._pos += len(d)
                return d
        return self._fh.read(n)

    def read1(self, n: int = -1) -> bytes:
        if not self._slow:
            try:
                d = self._fh.read1(n)  # type: ignore[attr-defined]
            except decompress_errors():
                self._to_zlib()
            else:
                self._pos += len(d)
                return d
        return self._fh.read1(n)  # type: ignore[attr-defined]

    def readinto(self, b) -> int:
        if not self._slow:
            try:
                k = self._fh.readinto(b)  # type: ignore[attr-defined]
            except decompress_errors():
                self._to_zlib()
            else:
                self._pos += k
                return k
        return self._fh.readinto(b)  # type: ignore[attr-defined]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # (as GzipFile: ``raw`` stays open)
        self._fh.close()


def decompress_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged compressed stream raises: OSError / EOFError,
    lzma's and zlib's errors, and ISA-L's when :func:`gzip_reader` uses it."""

    errors: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError, zlib.error)
    try:
        from isal import isal_zlib
    except ImportError:
        return errors
    return (*errors, cast("type[BaseException]", isal_zlib.error))
