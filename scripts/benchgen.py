"""Seeded generator of a large capture shaped like nginx -> backend:3000 traffic.

Used by ``scripts/bench``. Every connection is written packet by packet with
real TCP semantics (handshake with MSS/SACK/wscale/timestamps options, HTTP/1.1
requests, responses in full-MSS segments with delayed ACKs every second
segment, keep-alive reuse, FIN close) and a few percent of connections end in
resets of several kinds from either side. ARP and DNS noise is mixed in.

The generator knows its own truth (connections, RST events by kind), which the
benchmark compares with what pcapreset reports.
"""

from __future__ import annotations

import gzip
import heapq
import random
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

MSS = 1448  # payload of a full segment with the timestamps option (1460 - 12)
CLIENT_MAC = bytes.fromhex("020000000001")
SERVER_MAC = bytes.fromhex("020000000002")
CLIENT_IP = bytes([10, 1, 0, 2])
SERVER_IP = bytes([10, 1, 0, 3])
SERVER_PORT = 3000

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


@dataclass
class Truth:
    connections: int = 0
    rst_events: int = 0
    rst_kinds: Counter = field(default_factory=Counter)
    packets: int = 0
    tcp_packets: int = 0


def _csum_free_ipv4(total_len: int, ident: int, ttl: int, src: bytes, dst: bytes, proto: int = 6):
    # checksum left 0: capture files from checksum-offloading hosts look like this too
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total_len, ident, 0x4000, ttl, proto, 0, src, dst)


