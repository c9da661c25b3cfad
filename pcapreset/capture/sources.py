"""sources: capture files -> batches of raw frames.

This module knows file formats (pcap, pcapng, gzip/bzip2/xz wrapping) and
nothing about what is inside a frame: link types are passed through as numbers
for :mod:`pcapreset.decode`.

Reading is streaming: a file is read in chunks of ``CHUNK`` bytes; record
boundaries are walked by :func:`_walk` (compiled when Cython built it, else
one ``struct.unpack_from`` per record) and every other header field is
gathered for the whole chunk at once with numpy. Memory
does not grow with the file size.

Damage is never fatal in the middle of a file: a record whose header is not
plausible starts a resynchronisation scan, the skipped bytes are counted in a
warning, and reading goes on. Only a file that is not a capture at all (or is
empty) raises :class:`CaptureError`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, cast

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..errors import CaptureError
from .instream import is_stream, open_stream
from .resync import PCAP_MAGICS, PcapLayout, is_pcap_header, ng_scan, pcap_layout, pcap_scan

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
CHUNK = 4 << 20
#: Largest record we accept before calling it damage (BIG TCP / GSO frames
#: reach ~ 200 KB; libpcap's own limit is 256 KiB unless snaplen says more).
MAX_RECORD = 1 << 20

#: per byte order: the (caplen, wirelen) of the record header at a position
_CAP8_AT = {e: struct.Struct(e + "8xII").unpack_from for e in "<>"}
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
    fh: IO[bytes]
    if head[:2] == b"\x1f\x8b":
        fh, comp = gzip_reader(raw), "gzip"
    elif head[:3] == b"BZh":
        fh, comp = bz2.BZ2File(raw), "bzip2"
    elif head[:6] == b"\xfd7zXZ\x00":
        fh, comp = lzma.LZMAFile(raw), "xz"
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        raw.close()
        raise CaptureError(
            f"{path}: zstd-compressed; decompress it first "
            f"(e.g. `zstd -d {os.path.basename(path)}`)"
        )
    else:
        return raw, "", head
    try:
        inner = fh.read(4)
    except decompress_errors() as e:
        raw.close()
        raise CaptureError(f"{path}: broken {comp} data: {e}") from None
    fh.close()
    raw.seek(0)
    if comp == "gzip":
        fh = gzip_reader(raw)
    else:
        fh = bz2.BZ2File(raw) if comp == "bzip2" else lzma.LZMAFile(raw)
    return cast(IO[bytes], _Salvage(fh, raw)), comp, inner


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

    def read(self, n: int) -> bytes:
        parts = []
        got = 0
        while got < n and self.problem is None:
            try:
                d = self._fh.read1(min(n - got, self.PIECE))
            except decompress_errors() as e:
                self.problem = str(e) or type(e).__name__
                break
            if not d:
                break
            parts.append(d)
            got += len(d)
        self.at += got
        return b"".join(parts)

    def readinto(self, mv: memoryview) -> int:
        d = self.read(len(mv))
        mv[: len(d)] = d
        return len(d)

    def close(self) -> None:
        self._fh.close()
        self.fileobj.close()


def _u32(v, p: int, big: bool) -> int:
    """The unsigned 32-bit integer at ``v[p:p + 4]`` (compiled build only:
    the record and block walks below, where ``v`` is a C pointer to the
    buffer's first byte)."""
    a, b, c, d = v[p], v[p + 1], v[p + 2], v[p + 3]
    if big:
        return a << 24 | b << 16 | c << 8 | d
    return d << 24 | c << 16 | b << 8 | a


def _walk(buf, pos: int, n: int, rec: int, maxcap: int, big: bool, offs: list[int],
          cap8_at: Callable) -> int:  # fmt: skip
    """Append to ``offs`` the offset of each whole pcap record from ``pos`` on
    whose caplen is plausible (<= ``maxcap``; not an all-zero header, caplen
    and wire length 0); return where the walk stopped: at a record cut by
    the end of ``buf`` (``n`` bytes), at an implausible header, or at the
    end. ``rec`` is the record header size; ``big``: a big-endian file;
    ``cap8_at(buf, pos)``: the (caplen, wirelen) fields of the record at
    ``pos``.

    The one loop over every record of the file. Compiled (sources.pxd), it
    reads the caplen bytes directly; as plain Python, below ``safe`` every
    record that passes the caplen check fits in the buffer, so that loop has
    one test per record.
    """
    limit = n - rec
    if cython.compiled:
        if n <= 0:
            return pos
        v = buf
        q = cython.address(v[0])
        while pos <= limit:
            cl = _u32(q, pos + 8, big)
            if cl > maxcap or (cl == 0 and _u32(q, pos + 12, big) == 0):
                break
            end = pos + rec + cl
            if end > n:
                break
            offs.append(pos)
            pos = end
        return pos
    append = offs.append
    safe = limit - maxcap
    while pos <= safe:
        cl, wl = cap8_at(buf, pos)
        if cl > maxcap or not (cl or wl):
            break
        append(pos)
        pos += cl + rec
    while pos <= limit:
        cl, wl = cap8_at(buf, pos)
        if cl > maxcap or not (cl or wl):
            break
        end = pos + rec + cl
        if end > n:
            break
        append(pos)
        pos = end
    return pos


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


def _header_words(
    buf, offs: list[int], width: int, big: bool, kinds: list[int] | None = None, short: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The headers at ``offs`` (pcap records, pcapng packet blocks): their
    offsets and the ``width`` 32-bit words at each, as int64 arrays. Rows
    whose ``kinds`` entry is not 0 hold only ``short`` words (a pcapng simple
    packet block; the rest are never used, and may even lie past the buffer).
    Compiled (sources.pxd), one loop; else numpy gathers."""
    n = len(offs)
    if not cython.compiled:
        u8 = np.frombuffer(buf, dtype=np.uint8)
        o = np.asarray(offs, dtype=np.int64)
        # (a short header may end less than 4 * width bytes before the end of
        # the buffer: clip the gather; the clipped words are never used)
        gi = np.minimum(o[:, None] + np.arange(4 * width), len(u8) - 1)
        u32 = np.dtype(">u4" if big else "<u4")
        return o, u8[gi].view(u32).reshape(-1, width).astype(np.int64)
    o = np.empty(n, dtype=np.int64)
    hdr = np.zeros((n, width), dtype=np.int64)
    if not n:
        return o, hdr
    v = buf
    q = cython.address(v[0])
    ov = o
    hv = hdr
    for j in range(n):
        p = offs[j]
        ov[j] = p
        words = width if kinds is None or kinds[j] == 0 else short
        for k in range(words):
            hv[j, k] = _u32(q, p + 4 * k, big)
    return o, hdr


#: the longest pcapng block accepted before calling it damage
NG_MAX_BLOCK = MAX_RECORD + 64


def _ng_walk(buf, pos: int, n: int, big: bool, pk_pos: list[int], pk_if: list[int],
             pk_kind: list[int]) -> int:  # fmt: skip
    """Compiled (sources.pxd): record every whole, well-formed Enhanced Packet
    Block from ``pos`` on (type 6, a plausible length of at least 32, the
    trailing length equal, inside ``buf``) exactly as the block loop in
    ``_pcapng_batches`` would, and return the position of the first block it
    leaves to that loop (anything else, including damage). Uncompiled it
    leaves every block to that loop.
    """
    if not cython.compiled:
        return pos
    if n <= 0:
        return pos
    v = buf
    q = cython.address(v[0])
    while pos + 12 <= n:
        blen = _u32(q, pos + 4, big)
        if (
            _u32(q, pos, big) != 6
            or blen < 32
            or blen % 4
            or blen > NG_MAX_BLOCK
            or pos + blen > n
            or _u32(q, pos + blen - 4, big) != blen
        ):
            break
        pk_pos.append(pos)
        pk_if.append(_u32(q, pos + 8, big))
        pk_kind.append(0)
        pos += blen
    return pos


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
        #: where to read each chunk (see :meth:`_fill`); None: a new bytes
        #: object per chunk
        self.alloc: Callable[[int], memoryview] | None = None
        #: damaged stretches: how many, their bytes, the first one's offset
        #: and the frames read before it (see :meth:`_damage`)
        self._dmg: list[int] = [0, 0, 0, 0]
        self._sections = 0  # pcap file headers met after the first
        self._fh, comp, head = _open_maybe_compressed(path)
        self.info.compression = comp
        self._seekable = not comp and self._fh.seekable()
        self._size = self._file_size(path)
        if len(head) == 0:
            self._fh.close()
            raise CaptureError(f"{path}: empty file (0 bytes), not a capture")
        if head[:4] in PCAP_MAGICS:
            self._kind = "pcap"
            self._init_pcap()
        elif head[:4] == PCAPNG_SHB:
            self._kind = "pcapng"
            self.info.file_format = "pcapng"
        else:
            self._fh.close()
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
            raw = getattr(self._fh, "fileobj", None) or getattr(self._fh, "_fp", None)
            return int((raw or self._fh).tell())
        except (OSError, ValueError, AttributeError):
            return 0

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._fh.close()

    # ------------------------------------------------------------------ pcap
    def _init_pcap(self) -> None:
        hdr = self._fh.read(24)
        if len(hdr) < 24:
            self._fh.close()
            raise CaptureError(f"{self.path}: truncated pcap file header ({len(hdr)} of 24 bytes)")
        self._layout = pcap_layout(hdr, MAX_RECORD)
        self.info.file_format = "pcap" + ("-ns" if self._layout.scale == 1e-9 else "")
        self.info.linktypes = [self._layout.linktype]

    def batches(self) -> Iterator[FrameBatch]:
        try:
            if self._kind == "pcap":
                yield from self._pcap_batches()
            else:
                yield from self._pcapng_batches()
        except decompress_errors() as e:
            # unreadable: keep what we had
            self.info.warn("read_error", 1, f"reading stopped early: {e}")
        finally:
            problem = getattr(self._fh, "problem", None)
            if problem is not None:
                comp = self.info.compression
                self.info.warn(
                    "read_error",
                    1,
                    f"{comp} data damaged after {self._fh.at} bytes ({problem}): every "  # type: ignore[attr-defined]
                    f"packet before the damage was read, nothing after it",
                )
            self._fh.close()

    @property
    def kind(self) -> str:
        """ "pcap" or "pcapng"."""
        return self._kind

    def _fill(self, carry: bytes, at: int) -> tuple[bytes, bool]:
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
            self._fh.seek(at)
            buf = self._fh.read(len(carry) + self.chunk)
            return buf, len(buf) <= len(carry)
        data = self._fh.read(self.chunk)
        return (carry + data if carry else data), not data

    def _fill_into(
        self, alloc: Callable[[int], memoryview], carry: bytes, at: int
    ) -> tuple[memoryview, bool]:
        """:meth:`_fill` into ``alloc(size)``, a writable buffer of at least
        ``size`` bytes; returns a view of the bytes read into it."""
        k = len(carry)
        if k and not self._seekable:
            carry = bytes(carry)  # (it may live in the buffer alloc hands out)
        need = k + self.chunk
        mv = alloc(need)[:need]
        if k and self._seekable:
            self._fh.seek(at)
            got = _read_into(self._fh, mv)
            return mv[:got], got <= k
        if k:
            mv[:k] = carry
        got = _read_into(self._fh, mv[k:])
        return mv[: k + got], got == 0

    def _pcap_batches(self) -> Iterator[FrameBatch]:
        lay = self._layout
        carry = b""
        base = 24  # absolute file offset of buf[0]
        frame_no = 0
        resync = False
        damage_start = 0
        while True:
            buf, eof = self._fill(carry, base)
            if not buf:
                break
            n = len(buf)
            pos = 0
            offs: list[int] = []
            while True:
                if resync:
                    status, p = pcap_scan(buf, pos, n, eof, lay, MAX_RECORD)
                    if status in ("more", "none"):
                        pos = p
                        break
                    self._damage(damage_start, base + p, frame_no + len(offs))
                    resync = False
                    pos = p
                    if status == "header":
                        frame_no, lay = yield from self._pcap_section(
                            buf, offs, frame_no, p, base + p
                        )
                        offs = []
                        pos += 24
                rec = lay.rec
                cap8_at = _CAP8_AT[lay.endian]
                pos = _walk(buf, pos, n, rec, lay.maxcap, lay.endian == ">", offs, cap8_at)
                if pos + rec > n:
                    if offs and not eof and pos < n:
                        # a header cut by the end of the buffer: read the record
                        # before it again with the next chunk (see below). At
                        # the very end of the buffer nothing is cut: the
                        # chunk's batch is every record read (a live stream's
                        # verdicts follow the batches)
                        pos = offs.pop()
                    break
                if is_pcap_header(buf, pos, n):
                    # another capture's file header (`cat a.pcap b.pcap`): its
                    # records follow in its own byte order and link type
                    frame_no, lay = yield from self._pcap_section(
                        buf, offs, frame_no, pos, base + pos
                    )
                    offs = []
                    pos += 24
                    continue
                cl, wl = cap8_at(buf, pos)
                if not (cl or wl) and any(lay.hdr_at(buf, pos)[:2]):
                    offs.append(pos)  # an empty record (a time, no bytes)
                    pos += rec
                    continue
                whole = cl <= lay.maxcap and bool(cl or wl)
                if whole and not eof:
                    # a whole record header, its data past the buffer: read it
                    # again with the next chunk, and the record before it too
                    # (if the record turns out damaged, the scan looks inside
                    # the one before, below)
                    if offs:
                        pos = offs.pop()
                    break
                # damage: an implausible record header (a caplen over the
                # snaplen, an all-zero header) or, at the end of the file, a
                # record running past it. Scan for where records start again,
                # from inside the record before it first: a record cut short
                # then more records (or another capture) reads as one whole
                # record that swallowed the next header.
                if offs:
                    status, p = pcap_scan(buf, offs[-1] + rec - 1, n, eof, lay, MAX_RECORD)
                    if status in ("found", "header") and p < pos:
                        damage_start = base + offs.pop()
                        pos = p - 1  # (the scan at the top finds it again)
                        resync = True
                        continue
                if whole and pcap_scan(buf, pos, n, True, lay, MAX_RECORD)[0] == "none":
                    break  # the last record, cut short: nothing after it
                resync = True
                damage_start = base + pos
            if offs:
                frame_no = yield from self._pcap_emit(buf, offs, frame_no, lay)
            if eof:
                if resync:
                    self._damage(damage_start, base + n, frame_no, at_end=True)
                elif pos < n:
                    self.info.warn(
                        "truncated_record",
                        1,
                        f"last record cut short ({n - pos} bytes): file truncated",
                    )
                break
            carry = buf[pos:]
            base += pos

    def _pcap_section(self, buf, offs: list[int], frame_no: int, p: int, at: int):
        """A pcap file header at ``buf[p]`` (file offset ``at``): emit the
        records before it, switch to its layout; returns (frames so far, the
        new layout)."""
        if offs:
            frame_no = yield from self._pcap_emit(buf, offs, frame_no, self._layout)
        self._layout = lay = pcap_layout(buf[p : p + 24], MAX_RECORD)
        if lay.linktype not in self.info.linktypes:
            self.info.linktypes.append(lay.linktype)
        self._sections += 1
        self.info.warnings["concatenated"] = [
            self._sections,
            f"pcap file headers inside the file (captures joined end to end), the first "
            f"at offset {at} after frame {frame_no}: each read on as a continuation",
        ]
        return frame_no, lay

    def _damage(self, start: int, end: int, frame_no: int, at_end: bool = False) -> None:
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

    def _pcap_emit(self, buf: bytes, offs: list[int], frame_no: int, lay: PcapLayout):
        o, hdr = _header_words(buf, offs, 4, lay.endian == ">")
        caplen = hdr[:, 2]
        wirelen = hdr[:, 3]
        bad = wirelen < caplen
        if bad.any():
            self.info.warn(
                "caplen_gt_len",
                int(bad.sum()),
                "records whose captured length exceeds their wire length (kept)",
            )
            wirelen = np.maximum(wirelen, caplen)
        frac = hdr[:, 1]
        lim = lay.frac_limit
        badts = frac >= lim
        if badts.any():
            self.info.warn(
                "bad_timestamp",
                int(badts.sum()),
                "records with an invalid sub-second timestamp (kept)",
            )
        ts = hdr[:, 0].astype(np.float64) + frac.astype(np.float64) * lay.scale
        n = len(o)
        fcs = lay.fcs
        if fcs:  # the FCS is not part of the frame's payload
            caplen_eff = np.maximum(caplen - fcs, 0)
            wirelen = np.maximum(wirelen - fcs, caplen_eff)
        else:
            caplen_eff = caplen
        batch = FrameBatch(
            buf=buf,
            off=o + lay.rec,
            caplen=caplen_eff,
            wirelen=wirelen,
            ts=ts,
            linktype=np.full(n, lay.linktype, dtype=np.int32),
            frame_no=np.arange(frame_no + 1, frame_no + n + 1, dtype=np.int64),
            file_index=self.file_index,
        )
        self._account(batch)
        yield batch
        return frame_no + n

    def _account(self, b: FrameBatch) -> None:
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

    # ---------------------------------------------------------------- pcapng
    def _pcapng_batches(self) -> Iterator[FrameBatch]:
        carry = b""
        frame_no = 0
        e = "<"
        # per interface: linktype, ts unit (seconds per tick), ts offset (s)
        ifaces: list[tuple[int, float, int]] = []
        self._ng_last_ts = 0.0
        first = True
        damaged_from: int | None = None  # absolute file offset where damage began
        base = 0  # absolute file offset of buf[0]
        while True:
            buf, eof = self._fill(carry, base)
            if not buf:
                break
            n = len(buf)
            pos = 0
            pk_pos: list[int] = []
            pk_if: list[int] = []
            pk_kind: list[int] = []  # 0 = EPB/PB layout, 1 = SPB
            section_flush = False
            while pos + 12 <= n:
                if damaged_from is None:
                    # the common blocks (whole, well-formed EPBs) in one loop
                    pos = _ng_walk(buf, pos, n, e == ">", pk_pos, pk_if, pk_kind)
                    if pos + 12 > n:
                        break
                btype, blen = struct.unpack_from(e + "II", buf, pos)
                if btype == 0x0A0D0D0A:
                    bom = buf[pos + 8 : pos + 12]
                    if len(bom) < 4:
                        break
                    new_e = (
                        "<"
                        if bom == b"\x4d\x3c\x2b\x1a"
                        else ">"
                        if bom == b"\x1a\x2b\x3c\x4d"
                        else None
                    )
                    if new_e is None:
                        if first:
                            raise CaptureError(f"{self.path}: pcapng section header is damaged")
                        damaged_from = base + pos if damaged_from is None else damaged_from
                        pos += 4
                        continue
                    if new_e != e and pk_pos:
                        section_flush = True
                        break
                    e = new_e
                    blen = struct.unpack_from(e + "I", buf, pos + 4)[0]
                    ifaces = []
                first = False
                bad_len = blen < 12 or blen % 4 or blen > NG_MAX_BLOCK
                if not bad_len and pos + blen > n:
                    if not eof:
                        break
                    # a block running past the end of the file: the last one,
                    # cut short, or a damaged header with whole blocks after it
                    q, found = ng_scan(buf, pos + 4, n, e, True, NG_MAX_BLOCK)
                    if not found:
                        break
                    damaged_from = base + pos if damaged_from is None else damaged_from
                    pos = q
                    continue
                if bad_len or struct.unpack_from(e + "I", buf, pos + blen - 4)[0] != blen:
                    damaged_from = base + pos if damaged_from is None else damaged_from
                    pos, found = ng_scan(buf, pos + 4, n, e, eof, NG_MAX_BLOCK)
                    if not found:
                        break  # wait for more data (or end of file)
                    continue
                if damaged_from is not None:
                    self._damage(damaged_from, base + pos, frame_no + len(pk_pos))
                    damaged_from = None
                if btype == 6 or btype == 2:
                    if blen >= 32:
                        if btype == 6:
                            iface = struct.unpack_from(e + "I", buf, pos + 8)[0]
                        else:
                            iface = struct.unpack_from(e + "H", buf, pos + 8)[0]
                        pk_pos.append(pos)
                        pk_if.append(iface)
                        pk_kind.append(0)
                    else:
                        self.info.warn(
                            "damaged_blocks", 1, "packet blocks too short to hold a packet"
                        )
                elif btype == 3:
                    if blen >= 16:
                        pk_pos.append(pos)
                        pk_if.append(0)
                        pk_kind.append(1)
                elif btype == 1:
                    ifaces.append(self._parse_idb(buf, pos, blen, e))
                    lt = ifaces[-1][0]
                    if lt not in self.info.linktypes:
                        self.info.linktypes.append(lt)
                pos += blen
            if first and n >= 4 and pos == 0 and eof:
                raise CaptureError(f"{self.path}: truncated pcapng section header")
            if pk_pos:
                frame_no = yield from self._pcapng_emit(
                    buf, pk_pos, pk_if, pk_kind, ifaces, e, frame_no
                )
            if section_flush:
                carry = buf[pos:]
                base += pos
                continue
            if eof:
                if damaged_from is not None:
                    self._damage(damaged_from, base + n, frame_no, at_end=True)
                elif pos < n:
                    self.info.warn(
                        "truncated_record",
                        1,
                        f"last block cut short ({n - pos} bytes): file truncated",
                    )
                break
            carry = buf[pos:]
            base += pos

    @staticmethod
    def _parse_idb(buf: bytes, pos: int, blen: int, e: str) -> tuple[int, float, int]:
        lt = struct.unpack_from(e + "H", buf, pos + 8)[0] if blen >= 20 else 0xFFFF
        unit = 1e-6
        tsoff = 0
        p = pos + 16
        end = pos + blen - 4
        while p + 4 <= end:
            code, olen = struct.unpack_from(e + "HH", buf, p)
            if code == 0:
                break
            val = buf[p + 4 : p + 4 + olen]
            if code == 9 and olen >= 1:
                v = val[0]
                unit = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
            elif code == 14 and olen >= 8:
                tsoff = struct.unpack_from(e + "q", val)[0]
            p += 4 + ((olen + 3) & ~3)
        return lt, unit, tsoff

    def _pcapng_emit(self, buf, pk_pos, pk_if, pk_kind, ifaces, e, frame_no):
        o, hdr = _header_words(buf, pk_pos, 7, e == ">", pk_kind, 3)
        iface = np.asarray(pk_if, dtype=np.int64)
        kind = np.asarray(pk_kind, dtype=np.int8)
        n = len(o)
        blen = hdr[:, 1]
        spb = kind == 1
        caplen = np.where(spb, np.minimum(hdr[:, 2], blen - 16), hdr[:, 5])
        wirelen = np.where(spb, hdr[:, 2], hdr[:, 6])
        data_off = np.where(spb, o + 12, o + 28)
        room = np.where(spb, blen - 16, blen - 32)
        bad = (caplen > room) | (caplen < 0)
        nif = len(ifaces)
        undefined = iface >= nif
        drop = bad | undefined
        if undefined.any():
            self.info.warn(
                "undefined_interface",
                int(undefined.sum()),
                "packets referencing an interface with no description block (skipped)",
            )
        if bad.any():
            self.info.warn(
                "damaged_blocks",
                int(bad.sum()),
                "packet blocks with an impossible length (skipped)",
            )
        ticks = (hdr[:, 3].astype(np.uint64) << np.uint64(32)) | hdr[:, 4].astype(np.uint64)
        if nif:
            lt_tab = np.array([i[0] for i in ifaces], dtype=np.int32)
            ii = np.where(undefined, 0, iface)
            lt = lt_tab[ii]
            ts = np.zeros(n, dtype=np.float64)
            for k, (_lt, unit, tsoff) in enumerate(ifaces):
                sel = ii == k
                if sel.any():
                    ts[sel] = _ticks_to_s(ticks[sel], unit) + tsoff
        else:
            lt = np.zeros(n, dtype=np.int32)
            ts = np.zeros(n, dtype=np.float64)
        if spb.any():
            # simple packet blocks carry no timestamp: use the previous packet's
            # (carried over chunk boundaries; 0.0 when nothing came before)
            ts = np.concatenate(([self._ng_last_ts], ts))
            idx = np.where(np.concatenate(([True], ~spb)), np.arange(n + 1), 0)
            np.maximum.accumulate(idx, out=idx)
            ts = ts[idx][1:]
        if n:
            self._ng_last_ts = float(ts[-1])
        wirelen = np.maximum(wirelen, caplen)
        fno = np.arange(frame_no + 1, frame_no + n + 1, dtype=np.int64)
        keep = ~drop
        if drop.any():
            data_off, caplen, wirelen, ts, lt, fno = (
                a[keep] for a in (data_off, caplen, wirelen, ts, lt, fno)
            )
        batch = FrameBatch(
            buf=buf,
            off=data_off,
            caplen=caplen,
            wirelen=wirelen,
            ts=ts,
            linktype=lt.astype(np.int32),
            frame_no=fno,
            file_index=self.file_index,
        )
        self._account(batch)
        yield batch
        return frame_no + n


def _ticks_to_s(ticks: np.ndarray, unit: float) -> np.ndarray:
    """pcapng timestamp ticks (uint64) -> seconds, keeping ns precision.

    Whole seconds and the remainder are split in integers when a second is a
    whole number of ticks that fits in 64 bits (if_tsresol 10^-0..10^-19 and
    2^-0..2^-63); any other resolution (corrupt IDBs) is plain float math.
    """
    tps = round(1.0 / unit)
    if 1 <= tps < 2**63 and abs(tps * unit - 1.0) < 1e-9:
        t = np.uint64(tps)
        whole = ticks // t
        rem = ticks - whole * t
        return whole.astype(np.float64) + rem.astype(np.float64) * unit
    return ticks.astype(np.float64) * unit


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
