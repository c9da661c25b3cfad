"""flows: decoded TCP packets -> connections (pure: no I/O).

One :class:`FlowTracker` consumes :class:`~pcapreset.decode.TcpBatch` objects
in capture order and rebuilds bidirectional connections:

* roles: the SYN sender is the client; without a SYN, the SYN-ACK's receiver;
  without either, the endpoint on ``port`` is the server, then a well-known
  port (< 1024) is the server, then the first packet's sender is the client.
  ``Conn.role_rule`` says which rule decided.
* a new SYN on a closed (reset / FIN-FIN) 4-tuple, or with a different ISN,
  starts a new connection (port reuse), as Zeek does;
* per direction: packets, bytes (from sequence numbers), retransmissions,
  duplicate ACKs, zero windows, full-MSS segments and their retransmissions,
  TTL / IP ID of the sender, FIN and RST;
* RST packets grouped into RST *events*: RSTs of one connection with no data
  in between are one event (retransmitted / duplicate RSTs collapse);
* HTTP/1.x exchanges from request and status lines (Content-Length and
  chunked where the payload was captured);
* a Zeek-style ``history`` string; ``conn_state`` is computed from these
  observations by :mod:`pcapreset.connstate`.

Everything here is observation. Interpretation lives in evidence/rules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..capture.decode import ACK, FIN, RST, SYN, TcpBatch, parse_tcp_options
from . import connstate as zeek
from .httphead import HTTP_HEAD_MAX
from .httphead import parse_headers as _parse_headers
from .httphead import preparse as preparse_http

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
M32 = 0xFFFFFFFF
HALF = 1 << 31
#: ports treated as "server" ports for connections whose start was not seen
WELL_KNOWN_MAX = 1024
#: payload bytes kept from a side's first segment (and its first after the peer's FIN)
HEAD_BYTES = 8
#: IP ID steps up to this are a counter's; larger ones (or backwards) a jump
IPID_STEP_MAX = 1024
#: Zeek repeats T/W letters when their counts reach these values
_REPEAT_AT = {1, 10, 100, 1000, 10000}


# history bits: index by letter, client and server variants
_HB = {ch: 1 << i for i, ch in enumerate("SHADFRTWIQshadfrtwiq")}


class Dir:
    """What one side of a connection sent."""

    __slots__ = (
        "pkts", "bytes", "data_pkts", "retrans", "dupacks", "zero_win",
        "mss_segs", "mss_retrans", "small_segs", "small_retrans",
        "syn", "synack", "syn_retrans", "fin", "fin_ts", "rst", "isn", "base",
        "max_end", "last_ack", "last_win", "acked", "first_ts",
        "last_data_ts", "ttl_last", "ttls", "ipid_last", "mss", "wscale",
        "sack_perm", "ts_opt", "opt_kinds", "fin_end", "ack_seen",
        "hA", "cA", "hD", "cD", "zst", "ipid_zero", "ipid_steps", "ipid_jumps",
        "head", "head_ts", "late", "late_ts", "last_plen",
    )  # fmt: skip

    def __init__(self, client: bool = True) -> None:
        # history bit and letter for pure ACK / data from this side (Zeek's A/a, D/d)
        self.hA, self.cA = (_HB["A"], "A") if client else (_HB["a"], "a")
        self.hD, self.cD = (_HB["D"], "D") if client else (_HB["d"], "d")
        self.pkts = 0
        self.bytes = 0
        self.data_pkts = 0
        self.retrans = 0
        self.dupacks = 0
        self.zero_win = 0
        self.mss_segs = 0
        self.mss_retrans = 0
        self.small_segs = 0
        self.small_retrans = 0
        self.syn = 0  # SYN without ACK
        self.synack = 0  # SYN with ACK
        self.syn_retrans = 0
        self.fin = 0
        self.fin_ts: float | None = None
        self.fin_end: int | None = None  # relative seq just after the FIN
        self.rst = 0
        self.isn: int | None = None
        self.base: int | None = None  # seq of the first payload byte
        self.max_end: int = 0  # relative seq after the highest byte sent
        self.last_ack: int | None = None  # absolute ack number last sent
        self.last_win = -1
        self.acked = False
        self.ack_seen = False
        self.first_ts: float | None = None
        self.last_data_ts: float | None = None
        self.ttl_last = -1
        self.ttls: dict[int, int] = {}  # TTL -> packets (non-RST), changes only
        self.ipid_last = -1
        self.mss: int | None = None  # MSS this side advertised in its SYN
        self.wscale: int | None = None
        self.sack_perm = False
        self.ts_opt = False
        self.opt_kinds: list[str] | None = None  # SYN options, in order
        self.zst = 0  # Zeek's endpoint state (connstate.INACTIVE...)
        # IP ID behaviour of this side's non-RST packets (IPv4): IDs equal to 0,
        # steps of 1..1024 from the previous packet (a counter), larger steps
        self.ipid_zero = 0
        self.ipid_steps = 0
        self.ipid_jumps = 0
        #: the first bytes (up to HEAD_BYTES) of this side's stream, and when its
        #: first payload came
        self.head: bytes | None = None
        self.head_ts: float | None = None
        #: payload bytes of this side's last new segment
        self.last_plen = 0
        #: the first bytes of this side's first new payload after the peer's FIN
        self.late: bytes | None = None
        self.late_ts: float | None = None

    @property
    def after_hs(self) -> int:
        """Packets this side sent that were neither SYN nor RST."""
        return self.pkts - self.syn - self.synack - self.rst


class Exchange:
    """One HTTP/1.x request and its response, as far as the capture shows."""

    __slots__ = (
        "req_ts", "method", "target", "req_bytes", "req_len", "req_start",
        "resp_ts", "status", "resp_bytes", "resp_len", "chunked", "resp_end_ts",
        "resp_start", "last_resp_ts", "interim",
    )  # fmt: skip

    def __init__(self, ts: float | None, method: str, target: str, start: int) -> None:
        self.req_ts = ts
        self.method = method
        self.target = target
        self.req_bytes = 0
        self.req_len: int | None = None  # header + body when known
        self.req_start = start
        self.resp_ts: float | None = None
        self.status: int | None = None
        self.resp_bytes = 0
        self.resp_len: int | None = None
        self.chunked = False
        self.resp_end_ts: float | None = None
        self.resp_start = 0
        self.last_resp_ts: float | None = None
        self.interim = 0

    @property
    def complete(self) -> bool:
        return self.resp_end_ts is not None

    def as_dict(self) -> dict:
        return {
            "req_ts": self.req_ts,
            "method": self.method,
            "target": self.target,
            "req_bytes": self.req_bytes,
            "resp_ts": self.resp_ts,
            "status": self.status,
            "resp_bytes": self.resp_bytes,
            "resp_len": self.resp_len,
            "resp_end_ts": self.resp_end_ts,
        }


class RstPacket:
    __slots__ = (
        "ts", "from_client", "flags", "seq", "ack", "ttl", "ipid", "optlen", "win",
        "plen", "opts", "frame", "seq_vs_peer_ack", "in_window",
    )  # fmt: skip

    def __init__(
        self, ts: float, from_client: bool, flags: int, seq: int, ack: int | None, ttl: int,
        ipid: int, optlen: int, win: int, plen: int, opts: list[str] | None, frame: int,
        seq_vs_peer_ack: int | None, in_window: bool | None,
    ) -> None:  # fmt: skip
        self.ts = ts
        self.from_client = from_client
        self.flags = flags
        self.seq = seq
        self.ack = ack  # None when the ACK flag is not set
        self.ttl = ttl
        self.ipid = ipid
        self.optlen = optlen
        self.win = win
        self.plen = plen
        self.opts = opts  # option kinds, in order
        self.frame = frame  # (file_index << 40) | frame number
        self.seq_vs_peer_ack = seq_vs_peer_ack  # seq minus the peer's last ACK (signed)
        self.in_window = in_window

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    # pickled as a tuple of the slots' values (pcapreset.packed keeps many)
    def __getstate__(self) -> tuple:
        return tuple([getattr(self, k) for k in RstPacket.__slots__])

    def __setstate__(self, state: tuple) -> None:
        for k, v in zip(RstPacket.__slots__, state, strict=True):
            setattr(self, k, v)


class RstEvent:
    """One reset of a connection: its RST packets plus the state when it came."""

    __slots__ = (
        "conn", "ts", "from_client", "packets", "phase", "idle_before_s",
        "since_last_packet_s", "since_last_data_s", "since_last_response_s",
        "requests_before", "outstanding", "exchange", "sender_data_after",
        "peer_data_after", "sender_fin_before", "peer_fin_before", "peer_data_after_fin",
        "last_trigger_from_peer", "trigger_ts", "prev_pkt_from_peer", "index",
        "peer_pkts_after", "sender_ipid", "peer_ipid",
    )  # fmt: skip

    def __init__(self, conn: Conn, pkt: RstPacket) -> None:
        self.conn = conn
        self.ts = pkt.ts
        self.from_client = pkt.from_client
        self.packets = [pkt]
        self.phase = "unknown"
        self.idle_before_s: float | None = None
        self.since_last_packet_s: float | None = None
        self.since_last_data_s: float | None = None
        self.since_last_response_s: float | None = None
        self.requests_before = 0
        self.outstanding = False
        self.exchange: Exchange | None = None
        self.sender_data_after = 0  # data packets from the RST's sender after it
        self.peer_data_after = 0
        self.peer_pkts_after = 0
        self.sender_fin_before = False
        self.peer_fin_before = False
        self.peer_data_after_fin = False  # peer sent data after sender's FIN
        self.last_trigger_from_peer = False
        self.trigger_ts: float | None = None
        self.prev_pkt_from_peer = False
        self.index = 0
        #: the IP ID of the sender's last non-RST packet before the RST (-1: none)
        self.sender_ipid = -1
        #: the IP ID of the other end's last non-RST packet before the RST (-1: none)
        self.peer_ipid = -1

    @property
    def both_directions(self) -> bool:
        return len({p.from_client for p in self.packets}) == 2

    # pickled as a tuple of the slots' values (pcapreset.packed keeps many)
    def __getstate__(self) -> tuple:
        return tuple([getattr(self, k) for k in RstEvent.__slots__])

    def __setstate__(self, state: tuple) -> None:
        for k, v in zip(RstEvent.__slots__, state, strict=True):
            setattr(self, k, v)


class Conn:
    """One TCP connection (one incarnation of a 4-tuple)."""

    __slots__ = (
        "id", "client", "server", "role_rule", "start", "end", "c", "s",
        "hist", "hbits", "rst_events", "exchanges", "_rst_open", "state_closed",
        "hs_done", "hs_ts", "last_pkt_from_client", "last_data_ts",
        "_cur_req", "_cur_resp", "syn_ts", "first_from_client", "resp_headers",
        "zk", "expires_at",
    )  # fmt: skip

    def __init__(self, cid: int, client: int, server: int, rule: str, ts: float) -> None:
        self.id = cid
        self.client = client
        self.server = server
        self.role_rule = rule
        self.start = ts
        self.end = ts
        self.c = Dir(True)
        self.s = Dir(False)
        self.hist: list[str] = []
        self.hbits = 0
        self.rst_events: list[RstEvent] = []
        self.exchanges: list[Exchange] = []
        self._rst_open = False  # last RST event still collecting packets
        self.state_closed = False
        self.hs_done = False
        self.hs_ts: float | None = None
        self.syn_ts: float | None = None
        self.last_pkt_from_client = True
        self.last_data_ts: float | None = None
        self._cur_req: Exchange | None = None  # request still being sent
        self._cur_resp: Exchange | None = None  # response still being received
        self.first_from_client = True
        #: Server / Keep-Alive / Connection headers of the last response seen
        self.resp_headers: dict[str, str] = {}
        #: Zeek's view (connstate): per-connection state, and when Zeek would drop it
        self.zk = zeek.ZeekTcp()
        self.expires_at = float("inf")

    @property
    def packets(self) -> int:
        return self.c.pkts + self.s.pkts

    @property
    def history(self) -> str:
        return "".join(self.hist)

    @property
    def requests(self) -> int:
        return len(self.exchanges)

    @property
    def completed_exchanges(self) -> int:
        return sum(1 for e in self.exchanges if e.complete)

    def mark(self, bit: int, ch: str) -> None:
        if not self.hbits & bit:
            self.hbits |= bit
            self.hist.append(ch)


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


def conn_keys(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """A 64-bit key per packet, equal for both directions of a connection.

    Integer keys make the per-packet table lookup cheaper than (lo, hi) tuples;
    a lookup that finds a connection with other endpoints falls back to an
    exact table (see FlowTracker.feed).
    """
    lo = np.minimum(src, dst).astype(np.uint64)
    hi = np.maximum(src, dst).astype(np.uint64)
    return (lo * _K1) ^ (hi * _K2)


class FlowTracker:
    """Rebuilds connections from TcpBatches. Pure: feed it, then read ``conns``."""

    def __init__(self, port: int | None = None, server_ports: Iterable[int] = ()) -> None:
        self.port = port
        self.server_ports = set(server_ports)
        #: connection table keyed by :func:`conn_keys` (a 64-bit hash of the 4-tuple)
        self.active: dict[int, Conn] = {}
        #: exact (lo, hi) table for the (astronomically rare) key collisions
        self.collided: dict[object, Conn] = {}
        self.conns: list[Conn] = []
        self.packets = 0
        self.last_ts: float | None = None
        #: observers called with each new RstEvent (live mode streams verdicts)
        self.on_rst: Callable[[RstEvent], None] | None = None

    # --------------------------------------------------------------- roles
    def _new_conn(self, src: int, dst: int, flags: int, ts: float) -> Conn:
        if flags & SYN and not flags & ACK:
            client, server, rule = src, dst, "syn"
        elif flags & SYN:
            client, server, rule = dst, src, "syn-ack"
        else:
            # Zeek's rule (TCPAnalyzer::WantConnection) after --port / server ports:
            # a likely server port on one side is the server; on both, the lower one
            sp, dp = src & 0xFFFF, dst & 0xFFFF
            ls, ld = zeek.likely_server_port(sp), zeek.likely_server_port(dp)
            if self.port is not None and (sp == self.port) != (dp == self.port):
                rule = "port-option"
                client, server = (dst, src) if sp == self.port else (src, dst)
            elif (sp in self.server_ports) != (dp in self.server_ports):
                rule = "server-port"
                client, server = (dst, src) if sp in self.server_ports else (src, dst)
            elif ls != ld:
                rule = "well-known-port"
                client, server = (dst, src) if ls else (src, dst)
            elif ls and sp != dp:
                rule = "lower-port"
                client, server = (dst, src) if sp < dp else (src, dst)
            elif (sp < WELL_KNOWN_MAX) != (dp < WELL_KNOWN_MAX):
                rule = "well-known-port"
                client, server = (dst, src) if sp < WELL_KNOWN_MAX else (src, dst)
            else:
                rule = "first-packet"
                client, server = src, dst
        c = Conn(len(self.conns), client, server, rule, ts)
        c.first_from_client = src == client
        if src != client:
            c.hist.append("^")  # Zeek marks a flipped direction with '^'
            if rule == "syn-ack" and not zeek.zeek_flips(src & 0xFFFF, dst & 0xFFFF, flags):
                c.zk.orig = 1  # Zeek's originator is the SYN-ACK sender until A/D
        self.conns.append(c)
        return c

    # ---------------------------------------------------------------- feed
    def feed(self, b: TcpBatch) -> None:
        """Consume one batch of packets (in capture order). The hot path.

        Compiled (flows.pxd), the columns are typed numpy views; uncompiled,
        Python lists. The rest of a packet is read by index ``i`` only where
        needed (new connections, control packets, HTTP).
        """
        n = len(b)
        if not n:
            return
        active = self.active
        get = active.get
        data_after_rst = self._data_after_rst
        bufs = b.bufs
        # message heads parsed ahead (pipeline.py's child), else here: only
        # packets whose first payload byte can start an HTTP message are read
        heads = b.heads if b.heads is not None else preparse_http(b)
        buf0 = bufs[0]
        bufidx = b.bufidx.tolist() if len(bufs) > 1 else None
        if cython.compiled:
            # typed views, as the other columns: no Python int per packet
            poffs = np.asarray(b.poff, dtype=np.int64)
            pcaps = np.asarray(b.pcap, dtype=np.int64)
            keys = conn_keys(b.src, b.dst)
            tss, srcs, seqs, acks, flagss = b.ts, b.src, b.seq, b.ack, b.flags
            wins, plens, ttls, ipids, optlens = b.win, b.plen, b.ttl, b.ipid, b.optlen
        else:
            poffs, pcaps = b.poff.tolist(), b.pcap.tolist()
            keys = conn_keys(b.src, b.dst).tolist()
            tss, srcs, seqs, acks = b.ts.tolist(), b.src.tolist(), b.seq.tolist(), b.ack.tolist()
            flagss, wins, plens = b.flags.tolist(), b.win.tolist(), b.plen.tolist()
            ttls, ipids, optlens = b.ttl.tolist(), b.ipid.tolist(), b.optlen.tolist()
        self.packets += n
        ts = 0.0
        # the last key looked up and what `active` held for it: most packets
        # (83 % on the bench capture) continue the previous packet's
        # connection, so the dict lookup (a boxed 64-bit key) is skipped; the
        # cache is dropped whenever `active` may change (_resolve) and after
        # control packets (an on_rst callback runs there)
        cached = False
        cached_key = 0
        cached_conn = None
        for i in range(n):
            key = keys[i]
            ts = tss[i]
            src = srcs[i]
            seq = seqs[i]
            ack = acks[i]
            flags = flagss[i]
            win = wins[i]
            plen = plens[i]
            ttl = ttls[i]
            ipid = ipids[i]
            optlen = optlens[i]
            if cached and key == cached_key:
                conn = cached_conn
            else:
                conn = active.get(key) if cython.compiled else get(key)  # (typed dict lookup)
                cached, cached_key, cached_conn = True, key, conn
            if conn is None:
                conn = self._resolve(None, key, src, b, i, seq, flags, ts)
                cached = False
                from_client = src == conn.client
            else:
                from_client = src == conn.client
                if (not from_client and src != conn.server) or ts >= conn.expires_at or flags & SYN:
                    conn = self._resolve(conn, key, src, b, i, seq, flags, ts)
                    cached = False
                    from_client = src == conn.client
            if from_client:
                d = conn.c
                o = conn.s
            else:
                d = conn.s
                o = conn.c
            if not d.pkts:
                d.first_ts = ts
            d.pkts += 1
            if flags & 0x07:  # SYN, FIN or RST: the careful path
                if not flags & RST:
                    if ttl != d.ttl_last:
                        d.ttl_last = ttl
                        d.ttls[ttl] = d.ttls.get(ttl, 0) + 1
                    d.ipid_last = ipid
                self._control(conn, d, o, from_client, ts, seq, ack, flags, win, plen, ttl,
                              ipid, optlen, b, i, poffs[i],
                              buf0 if bufidx is None else bufs[bufidx[i]])  # fmt: skip
                cached = False
                if flags & RST:
                    conn.end = ts
                    conn.last_pkt_from_client = from_client
                    continue
            else:
                if not d.zst:  # Zeek state INACTIVE: this packet may change it
                    zeek.update(conn, d, o, from_client, flags, seq, plen, ts)
                if ttl != d.ttl_last:
                    d.ttl_last = ttl
                    d.ttls[ttl] = d.ttls.get(ttl, 0) + 1
                if ipid == 0:
                    d.ipid_zero += 1
                elif ipid > 0 and d.ipid_last > 0:
                    if ((ipid - d.ipid_last) & 0xFFFF) <= IPID_STEP_MAX:
                        d.ipid_steps += 1
                    else:
                        d.ipid_jumps += 1
                d.ipid_last = ipid
                if not win:
                    d.zero_win += 1
                    if d.zero_win in _REPEAT_AT:
                        conn.hist.append("W" if from_client else "w")
            base_o = d.base
            if base_o is None:
                # first packet of this side without a SYN: sequence space starts here
                d.base = seq
                base = seq
            else:
                base = base_o
            if flags & ACK:
                if not d.ack_seen:
                    d.ack_seen = True
                    if not conn.hs_done and from_client and conn.s.synack and conn.c.syn:
                        if not flags & SYN:
                            conn.hs_done = True
                            conn.hs_ts = ts
                if not plen:
                    if not flags & 0x07:
                        if not conn.hbits & d.hA:
                            conn.hbits |= d.hA
                            conn.hist.append(d.cA)
                        la_o = d.last_ack
                        if la_o is not None and win == d.last_win:
                            la = la_o
                            ob = o.base
                            if ack == la and ob is not None:
                                una = (o.max_end - ((ack - ob) & M32)) & M32
                                if 0 < una < HALF:
                                    d.dupacks += 1
                    d.last_ack = ack
                    d.last_win = win
                    conn.end = ts
                    conn.last_pkt_from_client = from_client
                    continue
                d.last_ack = ack
            d.last_win = win
            if plen:
                if not flags & 0x07 and not conn.hbits & d.hD:
                    # Zeek's D: any payload packet without SYN/FIN/RST, retransmitted too
                    conn.hbits |= d.hD
                    conn.hist.append(d.cD)
                # ---- sequence analysis (inline: most packets carry data)
                end = (seq - base + plen) & M32
                diff = (end - d.max_end) & M32
                mss_o = o.mss
                mss = -1 if mss_o is None else mss_o
                if diff == 0 or diff >= HALF:
                    d.retrans += 1
                    if d.head is None and ((seq - base) & M32) == 0:
                        # the stream's first bytes, arriving after later ones
                        self._head(d, o, ts, poffs[i], pcaps[i],
                                   buf0 if bufidx is None else bufs[bufidx[i]], True)  # fmt: skip
                    if mss >= 0 and plen + optlen >= mss:
                        d.mss_retrans += 1
                    else:
                        d.small_retrans += 1
                    if d.retrans in _REPEAT_AT:
                        conn.hist.append("T" if from_client else "t")
                else:
                    d.bytes += diff
                    d.max_end = end
                    d.data_pkts += 1
                    if mss >= 0 and plen + optlen >= mss:
                        d.mss_segs += 1
                    else:
                        d.small_segs += 1
                    d.last_data_ts = ts
                    d.last_plen = plen
                    conn.last_data_ts = ts
                    if d.head is None or (o.fin_ts is not None and d.late_ts is None):
                        self._head(d, o, ts, poffs[i], pcaps[i],
                                   buf0 if bufidx is None else bufs[bufidx[i]],
                                   ((seq - base) & M32) == 0)  # fmt: skip
                    if conn.rst_events:
                        data_after_rst(conn, from_client)
                    if from_client:
                        self._http_client(conn, ts, (seq - base) & M32, plen, poffs[i], pcaps[i],
                                    buf0 if bufidx is None else bufs[bufidx[i]],
                                    heads.get(i))  # fmt: skip
                    else:
                        ex = conn._cur_resp
                        rl_o = None if ex is None or ex.resp_end_ts is not None else ex.resp_len
                        if rl_o is not None and ex is not None:
                            # the common case: more of a response of known length
                            rl = rl_o
                            ex.resp_bytes += plen
                            ex.last_resp_ts = ts
                            if ex.resp_bytes >= rl:
                                ex.resp_end_ts = ts
                        else:
                            self._http_server(conn, ts, plen, poffs[i], pcaps[i],
                                        buf0 if bufidx is None else bufs[bufidx[i]],
                                        heads.get(i))  # fmt: skip
            conn.end = ts
            conn.last_pkt_from_client = from_client
        self.last_ts = ts

    @staticmethod
    def _head(d: Dir, o: Dir, ts: float, poff: int, pcap: int, buf: bytes, first: bool) -> None:
        """Keep the first bytes of a side's stream (``first``: this segment
        starts it), and of its first payload after the peer's FIN (what the
        peer's closed socket got)."""
        head = bytes(buf[poff : poff + (pcap if pcap < HEAD_BYTES else HEAD_BYTES)])
        if d.head_ts is None:
            d.head_ts = ts
        if d.head is None and first:
            d.head = head
        if o.fin_ts is not None and d.late_ts is None:
            d.late = head
            d.late_ts = ts

    def _resolve(
        self, conn: Conn | None, key: int, src: int, b: TcpBatch, i: int, seq: int, flags: int,
        ts: float,
    ) -> Conn:  # fmt: skip
        """The connection a packet belongs to, off the common path: a key
        collision, a closed connection past Zeek's close delay, a SYN that may
        start a new incarnation, or no connection yet."""
        table: dict = self.active
        tkey: object = key
        if conn is not None and src != conn.client and src != conn.server:
            # two 4-tuples with one 64-bit key (never seen in practice): exact table
            dst = int(b.dst[i])
            tkey = (src, dst) if src < dst else (dst, src)
            table = self.collided
            conn = table.get(tkey)
        if conn is not None and ts >= conn.expires_at and zeek.expired(conn, ts):
            conn = None  # closed and past Zeek's close delay: a new connection
        if conn is None or (flags & SYN and self._is_new_incarnation(conn, src, seq, flags)):
            conn = self._new_conn(src, int(b.dst[i]), flags, ts)
            table[tkey] = conn
        return conn

    def _is_new_incarnation(self, conn: Conn, src: int, seq: int, flags: int) -> bool:
        """Port reuse as Zeek decides it (``IsReuse``): a SYN starts a new connection
        once either side sent FIN or RST, or when its sequence number is not the
        originator's ISN; a SYN-ACK only on a half connection."""
        return zeek.is_reuse(conn, src == conn.client, flags, seq)

    # ------------------------------------------------------------- control
    def _control(self, conn: Conn, d: Dir, o: Dir, up: bool, ts: float, seq: int, ack: int,
                 flags: int, win: int, plen: int, ttl: int, ipid: int, optlen: int,
                 b: TcpBatch, i: int, poff: int, buf: bytes) -> None:  # fmt: skip
        """A SYN, FIN or RST (packet ``i`` of batch ``b``; its payload starts
        at ``buf[poff]``)."""
        zeek.control_history(conn, up, flags, seq, plen)  # S H F R I Q letters
        zeek.update(conn, d, o, up, flags, seq, plen, ts)
        if flags & SYN:
            if flags & ACK:
                d.synack += 1
            else:
                d.syn += 1
                if conn.syn_ts is None:
                    conn.syn_ts = ts
            if d.isn is None:
                d.isn = seq
                d.base = (seq + 1) & M32
                if optlen:
                    _syn_options(d, buf, poff - optlen, optlen)
            elif seq == d.isn:
                d.syn_retrans += 1
        if flags & FIN and not flags & RST:
            d.fin += 1
            if d.fin_ts is None:
                d.fin_ts = ts
                if d.base is None:
                    d.base = seq
                d.fin_end = ((seq - d.base) & M32) + plen + 1
            if d.fin and o.fin:
                conn.state_closed = True
        if flags & RST:
            self._rst(conn, d, o, up, ts, seq, ack, flags, win, plen, ttl, ipid, optlen, b, i)

    def _rst(self, conn: Conn, d: Dir, o: Dir, up: bool, ts: float, seq: int, ack: int,
             flags: int, win: int, plen: int, ttl: int, ipid: int, optlen: int,
             b: TcpBatch, i: int) -> None:  # fmt: skip
        d.rst += 1  # (the R/r history letter comes from connstate.control_history)
        opts: list[str] | None = None
        if optlen:
            poff = int(b.poff[i])
            raw = bytes(_buf_of(b, i)[poff - optlen : poff])
            opts = cast("list[str]", parse_tcp_options(raw)["kinds"])
        frame = int(b.frame[i])
        # where the RST's seq sits relative to what the peer acknowledged
        peer_ack = o.last_ack
        if peer_ack is None:
            rel = None
        else:
            rel = (seq - peer_ack) & M32
            if rel >= HALF:
                rel -= 1 << 32
        in_window = None
        if d.base is not None:
            nxt = (d.base + d.max_end) & M32
            diff = (seq - nxt) & M32
            in_window = diff < 65535 << 4 or diff > M32 - (65535 << 4)
        pkt = RstPacket(
            ts=ts, from_client=up, flags=flags, seq=seq, ack=ack if flags & ACK else None,
            ttl=ttl, ipid=ipid, optlen=optlen, win=win, plen=plen, opts=opts, frame=frame,
            seq_vs_peer_ack=rel, in_window=in_window,
        )  # fmt: skip
        if conn._rst_open and conn.rst_events:
            ev = conn.rst_events[-1]
            ev.packets.append(pkt)
            return
        ev = RstEvent(conn, pkt)
        ev.index = len(conn.rst_events)
        self._snapshot(conn, ev, d, o, up, ts)
        conn.rst_events.append(ev)
        conn._rst_open = True
        if self.on_rst is not None:
            self.on_rst(ev)

    def _snapshot(self, conn: Conn, ev: RstEvent, d: Dir, o: Dir, up: bool, ts: float) -> None:
        """Record where in the connection's life the RST came (observation only)."""
        ex = conn.exchanges[-1] if conn.exchanges else None
        done = sum(1 for e in conn.exchanges if e.complete)
        ev.requests_before = done
        ev.exchange = ex
        ev.since_last_packet_s = ts - conn.end if conn.packets > 1 else None
        ev.prev_pkt_from_peer = conn.packets > 1 and conn.last_pkt_from_client != up
        ev.since_last_data_s = ts - conn.last_data_ts if conn.last_data_ts is not None else None
        last_resp = None
        for e in reversed(conn.exchanges):
            if e.last_resp_ts is not None:
                last_resp = e.last_resp_ts
                break
        ev.since_last_response_s = ts - last_resp if last_resp is not None else None
        ev.sender_fin_before = d.fin_ts is not None
        ev.sender_ipid = d.ipid_last
        ev.peer_ipid = o.ipid_last
        ev.peer_fin_before = o.fin_ts is not None
        any_data = conn.c.data_pkts or conn.s.data_pkts
        outstanding = ex is not None and not ex.complete
        ev.outstanding = outstanding
        # the activity that the RST ends: the outstanding request, else the RST itself
        if outstanding and ex is not None and ex.req_ts is not None:
            trigger = ex.req_ts
        else:
            trigger = ts
        ev.trigger_ts = trigger
        prev_data = _last_data_before(conn, trigger)
        if prev_data is not None:
            ev.idle_before_s = max(0.0, trigger - prev_data)
        else:
            ref = conn.hs_ts or conn.syn_ts or conn.start
            ev.idle_before_s = max(0.0, trigger - ref) if trigger != ref else 0.0
        if not any_data and not (d.fin or o.fin):
            phase = "handshake"
        elif outstanding and ex is not None:
            phase = "response" if ex.resp_ts is not None else "request"
        elif d.fin_ts is not None or o.fin_ts is not None:
            phase = "closing"
        elif ev.since_last_data_s is not None and ev.since_last_data_s < 1.0 and done:
            phase = "after_response"
        elif (
            any_data
            and not conn.exchanges
            and ev.since_last_data_s is not None
            and (ev.since_last_data_s < 1.0)
        ):
            phase = "request" if conn.last_pkt_from_client != up else "response"
        else:
            phase = "idle"
        ev.phase = phase
        if d.fin_ts is not None and o.last_data_ts is not None and o.last_data_ts > d.fin_ts:
            ev.peer_data_after_fin = True

    # ---------------------------------------------------------------- data
    @staticmethod
    def _data_after_rst(conn: Conn, up: bool) -> None:
        conn._rst_open = False
        ev = conn.rst_events[-1]
        if up == ev.from_client:
            ev.sender_data_after += 1
        else:
            ev.peer_data_after += 1

    def _http_client(self, conn, ts, rel, plen, poff, pcap, buf, pre) -> None:
        """Client payload: a new HTTP request, or more of the current one.

        ``pre``: the entry of :func:`preparse_http` for this packet; None when
        it starts no message.
        """
        cur = conn._cur_req
        if cur is not None and cur.req_len is not None and cur.req_bytes < cur.req_len:
            cur.req_bytes += plen
            return
        if pre is not None and pre[0] == "req":  # a request line: a new exchange
            prev = conn._cur_resp
            if prev is not None and prev.resp_end_ts is None and prev.resp_len is None:
                # HTTP/1.1 without pipelining: a new request means the
                # previous (length-unknown) response was over
                prev.resp_end_ts = prev.last_resp_ts
            ex = Exchange(ts, pre[1], pre[2], rel)
            hl, _chunked, clen = pre[3]
            if hl is not None:
                ex.req_len = hl + (clen or 0)
            ex.req_bytes = plen
            conn.exchanges.append(ex)
            conn._cur_req = ex
            return
        if cur is not None:
            cur.req_bytes += plen

    def _http_server(self, conn, ts, plen, poff, pcap, buf, pre) -> None:
        """Server payload outside a known-length response: status line or body.

        ``pre`` as in :meth:`_http_client`.
        """
        ex = conn._cur_resp
        if pre is not None and pre[0] == "resp":
            head, is_status, parsed = pre[1], True, pre
        else:
            head, is_status, parsed = b"", False, None
            if ex is not None and ex.chunked and pcap == plen:
                # the chunked-end test below reads the payload's tail
                head = bytes(buf[poff : poff + (pcap if pcap < HTTP_HEAD_MAX else HTTP_HEAD_MAX)])
        if ex is not None and ex.resp_end_ts is None:
            if is_status and ex.resp_len is None and not ex.chunked:
                # length was unknown (headers cut by the snaplen): a new status
                # line starts the next response
                ex.resp_end_ts = ex.last_resp_ts
            else:
                ex.resp_bytes += plen
                ex.last_resp_ts = ts
                if ex.resp_len is not None:
                    if ex.resp_bytes >= ex.resp_len:
                        ex.resp_end_ts = ts
                elif ex.chunked and pcap == plen and head[-5:] == b"0\r\n\r\n":
                    ex.resp_end_ts = ts
                elif ex.chunked and pcap == plen:
                    tail = bytes(buf[poff + max(0, pcap - 5) : poff + pcap])
                    if tail == b"0\r\n\r\n":
                        ex.resp_end_ts = ts
                return
        if not is_status:
            return
        try:
            status = int(head[9:12])
        except ValueError:
            return
        # attach to the oldest request still waiting for a response
        target = None
        for e in conn.exchanges:
            if e.status is None or (e.status < 200 and e.resp_end_ts is None):
                target = e
                break
        if target is None:
            target = Exchange(None, "", "", 0)
            conn.exchanges.append(target)
        if target.resp_ts is None:
            target.resp_ts = ts
        target.status = status
        target.resp_bytes = plen
        target.last_resp_ts = ts
        if parsed is not None:
            hl, chunked, clen = parsed[2]
            conn.resp_headers.update(parsed[3])
        else:
            hl, chunked, clen = _parse_headers(head, conn.resp_headers)
        if status < 200:  # interim (100 Continue): the final status follows
            target.interim += 1
            if hl is not None and plen > hl:
                # the final response may be in the same segment
                rest = head[hl:]
                if rest.startswith(b"HTTP/1."):
                    try:
                        target.status = int(rest[9:12])
                    except ValueError:
                        pass
                    h2, chunked, clen = _parse_headers(rest, conn.resp_headers)
                    hl = hl + h2 if h2 is not None else None
                    status = target.status or status
            if status < 200:
                return
        no_body = status in (204, 304) or target.method == "HEAD"
        if hl is not None:
            if no_body:
                target.resp_len = hl
            elif clen is not None:
                target.resp_len = hl + clen
            elif chunked:
                target.chunked = True
                if pcap == plen and head.endswith(b"0\r\n\r\n"):
                    target.resp_end_ts = ts
        conn._cur_resp = target
        if target.resp_len is not None and target.resp_bytes >= target.resp_len:
            target.resp_end_ts = ts
        if conn._cur_req is target:
            conn._cur_req = None

    def finish(self) -> list[Conn]:
        """Close out: responses that ended with the connection count as complete."""
        for conn in self.conns:
            self.finish_conn(conn)
        return self.conns

    @staticmethod
    def finish_conn(conn: Conn) -> None:
        """:meth:`finish` for one connection that will see no more packets
        (idempotent): a response of unknown length ended by the server's FIN
        is complete."""
        for ex in conn.exchanges:
            if (
                ex.resp_end_ts is None
                and ex.status is not None
                and ex.resp_len is None
                and not ex.chunked
                and conn.s.fin_ts is not None
                and not conn.rst_events
            ):
                ex.resp_end_ts = conn.s.fin_ts


