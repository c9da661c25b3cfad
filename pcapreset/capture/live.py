"""live: capture from a network interface as another source of FrameBatches.

A Linux packet socket with a kernel BPF filter for the port: cooked
(``AF_PACKET``, ``SOCK_DGRAM``, like ``tcpdump -i any``) for ``any`` and
non-Ethernet interfaces, raw (``SOCK_RAW``) on one Ethernet interface. The
filter is compiled by libpcap through scapy
(:func:`scapy.arch.common.compile_filter`) for raw IP (a cooked socket hands
the filter the packet from its network header on) or for Ethernet frames. No
scapy layer object is ever built: packets come from a memory-mapped ring
(:mod:`pcapreset.capture.ring`; ``recvmsg_into`` per packet when the kernel
refuses the ring) into a buffer laid out as pcap records (16-byte record
header + 20-byte LINUX_SLL2 header built from the ``sockaddr_ll`` + the IP
packet; on Ethernet, the record header + the frame), so a batch is at the
same time

- a :class:`FrameBatch` for the decoder (link type 276, LINUX_SLL2, or 1), and
- the bytes appended to the ``--write`` file (a nanosecond pcap).

Timestamps are the kernel's receive times (the ring's, or ``SO_TIMESTAMPNS``). Kernel counts
of packets queued to / dropped by the socket come from ``PACKET_STATISTICS``
(packet(7); each read resets the kernel counters, so they are summed here).

Loopback devices show every packet twice to a packet socket (once outgoing,
once incoming); like libpcap we keep only the incoming copy, here with a few
instructions in front of the libpcap filter (``SKF_AD_PKTTYPE`` /
``SKF_AD_HATYPE``, see the kernel's Documentation/networking/filter.rst).

The verdicts streamed while capturing come from :mod:`pcapreset.report.stream`.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import CaptureSourceError
from .bpf import attach_bpf, compile_bpf, port_filter, skip_loopback_outgoing
from .pcapwriter import LINKTYPE_LINUX_SLL2, SLL2_HDR, SNAPLEN, PcapWriter
from .ring import BLOCK_BYTES, BLOCKS, RETIRE_MS, RxRing
from .sources import FrameBatch, SourceInfo
from .tcp import linktype_name

LINKTYPE_ETHERNET = 1
ARPHRD_ETHER = 1
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD; 64-bit time_t on 64-bit)
SO_RCVBUFFORCE = 33
REC_HDR = 16  # pcap record header
HDR = REC_HDR + SLL2_HDR
BATCH_BYTES = 4 << 20
MAX_BATCH_PKTS = 20000

_REC = struct.Struct("<IIII")
_SLL2 = struct.Struct(">HHIHBB8s")
_TS = struct.Struct("@qq")
_STATS = struct.Struct("@II")
_R16 = np.arange(16, dtype=np.int64)


def _hatype(name: str) -> int | None:
    """The ARPHRD type of interface ``name`` (1: Ethernet), or None."""
    try:
        with open(f"/sys/class/net/{name}/type") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


@dataclass
class LiveStats:
    """Kernel and reader counts for one live capture."""

    kernel_packets: int = 0  # tp_packets: packets that passed the filter
    kernel_drops: int = 0  # tp_drops: dropped for lack of socket buffer
    frames: int = 0  # frames this reader received
    written_bytes: int = 0
    started: float = 0.0
    stopped: float | None = None
    stop_reason: str = ""
    extra: dict = field(default_factory=dict)


class LiveCapture:
    """A packet socket on ``iface`` (``"any"``: every interface) for one port.

    ``LiveCapture(...)`` opens the socket (raising :class:`CaptureSourceError`
    with a one-line message on failure); :meth:`batches` yields FrameBatches
    until ``should_stop()`` or the duration is over, then drains what the
    kernel already queued; :meth:`close` closes socket and file.
    """

    def __init__(
        self,
        iface: str = "any",
        port: int | None = None,
        bpf_filter: str | None = None,
        write: str | None = None,
        rcvbuf_bytes: int = 64 << 20,
        ring: bool = True,
    ) -> None:
        self.iface = iface
        self.port = port
        self.filter = bpf_filter or port_filter(port)
        self.stats = LiveStats()
        # one Ethernet interface: its frames as they are (link type Ethernet);
        # else cooked packets with an SLL2 header built for each (as `-i any`)
        self.ethernet = iface != "any" and _hatype(iface) == ARPHRD_ETHER
        self.linktype = LINKTYPE_ETHERNET if self.ethernet else LINKTYPE_LINUX_SLL2
        self._hdr = REC_HDR if self.ethernet else HDR
        self.info = SourceInfo(path=f"live:{iface}", file_format="live", linktypes=[self.linktype])
        self._names: dict[str, int] = {}
        self._frame_no = 0
        if self.ethernet:
            prog = compile_bpf(self.filter, dlt=LINKTYPE_ETHERNET)
        else:
            prog = skip_loopback_outgoing(compile_bpf(self.filter))
        if iface != "any" and not _ifindex(iface):
            raise CaptureSourceError(f"no such network interface: {iface!r}")
        self.sock = self._open_socket(prog, rcvbuf_bytes)
        # the memory-mapped ring (no system call per packet); recv() without it
        self.ring: RxRing | None = None
        if ring:
            try:
                self.ring = RxRing(self.sock)
            except OSError:
                self.ring = None
        self.writer: PcapWriter | None = None
        try:
            self.writer = PcapWriter(write, linktype=self.linktype) if write else None
        except BaseException:
            self.sock.close()
            raise
        self.stats.started = time.time()

    def _open_socket(self, prog: list, rcvbuf_bytes: int) -> socket.socket:
        try:
            kind = socket.SOCK_RAW if self.ethernet else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureSourceError(
                "live capture needs root or CAP_NET_RAW (run with sudo, or "
                "`setcap cap_net_raw+ep` the Python binary)"
            ) from None
        except OSError as e:
            raise CaptureSourceError(f"cannot open a packet socket: {e.strerror}") from None
        try:
            attach_bpf(s, prog)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf_bytes)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.iface != "any":
                try:
                    s.bind((self.iface, ETH_P_ALL))
                except OSError as e:
                    if e.errno in (errno.ENODEV, errno.ENXIO):
                        raise CaptureSourceError(
                            f"no such network interface: {self.iface!r}"
                        ) from None
                    raise CaptureSourceError(
                        f"cannot capture on {self.iface!r}: {e.strerror}"
                    ) from None
            s.setblocking(False)
            self._drain_unfiltered(s)
            self.read_kernel_stats(s)  # start counting from here
        except BaseException:
            s.close()
            raise
        return s

    @staticmethod
    def _drain_unfiltered(s: socket.socket) -> None:
        """Drop what was queued before the filter was attached (as libpcap does)."""
        for _ in range(100000):
            try:
                s.recv(1)
            except (BlockingIOError, InterruptedError):
                return

    def read_kernel_stats(self, s: socket.socket | None = None) -> tuple[int, int]:
        """Add the kernel's counts since the last read (the read resets them)."""
        sock = s or self.sock
        try:
            raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        except OSError:
            return self.stats.kernel_packets, self.stats.kernel_drops
        pk, dr = _STATS.unpack(raw)
        if s is None:
            self.stats.kernel_packets += pk
            self.stats.kernel_drops += dr
        return self.stats.kernel_packets, self.stats.kernel_drops

    # --------------------------------------------------------------- reading
    def batches(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        duration_s: float | None = None,
        tick_s: float = 0.1,
    ) -> Iterator[FrameBatch]:
        """Yield a FrameBatch at least every ``tick_s`` (empty when nothing came)."""
        start = time.monotonic()
        deadline = start + duration_s if duration_s is not None else None
        buf = bytearray(BATCH_BYTES)
        mv = memoryview(buf)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        reason = "interrupted"
        while True:
            now = time.monotonic()
            if should_stop():
                break
            if deadline is not None and now >= deadline:
                reason = "duration"
                break
            wait = tick_s if deadline is None else max(0.0, min(tick_s, deadline - now))
            if self.ring is None or not self.ring.ready():
                try:
                    poller.poll(wait * 1000.0)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    pass
            tick_end = time.monotonic() + tick_s
            yield self._batch(buf, mv, tick_end)
        # drain what the kernel queued before the stop (bounded); the ring
        # hands over its last block RETIRE_MS after that block's first packet
        for _ in range(1000):
            if self.ring is not None and not self.ring.ready():
                poller.poll(3 * RETIRE_MS)
            fb = self._batch(buf, mv, time.monotonic() + 0.5)
            if not len(fb.off):
                break
            yield fb
        self.read_kernel_stats()
        self.stats.stopped = time.time()
        self.stats.stop_reason = reason

    def _batch(self, buf: bytearray, mv: memoryview, until: float) -> FrameBatch:
        """Receive what is queued (up to a full buffer or ``until``) as one batch."""
        if self.ring is not None:
            return self._ring_batch(buf, until)
        recv = self.sock.recvmsg_into
        pack_rec = _REC.pack_into
        pack_sll = _SLL2.pack_into
        unpack_ts = _TS.unpack
        names = self._names
        trunc = socket.MSG_TRUNC
        hl = self._hdr
        sll = not self.ethernet
        limit = len(buf) - hl - SNAPLEN
        pos = 0
        offs: list[int] = []
        add = offs.append
        n_pk = 0
        while pos <= limit and n_pk < MAX_BATCH_PKTS:
            try:
                n, anc, _fl, addr = recv([mv[pos + hl : pos + hl + SNAPLEN]], 64, trunc)
            except (BlockingIOError, InterruptedError):
                break
            if anc:
                sec, nsec = unpack_ts(anc[0][2][:16])
            else:  # pragma: no cover - SO_TIMESTAMPNS is always granted on Linux
                t = time.time_ns()
                sec, nsec = divmod(t, 1_000_000_000)
            ifname, proto, pkttype, hatype, haddr = addr
            idx = names.get(ifname)
            if idx is None:
                idx = names[ifname] = _ifindex(ifname)
            cap = n if n < SNAPLEN else SNAPLEN
            if sll:
                pack_rec(buf, pos, sec, nsec, cap + SLL2_HDR, n + SLL2_HDR)
                pack_sll(buf, pos + REC_HDR, proto, 0, idx, hatype, pkttype, len(haddr), haddr)
            else:
                pack_rec(buf, pos, sec, nsec, cap, n)
            add(pos)
            pos += hl + cap
            n_pk += 1
            if not n_pk & 255 and time.monotonic() >= until:
                break
        return self._emit(bytes(mv[:pos]), offs)

    def _ring_batch(self, buf: bytearray, until: float) -> FrameBatch:
        """The ring's blocks handed over so far (up to a full buffer or ``until``)."""
        ring = self.ring
        assert ring is not None
        pos = 0
        offs: list[int] = []
        while pos + BLOCK_BYTES <= len(buf) and ring.ready():
            pos, starts = ring.take(buf, pos, self.ethernet)
            offs += starts
            if time.monotonic() >= until:
                break
        return self._emit(bytes(memoryview(buf)[:pos]), offs)

    def _emit(self, data: bytes, offs: list[int]) -> FrameBatch:
        n = len(offs)
        o = np.asarray(offs, dtype=np.int64)
        if n:
            u8 = np.frombuffer(data, dtype=np.uint8)
            hdr = u8[o[:, None] + _R16].view("<u4").reshape(-1, 4).astype(np.int64)
            # the same arithmetic as sources.CaptureReader on a ns pcap: equal floats
            ts = hdr[:, 0].astype(np.float64) + hdr[:, 1].astype(np.float64) * 1e-9
            caplen, wirelen = hdr[:, 2], hdr[:, 3]
            if self.writer is not None:
                self.writer.write(data)
                self.stats.written_bytes += len(data)
            self._account(n, ts)
        else:
            ts = np.zeros(0, dtype=np.float64)
            caplen = wirelen = np.zeros(0, dtype=np.int64)
        fb = FrameBatch(
            buf=data,
            off=o + REC_HDR,
            caplen=caplen,
            wirelen=wirelen,
            ts=ts,
            linktype=np.full(n, self.linktype, dtype=np.int32),
            frame_no=np.arange(self._frame_no + 1, self._frame_no + n + 1, dtype=np.int64),
            file_index=0,
        )
        self._frame_no += n
        return fb

    def _account(self, n: int, ts: np.ndarray) -> None:
        self.stats.frames += n
        self.info.frames += n
        lo, hi = float(ts.min()), float(ts.max())
        if self.info.first_ts is None or lo < self.info.first_ts:
            self.info.first_ts = lo
        if self.info.last_ts is None or hi > self.info.last_ts:
            self.info.last_ts = hi

    def report(self) -> dict:
        """The ``capture.live`` section of the report."""
        st = self.stats
        end = st.stopped or time.time()
        return {
            "iface": self.iface,
            "filter": self.filter,
            "linktype": linktype_name(self.linktype),
            "snaplen": SNAPLEN,
            "started": round(st.started, 6),
            "duration_s": round(end - st.started, 3),
            "stopped_by": st.stop_reason or "interrupted",
            "packets_received": st.frames,
            "kernel_packets": st.kernel_packets,
            "kernel_drops": st.kernel_drops,
            "write": self.writer.path if self.writer else None,
            "ring": f"TPACKET_V3, {BLOCKS} blocks of {BLOCK_BYTES >> 10} KiB"
            if self.ring is not None
            else None,
        }

    def close(self) -> None:
        try:
            if self.ring is not None:
                self.ring.close()
            self.sock.close()
        finally:
            if self.writer is not None:
                self.writer.close()
