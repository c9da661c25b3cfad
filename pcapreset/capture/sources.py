"""sources: capture files -> batches of raw frames.

The capture package's file side knows file formats and nothing about what is
inside a frame: link types are passed through as numbers for
:mod:`pcapreset.capture.decode`. :class:`CaptureReader` opens a file (or a
stream, :mod:`.instream`), recognises its format from its first bytes and
reads it in chunks of ``CHUNK`` bytes; the records of a chunk are walked by
:mod:`.pcap` or :mod:`.pcapng`, and gzip, bzip2 and xz are decompressed on the
way (:mod:`.compressed`). Memory does not grow with the file size.

Damage is never fatal in the middle of a file: a record whose header is not
plausible starts a resynchronisation scan, the skipped bytes are counted in a
warning, and reading goes on. Only a file that is not a capture at all (or is
empty) raises :class:`CaptureError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..errors import CaptureError
from .instream import is_stream, open_stream
from .resync import PCAP_MAGICS, PcapLayout

#: True when this module runs compiled (setup.py builds it with Cython; the
#: per-record loops are pcap.py's and pcapng.py's)
COMPILED: bool = cython.compiled
CHUNK = 4 << 20
#: Largest record we accept before calling it damage (BIG TCP / GSO frames
#: reach ~ 200 KB; libpcap's own limit is 256 KiB unless snaplen says more).
MAX_RECORD = 1 << 20

PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


@dataclass(slots=True)
class FrameBatch:
    """Frames from one chunk of one file (columns, one row per frame)."""

    buf: bytes
    off: np.ndarray  # int64: where the frame's bytes start in ``buf``
    caplen: np.ndarray  # int64: captured bytes
    wirelen: np.ndarray  # int64: length on the wire
    ts: np.ndarray  # float64: epoch seconds
    linktype: np.ndarray  # int32
    frame_no: np.ndarray  # int64: 1-based frame number within the file
    file_index: int


@dataclass
class SourceInfo:
    """What a reader learnt about one file; filled in while reading."""

    path: str
    file_format: str = ""
    compression: str = ""
    linktypes: list[int] = field(default_factory=list)
    frames: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    #: kind -> [count, message]; messages say what was skipped and why
    warnings: dict[str, list] = field(default_factory=dict)

    def warn(self, kind: str, count: int, message: str) -> None:
        w = self.warnings.get(kind)
        if w is None:
            self.warnings[kind] = [count, message]
        else:
            w[0] += count


def _open_maybe_compressed(path: str) -> tuple[IO[bytes], str, bytes]:
    if is_stream(path):  # standard input, a pipe, a FIFO: read forwards only
        return open_stream(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the reader
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror or e}") from None
    head = raw.read(6)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        comp = "gzip"
    elif head[:3] == b"BZh":
        comp = "bzip2"
    elif head[:6] == b"\xfd7zXZ\x00":
        comp = "xz"
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raw.close()
        raise CaptureError(
            f"{path}: zstd-compressed; decompress it first "
            f"(e.g. `zstd -d {os.path.basename(path)}`)"
        )
    else:
        return raw, "", head
    from .compressed import open_compressed

    return open_compressed(path, raw, comp)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged capture raises (:func:`.compressed.decompress_errors`)."""
    from .compressed import decompress_errors

    return decompress_errors()


def _read_into(fh: IO[bytes], mv: memoryview) -> int:
    """Fill ``mv`` from ``fh`` until it is full or the file ends; bytes read."""
    got = 0
    n = len(mv)
    while got < n:
        k = fh.readinto(mv[got:])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    return got


