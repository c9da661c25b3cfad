"""pcap: the records of a pcap file -> batches of raw frames.

The one loop over every record of a file is :func:`_walk` (compiled when
Cython built this module, see pcap.pxd; else one ``struct.unpack_from`` per
record); every other header field is gathered for the whole chunk at once
(:func:`_header_words`). A record whose header is not plausible starts a
resynchronisation scan (:mod:`.resync`); another capture's file header
inside the file (``cat a.pcap b.pcap``) starts a new section. The reader
(:class:`~pcapreset.capture.sources.CaptureReader`) opens the file and hands
out its chunks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..errors import CaptureError
from .resync import PcapLayout, is_pcap_header, pcap_layout, pcap_scan
from .sources import MAX_RECORD, FrameBatch

if TYPE_CHECKING:
    from .sources import CaptureReader

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled

#: per byte order: the (caplen, wirelen) of the record header at a position
_CAP8_AT = {e: struct.Struct(e + "8xII").unpack_from for e in "<>"}


def _u32(v, p: int, big: bool) -> int:
    """The unsigned 32-bit integer at ``v[p:p + 4]`` (compiled build only:
    the record walk and the header gather below, where ``v`` is a C pointer to the
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

    The one loop over every record of the file. Compiled (pcap.pxd), it
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


def _header_words(
    buf, offs: list[int], width: int, big: bool, kinds: list[int] | None = None, short: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The headers at ``offs`` (pcap records, pcapng packet blocks): their
    offsets and the ``width`` 32-bit words at each, as int64 arrays. Rows
    whose ``kinds`` entry is not 0 hold only ``short`` words (a pcapng simple
    packet block; the rest are never used, and may even lie past the buffer).
    Compiled (pcap.pxd), one loop; else numpy gathers."""
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


def read_header(r: CaptureReader) -> None:
    """Read a pcap file's header: its layout, format and link type."""
    hdr = r.fh.read(24)
    if len(hdr) < 24:
        r.fh.close()
        raise CaptureError(f"{r.path}: truncated pcap file header ({len(hdr)} of 24 bytes)")
    r.layout = pcap_layout(hdr, MAX_RECORD)
    r.info.file_format = "pcap" + ("-ns" if r.layout.scale == 1e-9 else "")
    r.info.linktypes = [r.layout.linktype]


def pcap_batches(r: CaptureReader) -> Iterator[FrameBatch]:
    """The frames of a pcap file, a chunk at a time (its file header is read:
    :func:`read_header`)."""
    lay = r.layout
    assert lay is not None  # (read_header)
    carry = b""
    base = 24  # absolute file offset of buf[0]
    frame_no = 0
    resync = False
    damage_start = 0
    while True:
        buf, eof = r.fill(carry, base)
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
                r.damage(damage_start, base + p, frame_no + len(offs))
                resync = False
                pos = p
                if status == "header":
                    frame_no, lay = yield from _pcap_section(r, buf, offs, frame_no, p, base + p)
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
                frame_no, lay = yield from _pcap_section(r, buf, offs, frame_no, pos, base + pos)
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
            frame_no = yield from _pcap_emit(r, buf, offs, frame_no, lay)
        if eof:
            r.end_of_file(damage_start if resync else None, base + n, frame_no, n - pos, "record")
            break
        carry = buf[pos:]
        base += pos


def _pcap_section(r: CaptureReader, buf, offs: list[int], frame_no: int, p: int, at: int):
    """A pcap file header at ``buf[p]`` (file offset ``at``): emit the
    records before it, switch to its layout; returns (frames so far, the
    new layout)."""
    if offs:
        assert r.layout is not None
        frame_no = yield from _pcap_emit(r, buf, offs, frame_no, r.layout)
    r.layout = lay = pcap_layout(buf[p : p + 24], MAX_RECORD)
    if lay.linktype not in r.info.linktypes:
        r.info.linktypes.append(lay.linktype)
    r.sections += 1
    r.info.warnings["concatenated"] = [
        r.sections,
        f"pcap file headers inside the file (captures joined end to end), the first "
        f"at offset {at} after frame {frame_no}: each read on as a continuation",
    ]
    return frame_no, lay


def _pcap_emit(r: CaptureReader, buf: bytes, offs: list[int], frame_no: int, lay: PcapLayout):
    o, hdr = _header_words(buf, offs, 4, lay.endian == ">")
    caplen = hdr[:, 2]
    wirelen = hdr[:, 3]
    bad = wirelen < caplen
    if bad.any():
        r.info.warn(
            "caplen_gt_len",
            int(bad.sum()),
            "records whose captured length exceeds their wire length (kept)",
        )
        wirelen = np.maximum(wirelen, caplen)
    frac = hdr[:, 1]
    lim = lay.frac_limit
    badts = frac >= lim
    if badts.any():
        r.info.warn(
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
        file_index=r.file_index,
    )
    r.account(batch)
    yield batch
    return frame_no + n
