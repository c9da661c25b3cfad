"""A deliberately simple, slow reference decoder built on dpkt.

One Python object per layer per packet, no numpy, no cleverness: it exists to
cross-check the fast path (``pcapreset.capture.sources`` + ``pcapreset.capture.decode``) packet
by packet in ``test_reference.py``.

What dpkt does, and what this file adds around it:

* pcap: ``dpkt.pcap.Reader`` (µs, ns, both byte orders, the modified format).
  dpkt does not give the record's wire length, so IPv4 total length 0
  (TSO/GSO) falls back to the captured length here.
* pcapng: ``dpkt.pcapng.Reader`` reads only the first interface of the first
  section (its if_tsresol applies to every packet), so the blocks are walked
  here with dpkt's own block classes (SectionHeaderBlock,
  InterfaceDescriptionBlock, EnhancedPacketBlock, PacketBlock) and each
  packet gets its own interface's link type, if_tsresol and if_tsoffset.
  dpkt has no Simple Packet Block class: SPBs raise :class:`Unsupported`.
* link layers: ``dpkt.ethernet.Ethernet`` (802.1Q/QinQ/PPPoE, but also MPLS
  and 802.3 LLC/SNAP, which the fast path does not decode -- those frames are
  reported as ``skipped_encap`` here so the comparison can name them),
  ``dpkt.sll.SLL``, ``dpkt.sll2.SLL2``, FDDI (13-byte header by hand, then
  ``dpkt.llc.LLC``), ``dpkt.loopback.Loopback`` (NULL/LOOP;
  dpkt does not know Linux's AF_INET6 = 10), raw IPv4/IPv6 by version nibble.
* 802.11 data frames (link type 105): ``dpkt.ieee80211.IEEE80211`` (its
  QoS data field), then ``dpkt.llc.LLC``.
* tunnels, opened here by hand from the RFCs and vendor documents (dpkt has no
  ERSPAN, VXLAN or Geneve): GRE (fields from ``dpkt.gre.GRE``; IPv4, IPv6,
  transparent Ethernet bridging, ERSPAN I/II/III, Aruba 802.11), VXLAN on UDP
  4789/8472 and Geneve on UDP 6081 (``dpkt.udp.UDP``); the inner frame is
  decoded like a frame of its link type, at most 4 tunnels deep.
* IPv4/IPv6/TCP: ``dpkt.ip.IP``, ``dpkt.ip6.IP6``, ``dpkt.tcp.TCP``. dpkt only
  notices an IPv6 non-first fragment when the fragment header comes first, so
  the extension header chain is checked here. Payload length comes from the IP
  lengths (IPv4 total length - IHL - TCP data offset; IPv6 payload length -
  extension headers - TCP data offset), never from the captured bytes.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import dpkt
from dpkt import pcapng as ng


class Unsupported(Exception):
    """The reference cannot read this file (a dpkt limitation named in the message)."""


@dataclass(frozen=True)
class RefPacket:
    ts: float
    src: str  # "ip:port" / "[ip6]:port"
    dst: str
    seq: int
    ack: int
    flags: int  # 9 bits incl. NS
    win: int
    plen: int  # from the IP lengths
    ttl: int
    ipid: int  # -1 for IPv6
    opts: bytes
    payload: bytes  # captured payload bytes (may be shorter than plen)
    frame_no: int

    def key(self) -> tuple:
        """What the comparison looks at (ts rounded to 0.1 µs)."""
        return (round(self.ts, 7), self.src, self.dst, self.seq, self.ack, self.flags,
                self.win, self.plen, self.ttl, self.ipid, len(self.opts))  # fmt: skip


@dataclass
class RefResult:
    packets: list[RefPacket]
    frames: int = 0
    skipped_encap: int = 0  # frames dpkt decodes but pcapreset does not (MPLS, LLC/SNAP)


def _open(path: str) -> IO[bytes]:
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return bz2.open(path, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115


# ------------------------------------------------------------------- frames
def frames(path: str) -> Iterator[tuple[float, int, bytes]]:
    """(ts, linktype, frame bytes) for every record."""
    with _open(path) as f:
        magic = f.read(4)
        f.seek(0)
        if magic == b"\x0a\x0d\x0d\x0a":
            yield from _pcapng_frames(f)
            return
        try:
            r = dpkt.pcap.Reader(f)
        except (ValueError, dpkt.NeedData) as e:
            raise Unsupported(f"dpkt.pcap.Reader: {e}") from None
        lt = r.datalink() & 0x03FFFFFF
        try:
            for ts, buf in r:
                yield float(ts), lt, buf
        except (dpkt.NeedData, dpkt.UnpackError, struct.error) as e:
            raise Unsupported(f"dpkt.pcap.Reader stopped: {e!r}") from None


def _pcapng_frames(f: IO[bytes]) -> Iterator[tuple[float, int, bytes]]:
    le = True
    ifaces: list[tuple[int, int, int, int]] = []  # linktype, base, exponent, tsoffset
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        btype = struct.unpack("<I", head[:4])[0]
        if btype == 0x0A0D0D0A:
            bom = f.read(4)
            le = bom == b"\x4d\x3c\x2b\x1a"
            blen = struct.unpack("<I" if le else ">I", head[4:])[0]
            f.read(blen - 12)
            ifaces = []
            continue
        e = "<" if le else ">"
        btype, blen = struct.unpack(e + "II", head)
        if blen < 12:
            raise Unsupported(f"pcapng block of impossible length {blen}")
        buf = head + f.read(blen - 8)
        if len(buf) < blen:
            return
        if btype == ng.PCAPNG_BT_IDB:
            idb = ng.InterfaceDescriptionBlockLE(buf) if le else ng.InterfaceDescriptionBlock(buf)
            base, exp, off = 10, 6, 0
            for opt in idb.opts:
                if opt.code == ng.PCAPNG_OPT_IF_TSRESOL:
                    v = opt.data[0]
                    base, exp = (2, v & 0x7F) if v & 0x80 else (10, v)
                elif opt.code == ng.PCAPNG_OPT_IF_TSOFFSET:
                    off = struct.unpack(e + "q", opt.data[:8])[0]
            ifaces.append((idb.linktype, base, exp, off))
        elif btype in (ng.PCAPNG_BT_EPB, ng.PCAPNG_BT_PB):
            if btype == ng.PCAPNG_BT_EPB:
                pb = ng.EnhancedPacketBlockLE(buf) if le else ng.EnhancedPacketBlock(buf)
                iface = pb.iface_id
            else:
                pb = ng.PacketBlockLE(buf) if le else ng.PacketBlock(buf)
                iface = pb.iface_id
            if iface >= len(ifaces):
                continue  # no description: pcapreset counts these too (undefined_interface)
            lt, base, exp, off = ifaces[iface]
            ticks = (pb.ts_high << 32) | pb.ts_low
            div = base**exp
            yield ticks // div + (ticks % div) / div + off, lt, pb.pkt_data
        elif btype == 3:
            raise Unsupported("dpkt has no Simple Packet Block class")


# ----------------------------------------------------------------- decoding
def _l3(lt: int, buf: bytes) -> tuple[object, bool]:
    """The IP object of a frame, or (None, skipped_encap)."""
    l3, skipped = _link(lt, buf)
    while isinstance(l3, dpkt.pppoe.PPPoE | dpkt.ppp.PPP):  # Ethernet PPPoE session
        l3 = l3.data
    return l3, skipped


def _eth(eth: dpkt.ethernet.Ethernet) -> tuple[object, bool]:
    if getattr(eth, "mpls_labels", None):
        return None, isinstance(eth.data, dpkt.ip.IP | dpkt.ip6.IP6)
    if isinstance(eth.data, dpkt.llc.LLC):
        return None, isinstance(eth.data.data, dpkt.ip.IP | dpkt.ip6.IP6)
    return eth.data, False


def _link(lt: int, buf: bytes) -> tuple[object, bool]:
    if lt == 1:
        return _eth(dpkt.ethernet.Ethernet(buf))
    if lt == 10:  # FDDI: dpkt has no FDDI class; 13-byte MAC header, then dpkt's 802.2 LLC
        return dpkt.llc.LLC(buf[13:]).data, False
    if lt == 113:
        return dpkt.sll.SLL(buf).data, False
    if lt == 276:
        return dpkt.sll2.SLL2(buf).data, False
    if lt in (0, 108):
        return dpkt.loopback.Loopback(buf).data, False
    if lt == 105:  # 802.11 data frames, then LLC/SNAP
        w = dpkt.ieee80211.IEEE80211(buf)
        if w.type != 2 or w.subtype & 4 or w.wep:
            return None, False
        body = w.qos_data.data if w.subtype & 8 else w.data
        return dpkt.llc.LLC(body).data, False
    if lt in (12, 14, 101, 228, 229):
        if not buf:
            return None, False
        v = buf[0] >> 4
        if (lt == 228 or v == 4) and lt != 229:
            return dpkt.ip.IP(buf), False
        if lt == 229 or v == 6:
            return dpkt.ip6.IP6(buf), False
    return None, False


def _fmt(ip: bytes, port: int) -> str:
    import socket

    if len(ip) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, ip)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, ip)}]:{port}"


def _tunnel(l3: object) -> tuple[int, bytes] | tuple[None, object] | None:
    """The inner frame of a GRE / VXLAN / Geneve packet: (link type, bytes),
    or (None, the inner IP object dpkt's GRE already decoded), else None.
    (Never ``bytes()`` of a dpkt object: packing rewrites lengths.)"""
    if isinstance(l3, dpkt.ip.IP) and l3.offset != 0:
        return None
    if not isinstance(l3, dpkt.ip.IP | dpkt.ip6.IP6):
        return None
    t = l3.data
    if isinstance(t, dpkt.gre.GRE):
        f = t.flags
        if t.v != 0 or f & dpkt.gre.GRE_RP:
            return None
        if t.p in (0x0800, 0x86DD):
            return (None, t.data) if not isinstance(t.data, bytes) else None
        if t.p == 0x6558:
            return (None, _eth(t.data)[0]) if not isinstance(t.data, bytes) else None
        body = t.data
        if not isinstance(body, bytes):
            return None
        if t.p == 0x8200:
            return 105, body
        if t.p == 0x88BE and not f & dpkt.gre.GRE_SP:  # ERSPAN type I
            return 1, body
        if t.p in (0x88BE, 0x22EB) and body:
            if body[0] >> 4 == 1 and t.p == 0x88BE:  # type II
                return 1, body[8:]
            if body[0] >> 4 == 2 and len(body) >= 12:  # type III
                sub = 8 if body[11] & 1 else 0
                ft = body[10] >> 2 & 0x1F
                if ft in (0, 2):
                    return (1 if ft == 0 else 12), body[12 + sub :]
        return None
    if isinstance(t, dpkt.udp.UDP) and isinstance(t.data, bytes) and len(t.data) >= 8:
        inner = t.data
        if t.dport in (4789, 8472) and inner[0] & 0x08:
            return 1, inner[8:]
        if t.dport == 6081 and inner[0] >> 6 == 0:
            hl = 8 + (inner[0] & 0x3F) * 4
            lt = {0x6558: 1, 0x0800: 228, 0x86DD: 229}.get(int.from_bytes(inner[2:4], "big"))
            if lt is not None and len(inner) >= hl:
                return lt, inner[hl:]
    return None


def decode_frame(
    ts: float, lt: int, buf: bytes, frame_no: int, depth: int = 0
) -> tuple[RefPacket | None, bool]:
    try:
        l3, skipped = _l3(lt, buf)
    except (dpkt.NeedData, dpkt.UnpackError, struct.error, IndexError):
        return None, False
    return _from_l3(ts, l3, skipped, frame_no, depth)


def _from_l3(
    ts: float, l3: object, skipped: bool, frame_no: int, depth: int
) -> tuple[RefPacket | None, bool]:
    try:
        inner = _tunnel(l3) if depth < 4 else None
    except (dpkt.NeedData, dpkt.UnpackError, struct.error, IndexError):
        return None, False
    if inner is not None:
        if inner[0] is None:
            return _from_l3(ts, inner[1], False, frame_no, depth + 1)
        return decode_frame(ts, inner[0], inner[1], frame_no, depth + 1)
    if isinstance(l3, dpkt.ip.IP):
        if l3.v != 4 or l3.offset != 0 or l3.p != 6:
            return None, skipped
        tcp = l3.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            return None, skipped
        # total length 0 (TSO/GSO): dpkt keeps everything captured as TCP
        l4len = l3.len - l3.hl * 4 if l3.len else tcp.off * 4 + len(tcp.data)
        ttl, ipid = l3.ttl, l3.id
    elif isinstance(l3, dpkt.ip6.IP6):
        if l3.v != 6:
            return None, skipped
        exts = getattr(l3, "all_extension_headers", [])
        if any(isinstance(x, dpkt.ip6.IP6FragmentHeader) and x.frag_off for x in exts):
            return None, skipped  # non-first fragment
        tcp = l3.data
        if not isinstance(tcp, dpkt.tcp.TCP) or l3.p != 6:
            return None, skipped
        ext_len = sum(x.length for x in exts)
        l4len = l3.plen - ext_len if l3.plen else tcp.off * 4 + len(tcp.data)
        ttl, ipid = l3.hlim, -1
    else:
        return None, skipped
    plen = l4len - tcp.off * 4
    if tcp.off < 5 or plen < 0:
        return None, skipped
    return (
        RefPacket(
            ts=ts,
            src=_fmt(l3.src, tcp.sport),
            dst=_fmt(l3.dst, tcp.dport),
            seq=tcp.seq,
            ack=tcp.ack,
            flags=tcp.flags,
            win=tcp.win,
            plen=plen,
            ttl=ttl,
            ipid=ipid,
            opts=bytes(tcp.opts),
            payload=bytes(tcp.data)[:plen],
            frame_no=frame_no,
        ),
        skipped,
    )


def read(path: str) -> RefResult:
    """Every TCP packet of ``path`` (raises :class:`Unsupported`)."""
    res = RefResult(packets=[])
    for i, (ts, lt, buf) in enumerate(frames(path), 1):
        res.frames += 1
        pk, skipped = decode_frame(ts, lt, buf, i)
        if pk is not None:
            res.packets.append(pk)
        elif skipped:
            res.skipped_encap += 1
    return res