_C = TypeVar("_C", dict, list)
#: most distinct containers :func:`freeze_conn` shares (bounds its table)
SHARED_MAX = 4096


def freeze_conn(conn: Conn, shared: dict) -> None:
    """Slim a connection that can change no more, for a report that keeps it.

    Call once it is closed and past Zeek's close delay (a packet of its
    4-tuple would start a new connection) and out of the tracker's tables:
    ``engine.Evictor`` does, for the connections with a reset it keeps to the
    end. Every value evidence, rules, findings, the report, nginx log
    matching and ``Report.conn_row`` read stays equal; only its storage
    shrinks (~5.1 -> ~3.5 KB on the bench capture):

    * ``zk`` keeps ``orig`` and its timers (:meth:`ZeekTcp.frozen`), not the
      state machine's per-endpoint lists;
    * ``hist`` becomes one interned string (``history`` is the same);
    * equal small containers are one object, shared through ``shared`` (up to
      :data:`SHARED_MAX` of them): the response headers, each side's TTL
      table and SYN option kinds, the RST packets' option kinds;
    * request methods and targets are interned strings.

    Nothing may change a frozen connection: the tracker no longer finds it.
    """
    conn.zk = conn.zk.frozen()
    conn.hist = [sys.intern("".join(conn.hist))]
    conn.resp_headers = _shared(shared, conn.resp_headers)
    for d in (conn.c, conn.s):
        d.ttls = _shared(shared, d.ttls)
        if d.opt_kinds is not None:
            d.opt_kinds = _shared(shared, d.opt_kinds)
    for ex in conn.exchanges:
        ex.method = sys.intern(ex.method)
        ex.target = sys.intern(ex.target)
    for ev in conn.rst_events:
        for p in ev.packets:
            if p.opts is not None:
                p.opts = _shared(shared, p.opts)


