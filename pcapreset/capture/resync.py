"""resync: where readable records start again after damage in a capture file.

pcap has no sync markers, so a candidate record header is judged by the
records that follow it: it is accepted when it and the next
:data:`CHAIN` headers are all plausible and their times step forward by less
than :data:`MAX_STEP_S` each (or the chain ends exactly at the end of the
file). Nothing is compared with the last good record's time, so a run of
zeroed or garbage headers (a zeroed disk block reads as records at time 0)
cannot make the reader reject every real record after it. A second capture's
file header (``cat a.pcap b.pcap``) is recognised the same way: a pcap magic,
version 2, and a plausible chain after it.

pcapng blocks carry their length twice; a candidate block is accepted when
its header and trailer agree and the block after it starts plausibly too
(or the file ends right after it), so a stray pair of words that reads as a
block whose length runs past the end of the file is not locked onto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

#: records after a candidate that must be plausible too
CHAIN = 3
#: the largest step between the times of two records of a chain
MAX_STEP_S = 86400
#: candidate positions examined per numpy pass
WINDOW = 1 << 16


@dataclass(frozen=True, slots=True)
class PcapLayout:
    """The record format of one pcap section (file header)."""

    endian: str  # "<" or ">"
    scale: float  # seconds per sub-second tick
    rec: int  # record header size: 16, or 24 for the "modified" format
    snaplen: int
    linktype: int
    fcs: int  # FCS bytes at the end of each frame
    maxcap: int  # the largest plausible caplen

    @property
    def hdr_at(self):  # noqa: ANN201 - a struct's unpack_from
        """``hdr_at(buf, p)``: (sec, frac, caplen, wirelen) of the record at ``p``."""
        return _HDR_AT[self.endian]

    @property
    def frac_limit(self) -> int:
        return 1_000_000 if self.scale == 1e-6 else 1_000_000_000


_HDR_AT = {e: struct.Struct(e + "IIII").unpack_from for e in "<>"}

#: magic -> (byte order, sub-second unit, record header size)
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    # Alexey Kuznetzov's "modified" pcap: 8 extra bytes per record header
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}


def pcap_layout(hdr: bytes, max_record: int) -> PcapLayout:
    """The layout a 24-byte pcap file header announces (its magic is known)."""
    endian, scale, rec = PCAP_MAGICS[bytes(hdr[:4])]
    _maj, _min, _zone, _sig, snaplen, network = struct.unpack(endian + "HHiIII", hdr[4:24])
    # F bit set: the top 4 bits give the FCS length in 16-bit words (pcap
    # spec, draft-ietf-opsawg-pcap "LinkType and additional information")
    fcs = 2 * ((network >> 28) & 0xF) if network & 0x04000000 else 0
    maxcap = min(max(snaplen, 262144), max_record)
    return PcapLayout(endian, scale, rec, snaplen, network & 0x03FFFFFF, fcs, maxcap)


def is_pcap_header(buf, p: int, n: int) -> bool:
    """A pcap file header (a known magic, major version 2) at ``p``."""
    if p + 24 > n:
        return False
    magic = bytes(buf[p : p + 4])
    if magic not in PCAP_MAGICS:
        return False
    major = struct.unpack_from(PCAP_MAGICS[magic][0] + "H", buf, p + 4)[0]
    return bool(major == 2)


def plausible(lay: PcapLayout, hdr: tuple[int, int, int, int], max_record: int) -> bool:
    """A record header (sec, frac, caplen, wirelen) that could start a chain
    after damage: a caplen within the snaplen and at most the wire length, a
    wire length that is not 0 and not absurd, a valid sub-second field."""
    _sec, frac, cl, wl = hdr
    return cl <= lay.maxcap and 0 < wl <= max_record and cl <= wl and frac < lay.frac_limit


def chain_ok(buf, p: int, n: int, eof: bool, lay: PcapLayout, max_record: int) -> str:
    """Judge the record header at ``p`` by the records that follow it:
    "ok", "bad", or "more" (the buffer ends before a decision)."""
    hdr_at = lay.hdr_at
    rec = lay.rec
    prev: int | None = None
    q = p
    for k in range(CHAIN + 1):
        if k and q == n and eof:
            return "ok"  # the chain runs to the exact end of the file
        if q + rec > n:
            return "bad" if eof else "more"
        h = hdr_at(buf, q)
        if not plausible(lay, h, max_record):
            if k and is_pcap_header(buf, q, n):
                return "ok"  # the records run into another capture's header
            return "bad"
        if prev is not None and abs(h[0] - prev) > MAX_STEP_S:
            return "bad"
        prev = h[0]
        q += rec + h[2]
        if q > n:
            return "bad" if eof else "more"
    return "ok"


def _u32s(u8: np.ndarray, start: int, m: int, big: bool) -> np.ndarray:
    """The ``m`` unsigned 32-bit words at ``start``, ``start + 1``, ... (every
    byte offset) of ``u8``."""
    b = [u8[start + j : start + j + m].astype(np.uint32) for j in range(4)]
    if big:
        return (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]
    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)


def pcap_scan(
    buf, pos: int, n: int, eof: bool, lay: PcapLayout, max_record: int
) -> tuple[str, int]:
    """The next place after ``pos`` where records start again.

    Returns ``("found", p)`` (a record chain at ``p``), ``("header", p)`` (a
    pcap file header at ``p``: another capture's records follow),
    ``("more", p)`` (the buffer ran out before a decision: resume at ``p``
    with more data) or ``("none", n)`` (nothing readable up to the end of the
    file).
    """
    u8 = np.frombuffer(buf, dtype=np.uint8, count=n)
    rec = lay.rec
    big = lay.endian == ">"
    p0 = pos + 1
    while True:
        last = n - 16  # the last position with room for the fields checked
        if p0 > last:
            break
        m = min(WINDOW, last - p0 + 1)
        frac = _u32s(u8, p0 + 4, m, big)
        cl = _u32s(u8, p0 + 8, m, big)
        wl = _u32s(u8, p0 + 12, m, big)
        ok = (cl <= lay.maxcap) & (wl > 0) & (wl <= max_record) & (cl <= wl)
        ok &= frac < lay.frac_limit
        cand = np.flatnonzero(ok).tolist()
        window = bytes(u8[p0 : p0 + m + 3])
        for magic in PCAP_MAGICS:
            at = window.find(magic)
            while at >= 0:
                cand.append(at)
                at = window.find(magic, at + 1)
        for c in sorted(set(cand)):
            p = p0 + c
            if is_pcap_header(buf, p, n):
                verdict = (
                    "ok"
                    if p + 24 == n and eof
                    else chain_ok(
                        buf, p + 24, n, eof, pcap_layout(buf[p : p + 24], max_record), max_record
                    )
                )
                if verdict == "ok":
                    return "header", p
                if verdict == "more":
                    return "more", p - 1
                continue
            if p + rec > n:
                continue
            verdict = chain_ok(buf, p, n, eof, lay, max_record)
            if verdict == "ok":
                return "found", p
            if verdict == "more":
                return "more", p - 1
        p0 += m
    if eof:
        return "none", n
    # (the next scan starts one byte on: at the first position not examined)
    return "more", max(pos, n - 25)


#: pcapng block types a resynchronisation may land on
NG_KNOWN = frozenset((1, 2, 3, 4, 5, 6, 0x0A0D0D0A, 0x0BAD, 7, 9, 10, 0x40000BAD))


def ng_block_ok(buf, p: int, n: int, e: str, max_block: int) -> tuple[bool, int]:
    """(whether the block at ``p`` has a known type, a plausible length and a
    matching trailer, its length); the length is 0 when the header itself
    is not plausible."""
    btype, blen = struct.unpack_from(e + "II", buf, p)
    if btype not in NG_KNOWN or not 12 <= blen <= max_block or blen % 4:
        return False, 0
    if p + blen > n:
        return False, blen
    return struct.unpack_from(e + "I", buf, p + blen - 4)[0] == blen, blen


def ng_scan(buf, p: int, n: int, e: str, eof: bool, max_block: int) -> tuple[int, bool]:
    """The next position from ``p`` on (4-byte steps) whose block header and
    trailer agree and whose next block starts plausibly too (or the file
    ends right after it). Returns ``(p, True)`` when found, ``(p, False)``
    when the buffer ran out first: resume at ``p`` once more data is there
    (``p == n`` at end of file)."""
    while p + 12 <= n:
        whole, blen = ng_block_ok(buf, p, n, e, max_block)
        if blen and p + blen > n and not eof:
            return p, False
        if whole:
            nxt = p + blen
            if nxt == n and eof:
                return p, True
            if nxt + 12 > n:
                return p, eof  # (at the end: a block, then a cut-off tail)
            btype, blen2 = struct.unpack_from(e + "II", buf, nxt)
            if btype in NG_KNOWN and 12 <= blen2 <= max_block and blen2 % 4 == 0:
                return p, True
        p += 4
    return (n, False) if eof else (p, False)