class Conn:
    """Yields (ts, frame bytes) for one connection."""

    def __init__(self, rng: random.Random, idx: int, start: float, port: int, truth: Truth):
        self.rng = rng
        self.idx = idx
        self.t = start
        self.port = port
        self.truth = truth
        self.cseq = rng.getrandbits(32)
        self.sseq = rng.getrandbits(32)
        self.cid = rng.getrandbits(16)
        self.sid = rng.getrandbits(16)
        self.cts = rng.getrandbits(31)
        self.sts = rng.getrandbits(31)
        self.cip = CLIENT_IP

    def _frame(self, from_client: bool, flags: int, payload_len: int, opts: bytes | None = None):
        r = self.rng
        if from_client:
            smac, dmac, sip, dip, sp, dp = (
                CLIENT_MAC,
                SERVER_MAC,
                self.cip,
                SERVER_IP,
                self.port,
                SERVER_PORT,
            )
            seq, ack = self.cseq, self.sseq
            self.cid = (self.cid + 1) & 0xFFFF
            ident, ttl = self.cid, 64
            self.cts += 1
            tsv, tse = self.cts, self.sts
        else:
            smac, dmac, sip, dip, sp, dp = (
                SERVER_MAC,
                CLIENT_MAC,
                SERVER_IP,
                self.cip,
                SERVER_PORT,
                self.port,
            )
            seq, ack = self.sseq, self.cseq
            self.sid = (self.sid + 1) & 0xFFFF
            ident, ttl = self.sid, 63
            self.sts += 1
            tsv, tse = self.sts, self.cts
        if opts is None:
            opts = struct.pack("!BBBBII", 1, 1, 8, 10, tsv & 0xFFFFFFFF, tse & 0xFFFFFFFF)
        if flags & RST:
            opts = b""
            if not flags & ACK:
                ack = 0
        doff = (20 + len(opts)) // 4
        tcp = struct.pack(
            "!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags,
            502 if not flags & RST else 0, 0, 0,
        ) + opts  # fmt: skip
        ip = _csum_free_ipv4(20 + len(tcp) + payload_len, ident, ttl, sip, dip)
        del r
        return b"".join((dmac, smac, b"\x08\x00", ip, tcp)), payload_len

    def _emit(self, from_client, flags, payload=b"", plen=None, opts=None, gap=0.0):
        self.t += gap
        n = len(payload) if plen is None else plen
        hdr, _ = self._frame(from_client, flags, n, opts)
        if from_client:
            self.cseq += n + (1 if flags & (SYN | FIN) else 0)
        else:
            self.sseq += n + (1 if flags & (SYN | FIN) else 0)
        return self.t, hdr, payload if plen is None else None, n

    def packets(self) -> Iterator[tuple]:
        r = self.rng
        tr = self.truth
        tr.connections += 1
        rtt = r.uniform(0.0002, 0.002)
        syn_opts = struct.pack("!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, self.cts, 0, 1, 3, 3, 7)
        kind = r.random()
        if kind < 0.01:  # refused connect
            yield self._emit(True, SYN, opts=syn_opts)
            self.sseq = 0
            yield self._emit(False, RST | ACK, gap=rtt)
            tr.rst_events += 1
            tr.rst_kinds["refused"] += 1
            return
        yield self._emit(True, SYN, opts=syn_opts)
        sa_opts = struct.pack(
            "!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10, self.sts, self.cts, 1, 3, 3, 7
        )
        yield self._emit(False, SYN | ACK, opts=sa_opts, gap=rtt / 2)
        yield self._emit(True, ACK, gap=rtt / 2)
        n_ex = r.randint(1, 5)
        ending = r.random()
        for i in range(n_ex):
            path = f"/api/item/{r.randint(1, 99999)}"
            req = (
                f"GET {path} HTTP/1.1\r\nHost: backend\r\n"
                f"X-Request-ID: {r.getrandbits(64):016x}\r\n"
                "Accept: */*\r\n\r\n"
            ).encode()
            gap = 0.0005 if i == 0 else r.uniform(0.05, 3.0)
            if i == n_ex - 1 and ending < 0.015:
                # keep-alive race: server closes the idle connection as the request goes out
                yield self._emit(False, FIN | ACK, gap=gap)
                yield self._emit(True, PSH | ACK, req, gap=rtt / 4)
                yield self._emit(False, RST, gap=rtt / 2)
                tr.rst_events += 1
                tr.rst_kinds["keepalive_race"] += 1
                return
            yield self._emit(True, PSH | ACK, req, gap=gap)
            body = r.choice((900, 4000, 8000, 12000, 16000, 20000, 24000))
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\n"
                "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
            ).encode()
            total = len(head) + body
            if i == n_ex - 1 and 0.015 <= ending < 0.025:
                # backend crash mid-response
                total = total // 2
                crash = True
            else:
                crash = False
            sent = 0
            seg = 0
            first = True
            while sent < total:
                n = min(MSS, total - sent)
                payload = head if first else b""
                first = False
                flags = PSH | ACK if sent + n >= total else ACK
                seg_bytes = payload + b"x" * (n - len(payload))
                yield self._emit(False, flags, seg_bytes, gap=rtt if seg == 0 else 0.00002)
                sent += n
                seg += 1
                if seg % 2 == 0:
                    yield self._emit(True, ACK, gap=0.00005)
            if crash:
                yield self._emit(False, RST | ACK, gap=0.001)
                tr.rst_events += 1
                tr.rst_kinds["crash"] += 1
                return
            if seg % 2:
                yield self._emit(True, ACK, gap=0.04)  # delayed ACK timer
        if 0.025 <= ending < 0.04:  # abortive close by the backend
            yield self._emit(False, RST | ACK, gap=0.0003)
            tr.rst_events += 1
            tr.rst_kinds["abortive"] += 1
            return
        if 0.04 <= ending < 0.05:  # nginx resets (client abort)
            yield self._emit(True, RST | ACK, gap=r.uniform(0.01, 1.0))
            tr.rst_events += 1
            tr.rst_kinds["client"] += 1
            return
        # normal close: server idle timeout FIN, client FIN, last ACK
        yield self._emit(False, FIN | ACK, gap=5.0)
        yield self._emit(True, FIN | ACK, gap=rtt)
        yield self._emit(False, ACK, gap=rtt)


