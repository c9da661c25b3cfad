"""conn: the connection model the tracker fills in (observation only).

A :class:`Conn` (one incarnation of a 4-tuple) has two :class:`Dir` (what
each side sent), its HTTP :class:`Exchange` objects and its
:class:`RstEvent` objects (the RST packets of one reset, with the state of
the connection when it came). :func:`freeze_conn` slims one that can
change no more.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled

#: what a connection's payload carries as the tracker follows it (``Conn.proto``):
#: HTTP/1.x (or not yet known), FastCGI records, a uwsgi request with an HTTP answer,
#: WebSocket frames after ``101 Switching Protocols`` (:mod:`pcapreset.track.dispatch`)
PROTO_HTTP, PROTO_FASTCGI, PROTO_UWSGI, PROTO_WEBSOCKET = 0, 1, 2, 3
#: the ``app`` name of each non-HTTP protocol (SPEC: ``app``)
PROTO_NAMES = {PROTO_FASTCGI: "fastcgi", PROTO_UWSGI: "uwsgi", PROTO_WEBSOCKET: "websocket"}

#: an unset time (``last_*_at``)
NAN = float("nan")

# history bits: index by letter, client and server variants
_HB = {ch: 1 << i for i, ch in enumerate("SHADFRTWIQshadfrtwiq")}


class Dir:
    """What one side of a connection sent."""

    __slots__ = (
        "pkts", "bytes", "data_pkts", "retrans", "dupacks", "zero_win",
        "mss_segs", "mss_retrans", "small_segs", "small_retrans",
        "syn", "synack", "syn_retrans", "fin", "fin_ts", "rst", "isn", "base",
        "max_end", "last_ack_no", "last_win", "acked", "first_ts",
        "last_data_at", "ttl_last", "ttls", "ipid_last", "mss", "wscale",
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
        self.last_ack_no = -1  # absolute ack number last sent (-1: none yet)
        self.last_win = -1
        self.acked = False
        self.ack_seen = False
        self.first_ts: float | None = None
        self.last_data_at = NAN  # when its last new payload came (NaN: none)
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
        #: the first bytes (up to flows.HEAD_BYTES) of this side's stream, and when
        #: its first payload came
        self.head: bytes | None = None
        self.head_ts: float | None = None
        #: payload bytes of this side's last new segment
        self.last_plen = 0
        #: the first bytes of this side's first new payload after the peer's FIN
        self.late: bytes | None = None
        self.late_ts: float | None = None

    # the last ack and data time are C numbers when compiled (no object for
    # every packet); these give them as the model's other fields, None unset
    @property
    def last_ack(self) -> int | None:
        """The absolute ack number this side last sent."""
        return None if self.last_ack_no < 0 else self.last_ack_no

    @property
    def last_data_ts(self) -> float | None:
        """When this side's last new payload came."""
        t = self.last_data_at
        return None if t != t else t

    @property
    def after_hs(self) -> int:
        """Packets this side sent that were neither SYN nor RST."""
        return self.pkts - self.syn - self.synack - self.rst


class Exchange:
    """One HTTP/1.x request and its response, as far as the capture shows."""

    __slots__ = (
        "req_ts", "method", "target", "req_bytes", "req_len", "req_start",
        "resp_ts", "status", "resp_bytes", "resp_len", "chunked", "resp_end_ts",
        "resp_start", "last_resp_at", "interim",
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
        self.last_resp_at = NAN  # when its last response bytes came (NaN: none)
        self.interim = 0

    @property
    def last_resp_ts(self) -> float | None:
        """When its last response bytes came."""
        t = self.last_resp_at
        return None if t != t else t

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
        #: the IP ID of the sender's / the other end's last non-RST packet before
        #: the RST (-1: none)
        self.sender_ipid = -1
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
        "hs_done", "hs_ts", "last_pkt_from_client", "last_data_at",
        "_cur_req", "_cur_resp", "syn_ts", "first_from_client", "resp_headers",
        "zk", "expires_at", "proto", "pstate",
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
        self.last_data_at = NAN  # when its last new payload came (NaN: none)
        self._cur_req: Exchange | None = None  # request still being sent
        self._cur_resp: Exchange | None = None  # response still being received
        self.first_from_client = True
        #: Server / Keep-Alive / Connection headers of the responses seen (and
        #: http.NO_REASON when a status line had no reason phrase)
        self.resp_headers: dict[str, str] = {}
        #: Zeek's view (connstate.ZeekTcp, set by the tracker): per-connection
        #: state, and when Zeek would drop it
        self.zk: Any = None
        self.expires_at = float("inf")
        #: the protocol its payload carries (PROTO_*) and that protocol's parser
        #: state (pcapreset.track.dispatch), None for HTTP
        self.proto = PROTO_HTTP
        self.pstate: Any = None

    @property
    def last_data_ts(self) -> float | None:
        """When its last new payload came (either side)."""
        t = self.last_data_at
        return None if t != t else t

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