def _shared(shared: dict, x: _C) -> _C:
    """The object in ``shared`` equal to the dict or list ``x`` (in order),
    else ``x`` (kept there while there is room)."""
    key = (type(x), tuple(x.items()) if isinstance(x, dict) else tuple(x))
    got = shared.get(key)
    if got is not None:
        return got
    if len(shared) < SHARED_MAX:
        shared[key] = x
    return x


_LINUX_SYN_KINDS = ["mss", "sackOK", "ts", "nop", "wscale"]


def _syn_options(d: Dir, buf: bytes, at: int, n: int) -> None:
    """The options of a SYN (``buf[at:at + n]``) into ``d``; a fast path for
    Linux's layout (MSS, SACK-perm, TS, NOP, WS)."""
    v = buf
    if (
        n == 20
        and v[at] == 2
        and v[at + 1] == 4
        and v[at + 4] == 4
        and v[at + 5] == 2
        and v[at + 6] == 8
        and v[at + 7] == 10
        and v[at + 16] == 1
        and v[at + 17] == 3
        and v[at + 18] == 3
    ):
        d.mss = v[at + 2] << 8 | v[at + 3]
        d.wscale = v[at + 19]
        d.sack_perm = True
        d.ts_opt = True
        d.opt_kinds = list(_LINUX_SYN_KINDS)
        return
    opts = parse_tcp_options(bytes(buf[at : at + n]))
    d.mss = opts.get("mss")  # type: ignore[assignment]
    d.wscale = opts.get("wscale")  # type: ignore[assignment]
    d.sack_perm = bool(opts.get("sack_perm"))
    d.ts_opt = "ts" in opts
    d.opt_kinds = opts.get("kinds")  # type: ignore[assignment]


def _buf_of(b: TcpBatch, i: int) -> bytes:
    """The buffer packet ``i`` of ``b`` points into."""
    bufs = b.bufs
    return bufs[0] if len(bufs) == 1 else bufs[int(b.bufidx[i])]


def _last_data_before(conn: Conn, t: float) -> float | None:
    """Time of the last payload packet strictly before ``t`` (from the exchanges)."""
    best = None
    for e in conn.exchanges:
        for v in (e.req_ts, e.last_resp_ts, e.resp_end_ts):
            if v is not None and v < t and (best is None or v > best):
                best = v
    if best is None and conn.last_data_ts is not None and conn.last_data_ts < t:
        best = conn.last_data_ts
    return best