class CaptureReader:
    """Streams one capture file as :class:`FrameBatch` objects.

    ``CaptureReader(path)`` reads the file header and raises
    :class:`CaptureError` when the file is not a capture; :meth:`batches`
    yields the frames.
    """

    def __init__(self, path: str, file_index: int = 0, chunk: int = CHUNK):
        self.path = path
        self.file_index = file_index
        self.chunk = chunk
        self.info = SourceInfo(path=path)
        #: where to read each chunk (see :meth:`fill`); None: a new bytes
        #: object per chunk
        self.alloc: Callable[[int], memoryview] | None = None
        #: damaged stretches: how many, their bytes, the first one's offset
        #: and the frames read before it (see :meth:`damage`)
        self._dmg: list[int] = [0, 0, 0, 0]
        self.sections = 0  # pcap file headers met after the first
        #: the layout of the pcap section being read (:mod:`.pcap`)
        self.layout: PcapLayout | None = None
        #: the last pcapng packet's time (a simple packet block carries none: :mod:`.pcapng`)
        self.ng_last_ts = 0.0
        self.fh, comp, head = _open_maybe_compressed(path)
        self.info.compression = comp
        self._seekable = not comp and self.fh.seekable()
        self._size = self._file_size(path)
        if len(head) == 0:
            self.fh.close()
            raise CaptureError(f"{path}: empty file (0 bytes), not a capture")
        if head[:4] in PCAP_MAGICS:
            from .pcap import read_header

            self._kind = "pcap"
            read_header(self)
        elif head[:4] == PCAPNG_SHB:
            self._kind = "pcapng"
            self.info.file_format = "pcapng"
        else:
            self.fh.close()
            what = "text" if all(32 <= c < 127 or c in (9, 10, 13) for c in head) else "data"
            raise CaptureError(
                f"{path}: not a pcap or pcapng file (starts with {what} {head[:4].hex()})"
            )

    @staticmethod
    def _file_size(path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    def bytes_read(self) -> int:
        """Position in the underlying (compressed) file, for progress."""
        try:
            raw = getattr(self.fh, "fileobj", None) or getattr(self.fh, "_fp", None)
            return int((raw or self.fh).tell())
        except (OSError, ValueError, AttributeError):
            return 0

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self.fh.close()

    # ------------------------------------------------------------------ pcap
    def batches(self) -> Iterator[FrameBatch]:
        try:
            if self._kind == "pcap":
                from .pcap import pcap_batches

                yield from pcap_batches(self)
            else:
                from .pcapng import pcapng_batches

                yield from pcapng_batches(self)
        except _read_errors() as e:
            # unreadable: keep what we had
            self.info.warn("read_error", 1, f"reading stopped early: {e}")
        finally:
            problem = getattr(self.fh, "problem", None)
            if problem is not None:
                comp = self.info.compression
                self.info.warn(
                    "read_error",
                    1,
                    f"{comp} data damaged after {self.fh.at} bytes ({problem}): every "  # type: ignore[attr-defined]
                    f"packet before the damage was read, nothing after it",
                )
            self.fh.close()

    @property
    def kind(self) -> str:
        """ "pcap" or "pcapng"."""
        return self._kind

    def fill(self, carry: bytes, at: int) -> tuple[bytes, bool]:
        """``carry`` (the unread tail of the last buffer, at file offset ``at``)
        followed by the next chunk; and whether the file had nothing more.

        An uncompressed file re-reads the carried bytes together with the next
        chunk instead of concatenating: ``carry + data`` copies every chunk a
        second time (measured: 0.33 s of CPU on an 800 MB capture).

        With :attr:`alloc` set, the chunk is read into the buffer it returns
        instead of a new bytes object.
        """
        if self.alloc is not None:
            return self._fill_into(self.alloc, carry, at)  # type: ignore[return-value]
        if carry and self._seekable:
            self.fh.seek(at)
            buf = self.fh.read(len(carry) + self.chunk)
            return buf, len(buf) <= len(carry)
        data = self.fh.read(self.chunk)
        return (carry + data if carry else data), not data

    def _fill_into(
        self, alloc: Callable[[int], memoryview], carry: bytes, at: int
    ) -> tuple[memoryview, bool]:
        """:meth:`fill` into ``alloc(size)``, a writable buffer of at least
        ``size`` bytes; returns a view of the bytes read into it."""
        k = len(carry)
        if k and not self._seekable:
            carry = bytes(carry)  # (it may live in the buffer alloc hands out)
        need = k + self.chunk
        mv = alloc(need)[:need]
        if k and self._seekable:
            self.fh.seek(at)
            got = _read_into(self.fh, mv)
            return mv[:got], got <= k
        if k:
            mv[:k] = carry
        got = _read_into(self.fh, mv[k:])
        return mv[: k + got], got == 0

    def damage(self, start: int, end: int, frame_no: int, at_end: bool = False) -> None:
        """Count the damaged bytes ``[start, end)`` (file offsets; of the
        decompressed data for a compressed file), and say where they were."""
        d = self._dmg
        if not d[0]:
            d[2], d[3] = start, frame_no
        d[0] += 1
        d[1] += end - start
        places, total, first, after = d
        where = (
            f"at offset {first} (after frame {after})"
            if places == 1
            else f"in {places} places, the first at offset {first} (after frame {after})"
        )
        tail = "nothing readable after them" if at_end else "reading resumed after them"
        self.info.warnings["damaged_bytes"] = [
            total,
            f"bytes of damaged records skipped {where}; {tail}",
        ]

    def end_of_file(
        self, damaged_from: int | None, end: int, frame_no: int, left: int, unit: str
    ) -> None:
        """The file ended (at offset ``end``): damage still open runs to it
        (``damaged_from``), else ``left`` bytes past the last whole ``unit``
        (record, block) are one cut short."""
        if damaged_from is not None:
            self.damage(damaged_from, end, frame_no, at_end=True)
        elif left > 0:
            self.info.warn(
                "truncated_record", 1, f"last {unit} cut short ({left} bytes): file truncated"
            )

    def account(self, b: FrameBatch) -> None:
        n = len(b.ts)
        if not n:
            return
        self.info.frames += n
        lo = float(b.ts.min())
        hi = float(b.ts.max())
        if self.info.first_ts is None or lo < self.info.first_ts:
            self.info.first_ts = lo
        if self.info.last_ts is None or hi > self.info.last_ts:
            self.info.last_ts = hi
