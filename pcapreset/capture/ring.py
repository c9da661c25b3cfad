"""ring: a memory-mapped ``AF_PACKET`` receive ring (``TPACKET_V3``), read by block.

The kernel writes the packets that pass the socket's filter into blocks of a
ring shared with this process (packet(7), the kernel's
Documentation/networking/packet_mmap.rst): no system call per packet. A block
is handed over (``TP_STATUS_USER``) when it is full or ``RETIRE_MS`` after its
first packet; :meth:`RxRing.take` turns it into pcap records laid out as
:mod:`pcapreset.capture.live` lays out its batches (16-byte record header,
20-byte LINUX_SLL2 header built from the packet's ``sockaddr_ll``, the packet
from its network header on) and gives the block back (``TP_STATUS_KERNEL``).
"""

from __future__ import annotations

import mmap
import socket
import struct

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
BLOCK_BYTES = 1 << 18
BLOCKS = 256  # 64 MiB, as the socket buffer without a ring
FRAME_BYTES = 2048  # (V3 packs packets by size; the kernel checks only this arithmetic)
#: a block is handed over when full or this long after it was opened: a block
#: is in use for at least that long, so the ring holds at least BLOCKS x this
#: much time of traffic (12.8 s; at 10 ms it was 0.64 s and dropped at 50k/s)
RETIRE_MS = 50
#: tpacket3_hdr (48 bytes with TPACKET_ALIGN) then sockaddr_ll
SLL_AT = 48
REC_HDR = 16
SLL2_HDR = 20
HDR = REC_HDR + SLL2_HDR
#: the record + SLL2 header of one packet, as live.py writes them
_HDR_DT = np.dtype(
    [("sec", "<u4"), ("nsec", "<u4"), ("cap", "<u4"), ("wire", "<u4"), ("proto", ">u2"),
     ("res", ">u2"), ("ifindex", ">u4"), ("hatype", ">u2"), ("pkttype", "u1"), ("halen", "u1"),
     ("addr", "V8")]
)  # fmt: skip
_R8 = np.arange(8, dtype=np.int64)
_R16 = np.arange(REC_HDR, dtype=np.int64)
_R36 = np.arange(HDR, dtype=np.int64)
#: True when this module runs compiled (setup.py: the block walk is typed)
COMPILED: bool = cython.compiled


class RxRing:
    """The receive ring of packet socket ``sock`` (set up here; raises OSError
    when the kernel refuses it)."""

    def __init__(self, sock: socket.socket, blocks: int = BLOCKS) -> None:
        self.blocks = blocks
        req = struct.pack(
            "7I", BLOCK_BYTES, blocks, FRAME_BYTES, BLOCK_BYTES // FRAME_BYTES * blocks,
            RETIRE_MS, 0, 0,
        )  # fmt: skip
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(
            sock.fileno(), BLOCK_BYTES * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.mv = memoryview(self.mm)
        self.u32 = self.mv.cast("I")
        self.u16 = self.mv.cast("H")
        self.u8 = np.frombuffer(self.mm, dtype=np.uint8)
        self.next = 0  # the block to read next

    def ready(self) -> bool:
        """Whether the next block is ours."""
        return bool(self.u32[self.next * BLOCK_BYTES // 4 + 2] & TP_STATUS_USER)

    def take(self, out: bytearray, at: int, ethernet: bool = False) -> tuple[int, list[int]]:
        """Append the next block's packets to ``out`` from ``at`` on as pcap
        records; give the block back. (End position, record starts.)
        ``ethernet``: the socket is a raw one on an Ethernet interface, and
        the records hold its frames as they are (no SLL2 header)."""
        base = self.next * BLOCK_BYTES
        u32, u16, mv = self.u32, self.u16, self.mv
        n = u32[base // 4 + 3]
        o = base + u32[base // 4 + 4]
        heads: list[int] = []
        starts: list[int] = []
        hl = REC_HDR if ethernet else HDR
        field = 12 if ethernet else 13  # tp_mac: the frame; tp_net: a cooked packet
        pos = _walk(u32, u16, mv, memoryview(out), o, n, at, hl, field, heads, starts)
        if n:
            self._headers(np.asarray(heads, dtype=np.int64), out, starts, ethernet)
        u32[base // 4 + 2] = TP_STATUS_KERNEL
        self.next = (self.next + 1) % self.blocks
        return pos, starts

    def _headers(self, h: np.ndarray, out: bytearray, starts: list[int], ethernet: bool) -> None:
        """Write the record (and SLL2) headers of the packets whose tpacket3
        headers are at ``h`` (all at once)."""
        u8 = self.u8
        w = u8.view("<u4")
        s = h + SLL_AT
        hdr = np.zeros(len(h), dtype=_HDR_DT)
        link = 0 if ethernet else SLL2_HDR
        hdr["sec"] = w[h // 4 + 1]
        hdr["nsec"] = w[h // 4 + 2]
        hdr["cap"] = w[h // 4 + 3] + link
        hdr["wire"] = w[h // 4 + 4] + link
        dst = np.frombuffer(out, dtype=np.uint8)
        at = np.asarray(starts, dtype=np.int64)
        if ethernet:
            dst[at[:, None] + _R16] = hdr.view(np.uint8).reshape(-1, HDR)[:, :REC_HDR]
            return
        hdr["proto"] = u8[s + 2].astype(np.uint16) << 8 | u8[s + 3]  # (network order)
        hdr["ifindex"] = w[(s + 4) // 4]
        hdr["hatype"] = u8.view("<u2")[(s + 8) // 2]
        hdr["pkttype"] = u8[s + 10]
        hdr["halen"] = u8[s + 11]
        hdr["addr"] = u8[(s + 12)[:, None] + _R8].view("V8").ravel()
        dst[at[:, None] + _R36] = hdr.view(np.uint8).reshape(-1, HDR)

    def close(self) -> None:
        for v in (self.u32, self.u16, self.mv):
            v.release()
        self.u8 = np.zeros(0, dtype=np.uint8)
        self.mm.close()


def _walk(u32, u16, u8, out, o: int, n: int, pos: int, hl: int, field: int, heads: list,
          starts: list) -> int:  # fmt: skip
    """Copy the ``n`` packets of a block, the first one's tpacket3_hdr at
    ``o``, into ``out`` from ``pos`` on, each ``hl`` bytes after its record's
    start (its headers are written after); note where each one's header was
    and where its record starts. ``u32``, ``u16``, ``u8``: the ring as words,
    half-words and bytes; ``field``: the half-word of the header that gives
    where the packet begins. The end position.

    The one loop over every packet of the ring. Compiled (ring.pxd), it
    copies with memcpy over typed buffers; as plain Python, a slice per packet.
    """
    if cython.compiled:
        for _ in range(n):
            snap = u32[o // 4 + 3]
            data = o + u16[o // 2 + field]
            d = pos + hl
            if snap:
                if d + snap > len(out) or data + snap > len(u8):
                    raise ValueError("a ring packet past its buffer")
                memcpy(cython.address(out[d]), cython.address(u8[data]), snap)  # type: ignore[name-defined]  # noqa: F821
            heads.append(o)
            starts.append(pos)
            pos += hl + snap
            o += u32[o // 4]  # tp_next_offset
        return pos
    for _ in range(n):
        snap = u32[o // 4 + 3]
        data = o + u16[o // 2 + field]
        out[pos + hl : pos + hl + snap] = u8[data : data + snap]
        heads.append(o)
        starts.append(pos)
        pos += hl + snap
        o += u32[o // 4]  # tp_next_offset
    return pos
