"""tcp: decoded TCP packets as columns (:class:`TcpBatch`), the endpoint
address book, the decoder's counters, link type names and TCP options.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

import numpy as np

LINKTYPE_NAMES = {
    0: "NULL",
    1: "EN10MB",
    10: "FDDI",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    105: "IEEE802_11",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

V6_TAG = 1 << 32  # endpoint address ids >= this are IPv6 (index into AddressBook)


def linktype_name(lt: int) -> str:
    return f"{LINKTYPE_NAMES.get(lt, 'unknown')}({lt})"


class AddressBook:
    """Maps IP addresses to integer ids; IPv4 ids are the address itself."""

    def __init__(self) -> None:
        self._v6: dict[bytes, int] = {}
        self._v6_list: list[bytes] = []

    def v6_ids(self, raw: np.ndarray) -> np.ndarray:
        """raw: (n, 16) uint8 -> int64 ids (>= V6_TAG)."""
        if len(raw) == 0:
            return np.zeros(0, dtype=np.int64)
        v = np.ascontiguousarray(raw).view(np.dtype("V16")).ravel()
        uniq, inv = np.unique(v, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int64)
        for i, u in enumerate(uniq):
            b = u.tobytes()
            j = self._v6.get(b)
            if j is None:
                j = len(self._v6_list)
                self._v6[b] = j
                self._v6_list.append(b)
            ids[i] = V6_TAG + j
        return ids[inv.ravel()]

    def ip(self, addr_id: int) -> str:
        if addr_id >= V6_TAG:
            return socket.inet_ntop(socket.AF_INET6, self._v6_list[addr_id - V6_TAG])
        return socket.inet_ntoa(struct.pack(">I", addr_id))

    def endpoint(self, key: int) -> str:
        """Endpoint key (addr_id << 16 | port) -> 'ip:port' or '[ip6]:port'."""
        a = key >> 16
        if a >= V6_TAG:
            return f"[{self.ip(a)}]:{key & 0xFFFF}"
        return f"{self.ip(a)}:{key & 0xFFFF}"

    def id_of(self, ip: str) -> int:
        addr = ipaddress.ip_address(ip)
        if addr.version == 4:
            return int(addr)
        b = addr.packed
        j = self._v6.get(b)
        if j is None:
            j = len(self._v6_list)
            self._v6[b] = j
            self._v6_list.append(b)
        return V6_TAG + j


@dataclass
class DecodeStats:
    frames: int = 0
    tcp: int = 0
    non_ip: int = 0  # ARP, LLDP, ... (counted, not analysed)
    non_tcp: int = 0  # UDP, ICMP, other IP protocols
    ip_fragments: int = 0  # non-first fragments (not reassembled)
    #: reason -> count, frames that should have been TCP/IP but could not be read
    undecodable: dict[str, int] = field(default_factory=dict)
    #: link type -> count of frames on link types we do not decode
    unsupported: dict[int, int] = field(default_factory=dict)
    snap_truncated: int = 0  # TCP packets whose payload was cut by the snaplen
    linktypes: dict[int, int] = field(default_factory=dict)
    #: tunnel name -> frames opened (:data:`pcapreset.capture.tunnels.NAMES`; each
    #: layer of a nested tunnel counts once)
    tunnels: dict[str, int] = field(default_factory=dict)
    #: TCP packets captured twice and dropped (:mod:`pcapreset.capture.dedup`): with the
    #: same addresses, and with one endpoint translated (NAT)
    copies: int = 0
    translated: int = 0
    #: (endpoint kept: outside the translation, endpoint dropped: inside) -> translated
    #: copies (a few pairs)
    translated_pairs: dict[tuple[int, int], int] = field(default_factory=dict)

    def bad(self, reason: str, count: int | np.integer) -> None:
        if count:
            self.undecodable[reason] = self.undecodable.get(reason, 0) + int(count)


@dataclass(slots=True)
class TcpBatch:
    """Decoded TCP packets, one row per packet (all numpy columns)."""

    ts: np.ndarray  # float64
    src: np.ndarray  # int64 endpoint key: addr_id << 16 | port
    dst: np.ndarray  # int64
    seq: np.ndarray  # int64 (u32 values)
    ack: np.ndarray  # int64
    flags: np.ndarray  # int64 (9 bits incl. NS)
    win: np.ndarray  # int64
    plen: np.ndarray  # int64 payload length on the wire (from IP lengths)
    ttl: np.ndarray  # int64 TTL / hop limit
    ipid: np.ndarray  # int64, -1 for IPv6
    optlen: np.ndarray  # int64 TCP option bytes captured (fewer if the snaplen cut them)
    poff: np.ndarray  # int64 payload offset in bufs[bufidx]
    pcap: np.ndarray  # int64 captured payload bytes (<= plen)
    bufidx: np.ndarray  # int64 index into bufs
    frame: np.ndarray  # int64 (file_index << 40) | frame_no
    bufs: list[bytes]
    #: HTTP message heads parsed ahead of the flow tracker (see
    #: flows.preparse_http): packet index -> parsed head; None = not pre-parsed
    heads: dict | None = None

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> TcpBatch:
        return TcpBatch(**{f: getattr(self, f)[idx] for f in _COLS}, bufs=self.bufs)

    def part(self, lo: int, hi: int) -> TcpBatch:
        """Packets ``lo:hi`` (views of the columns; the heads parsed ahead for them)."""
        heads = self.heads
        if heads is not None:
            heads = {i - lo: h for i, h in heads.items() if lo <= i < hi}
        cols = {f: getattr(self, f)[lo:hi] for f in _COLS}
        return TcpBatch(**cols, bufs=self.bufs, heads=heads)


_COLS = "ts src dst seq ack flags win plen ttl ipid optlen poff pcap bufidx frame".split()
_INT_COLS = _COLS[1:]


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def concat(batches: list[TcpBatch]) -> TcpBatch:
    """Concatenate batches (buffers are re-indexed)."""
    bufs: list[bytes] = []
    parts = []
    for b in batches:
        shift = len(bufs)
        bufs.extend(b.bufs)
        parts.append((b, shift))
    cols: dict[str, np.ndarray] = {}
    for f in _COLS:
        if f == "bufidx":
            cols[f] = np.concatenate([b.bufidx + s for b, s in parts])
        else:
            cols[f] = np.concatenate([getattr(b, f) for b, _ in parts])
    return TcpBatch(**cols, bufs=bufs, heads=None)  # type: ignore[arg-type]


def _empty(buf: bytes) -> TcpBatch:
    z = np.zeros(0, dtype=np.int64)
    return TcpBatch(
        ts=np.zeros(0, dtype=np.float64),
        src=z, dst=z, seq=z, ack=z, flags=z, win=z, plen=z, ttl=z, ipid=z,
        optlen=z, poff=z, pcap=z, bufidx=z, frame=z, bufs=[buf],
    )  # fmt: skip


def parse_tcp_options(raw: bytes) -> dict[str, object]:
    """TCP options -> {'mss': int, 'wscale': int, 'sack_perm': True, 'ts': (val, ecr), 'sack': n}.

    Used for SYNs and RSTs only (off the hot path). Never raises.
    """
    out: dict[str, object] = {}
    i, n = 0, len(raw)
    kinds = []
    while i < n:
        k = raw[i]
        if k == 0:
            kinds.append("eol")
            break
        if k == 1:
            kinds.append("nop")
            i += 1
            continue
        if i + 1 >= n:
            break
        ln = raw[i + 1]
        if ln < 2 or i + ln > n:
            out["malformed"] = True
            break
        body = raw[i + 2 : i + ln]
        if k == 2 and ln == 4:
            out["mss"] = int.from_bytes(body, "big")
            kinds.append("mss")
        elif k == 3 and ln == 3:
            out["wscale"] = body[0]
            kinds.append("wscale")
        elif k == 4:
            out["sack_perm"] = True
            kinds.append("sackOK")
        elif k == 5:
            out["sack"] = (ln - 2) // 8
            kinds.append("sack")
        elif k == 8 and ln == 10:
            out["ts"] = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
            kinds.append("ts")
        else:
            kinds.append(f"opt{k}")
        i += ln
    out["kinds"] = kinds
    return out