def noise(rng: random.Random, t0: float, t1: float, n: int) -> Iterator[tuple]:
    arp = b"\xff" * 6 + CLIENT_MAC + b"\x08\x06"
    arp += struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, CLIENT_MAC, CLIENT_IP, b"\0" * 6, SERVER_IP
    )
    for i in range(n):
        t = t0 + (t1 - t0) * i / max(n, 1)
        if rng.random() < 0.5:
            yield t, arp, b"", 0
        else:
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07backend\x00\x00\x01\x00\x01"
            udp = struct.pack("!HHHH", 40000 + i % 1000, 53, 8 + len(q), 0) + q
            ip = _csum_free_ipv4(
                20 + len(udp), i & 0xFFFF, 64, CLIENT_IP, bytes([10, 1, 0, 53]), 17
            )
            yield t, SERVER_MAC + CLIENT_MAC + b"\x08\x00" + ip + udp, b"", 0


def generate(n_conns: int = 20000, seed: int = 1, duration_s: float = 600.0):
    """Yields (ts, header bytes, payload bytes or None, payload length) in time order."""
    rng = random.Random(seed)
    truth = Truth()
    t0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    gens = []
    # one nginx address per 50,000 connections (the ephemeral port space)
    ports: list[int] = []
    while len(ports) < n_conns:
        ports += rng.sample(range(10000, 65000), min(50000, n_conns - len(ports)))
    for i in range(n_conns):
        start = t0 + duration_s * i / n_conns + rng.uniform(0, 0.01)
        c = Conn(random.Random(rng.getrandbits(64)), i, start, ports[i], truth)
        c.cip = bytes([10, 1, i // 50000, 2]) if i >= 50000 else CLIENT_IP
        gens.append(c.packets())
    gens.append(noise(rng, t0, t0 + duration_s, n_conns * 55 // 100))
    return heapq.merge(*gens, key=lambda p: p[0]), truth


def write(
    path: str, fmt: str = "pcap", n_conns: int = 20000, seed: int = 1, duration_s: float = 600.0
) -> Truth:
    """fmt: pcap (Ethernet), sll2 (pcap, Linux cooked v2), pcapng, pcap.gz;
    connections start evenly over ``duration_s`` seconds."""
    pkts, truth = generate(n_conns, seed, duration_s)
    link = 276 if fmt == "sll2" else 1
    opener = gzip.open if fmt.endswith(".gz") else open
    with opener(path, "wb") as f:  # type: ignore[operator]
        if fmt == "pcapng":
            shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
            f.write(
                struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body))
                + shb_body
                + struct.pack("<I", 12 + len(shb_body))
            )
            idb_body = (
                struct.pack("<HHI", link, 0, 262144) + struct.pack("<HHB3x", 9, 1, 6) + b"\0\0\0\0"
            )
            f.write(
                struct.pack("<II", 1, 12 + len(idb_body))
                + idb_body
                + struct.pack("<I", 12 + len(idb_body))
            )
        else:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link))
        out = bytearray()
        for ts, hdr, payload, plen in pkts:
            truth.packets += 1
            if hdr[12:14] == b"\x08\x00" and hdr[23] == 6:
                truth.tcp_packets += 1
            if link == 276:
                hdr = _sll2(hdr)
            data = hdr + (payload if payload is not None else b"x" * plen)
            n = len(data)
            if fmt == "pcapng":
                us = int(round(ts * 1_000_000))
                pad = (-n) % 4
                blen = 32 + n + pad
                out += struct.pack("<IIIIIII", 6, blen, 0, us >> 32, us & 0xFFFFFFFF, n, n)
                out += data + b"\0" * pad + struct.pack("<I", blen)
            else:
                sec = int(ts)
                out += struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)) % 1_000_000, n, n)
                out += data
            if len(out) > 1 << 22:
                f.write(out)
                out.clear()
        f.write(out)
    return truth


def _sll2(eth: bytes) -> bytes:
    proto = eth[12:14]
    pkttype = 4 if eth[6:12] == CLIENT_MAC else 0  # outgoing from nginx's view
    return proto + b"\0\0" + struct.pack("!IHBB", 2, 1, pkttype, 6) + eth[6:12] + b"\0\0" + eth[14:]
