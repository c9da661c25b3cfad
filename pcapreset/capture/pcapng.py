"""pcapng: the blocks of a pcapng file -> batches of raw frames.

Enhanced Packet Blocks, the common case, are walked by :func:`_ng_walk`
(compiled when Cython built this module, see pcapng.pxd); every other block
(section and interface descriptions, simple and obsolete packet blocks,
damage) goes through the block loop of :func:`pcapng_batches`. A block
whose two lengths disagree starts a resynchronisation scan (:mod:`.resync`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..errors import CaptureError
from .pcap import _header_words
from .resync import ng_scan
from .sources import MAX_RECORD, FrameBatch

if TYPE_CHECKING:
    from .sources import CaptureReader

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled


def _u32(v, p: int, big: bool) -> int:
    """The unsigned 32-bit integer at ``v[p:p + 4]`` (compiled build only:
    :func:`_ng_walk`, where ``v`` is a C pointer to the buffer's first byte;
    pcap.py has the same for its record walk: an inline C function is not
    shared between modules in pure Python mode)."""
    a, b, c, d = v[p], v[p + 1], v[p + 2], v[p + 3]
    if big:
        return a << 24 | b << 16 | c << 8 | d
    return d << 24 | c << 16 | b << 8 | a


#: the longest pcapng block accepted before calling it damage
NG_MAX_BLOCK = MAX_RECORD + 64


def _ng_walk(buf, pos: int, n: int, big: bool, pk_pos: list[int], pk_if: list[int],
             pk_kind: list[int]) -> int:  # fmt: skip
    """Compiled (pcapng.pxd): record every whole, well-formed Enhanced Packet
    Block from ``pos`` on (type 6, a plausible length of at least 32, the
    trailing length equal, inside ``buf``) exactly as the block loop in
    ``pcapng_batches`` would, and return the position of the first block it
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


def pcapng_batches(r: CaptureReader) -> Iterator[FrameBatch]:
    """The frames of a pcapng file, a chunk at a time."""
    carry = b""
    frame_no = 0
    e = "<"
    # per interface: linktype, ts unit (seconds per tick), ts offset (s)
    ifaces: list[tuple[int, float, int]] = []
    r.ng_last_ts = 0.0
    first = True
    damaged_from: int | None = None  # absolute file offset where damage began
    base = 0  # absolute file offset of buf[0]
    while True:
        buf, eof = r.fill(carry, base)
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
                        raise CaptureError(f"{r.path}: pcapng section header is damaged")
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
                r.damage(damaged_from, base + pos, frame_no + len(pk_pos))
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
                    r.info.warn("damaged_blocks", 1, "packet blocks too short to hold a packet")
            elif btype == 3:
                if blen >= 16:
                    pk_pos.append(pos)
                    pk_if.append(0)
                    pk_kind.append(1)
            elif btype == 1:
                ifaces.append(_parse_idb(buf, pos, blen, e))
                lt = ifaces[-1][0]
                if lt not in r.info.linktypes:
                    r.info.linktypes.append(lt)
            pos += blen
        if first and n >= 4 and pos == 0 and eof:
            raise CaptureError(f"{r.path}: truncated pcapng section header")
        if pk_pos:
            frame_no = yield from _pcapng_emit(r, buf, pk_pos, pk_if, pk_kind, ifaces, e, frame_no)
        if section_flush:
            carry = buf[pos:]
            base += pos
            continue
        if eof:
            r.end_of_file(damaged_from, base + n, frame_no, n - pos, "block")
            break
        carry = buf[pos:]
        base += pos


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


def _pcapng_emit(r: CaptureReader, buf, pk_pos, pk_if, pk_kind, ifaces, e, frame_no):
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
        r.info.warn(
            "undefined_interface",
            int(undefined.sum()),
            "packets referencing an interface with no description block (skipped)",
        )
    if bad.any():
        r.info.warn(
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
        ts = np.concatenate(([r.ng_last_ts], ts))
        idx = np.where(np.concatenate(([True], ~spb)), np.arange(n + 1), 0)
        np.maximum.accumulate(idx, out=idx)
        ts = ts[idx][1:]
    if n:
        r.ng_last_ts = float(ts[-1])
    wirelen = np.maximum(wirelen, caplen)
    fno = np.arange(frame_no + 1, frame_no + n + 1, dtype=np.int64)
    keep = ~drop
    if drop.any():
        data_off, caplen, wirelen, ts, lt, fno = (  # type: ignore[assignment]
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
        file_index=r.file_index,
    )
    r.account(batch)
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
