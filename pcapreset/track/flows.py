"""flows: decoded TCP packets -> connections (pure: no I/O).

One :class:`FlowTracker` consumes :class:`~pcapreset.capture.tcp.TcpBatch` objects
in capture order and rebuilds bidirectional connections:

* roles (:mod:`.handshake`): the SYN sender is the client; without a SYN, the
  SYN-ACK's receiver; without either, ports decide. ``Conn.role_rule`` says which
  rule decided.
* a new SYN on a closed (reset / FIN-FIN) 4-tuple, or with a different ISN,
  starts a new connection (port reuse), as Zeek does;
* per direction: packets, bytes (from sequence numbers), retransmissions,
  duplicate ACKs, zero windows, full-MSS segments and their retransmissions,
  TTL / IP ID of the sender, FIN and RST;
* RST packets grouped into RST *events*: RSTs of one connection with no data
  in between are one event (retransmitted / duplicate RSTs collapse);
* HTTP/1.x exchanges from request and status lines (Content-Length and
  chunked where the payload was captured); FastCGI, uwsgi and WebSocket
  (after ``101 Switching Protocols``) through :mod:`.dispatch`;
* a Zeek-style ``history`` string; ``conn_state`` is computed from these
  observations by :mod:`pcapreset.connstate`.

Everything here is observation (the model: :mod:`.conn`; SYN, FIN and RST
packets: :mod:`.control`; HTTP exchanges: :mod:`.http`; RST events: :mod:`.rst`).
Interpretation lives in pcapreset.interpret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..capture.tcp import ACK, RST, SYN, TcpBatch
from . import connstate as zeek
from .conn import Conn, Dir, RstEvent, conn_keys
from .connstate import ZeekTcp, is_reuse
from .connstate import update as zeek_update
from .control import control, roles
from .dispatch import detect as detect_proto
from .dispatch import payload as proto_payload
from .dispatch import upgraded
from .http import http_client, http_server
from .httphead import preparse as preparse_http
from .rst import data_after_rst

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
M32 = 0xFFFFFFFF
HALF = 1 << 31
#: payload bytes kept from a side's first segment (and its first after the peer's FIN)
HEAD_BYTES = 8
#: IP ID steps up to this are a counter's; larger ones (or backwards) a jump
IPID_STEP_MAX = 1024
#: Zeek repeats T/W letters when their counts reach these values
_REPEAT_AT = {1, 10, 100, 1000, 10000}


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
        client, server, rule = roles(src, dst, flags, self.port, self.server_ports)
        c = Conn(len(self.conns), client, server, rule, ts)
        c.zk = ZeekTcp()
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

        Per packet: find its connection (the previous packet's, a table
        lookup, or :meth:`_resolve` off the common path), count it on its
        side (:meth:`_count`), then follow SYN, FIN and RST (:func:`.control.control`),
        acknowledgements (:meth:`_ack`) and payload (:meth:`_payload`:
        sequence space, retransmissions, HTTP). Compiled (flows.pxd), the
        columns are typed numpy views and the steps C calls; uncompiled,
        Python lists. The rest of a packet is read by index ``i`` only where
        needed (new connections, control packets, HTTP).
        """
        n = len(b)
        if not n:
            return
        active = self.active
        get = active.get
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
            flags = flagss[i]
            plen = plens[i]
            if cached and key == cached_key:
                conn = cached_conn
            else:
                conn = active.get(key) if cython.compiled else get(key)  # (typed dict lookup)
                cached, cached_key, cached_conn = True, key, conn
            if conn is None:
                conn = self._resolve(None, key, src, b, i, seq, flags, ts)
                cached = False
            elif (
                (src != conn.client and src != conn.server) or ts >= conn.expires_at or flags & SYN
            ):
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
            win = wins[i]
            optlen = optlens[i]
            if flags & 0x07:  # SYN, FIN or RST: the careful path
                ack = acks[i]
                ttl = ttls[i]
                if not flags & RST:
                    if ttl != d.ttl_last:
                        d.ttl_last = ttl
                        d.ttls[ttl] = d.ttls.get(ttl, 0) + 1
                    d.ipid_last = ipids[i]
                ev = control(conn, d, o, from_client, ts, seq, ack, flags, win, plen, ttl,
                             ipids[i], optlen, b, i, poffs[i],
                             buf0 if bufidx is None else bufs[bufidx[i]])  # fmt: skip
                if ev is not None and self.on_rst is not None:
                    self.on_rst(ev)
                cached = False
                if flags & RST:
                    conn.end = ts
                    conn.last_pkt_from_client = from_client
                    continue
            else:
                self._count(conn, d, o, from_client, flags, seq, plen, ts, ttls[i], ipids[i], win)
            base_o = d.base
            if base_o is None:
                # first packet of this side without a SYN: sequence space starts here
                d.base = seq
                base = seq
            else:
                base = base_o
            if flags & ACK and self._ack(conn, d, o, from_client, flags, plen, acks[i], win, ts):
                conn.end = ts  # a pure ACK: nothing more to follow
                conn.last_pkt_from_client = from_client
                continue
            d.last_win = win
            if plen:
                self._payload(conn, d, o, from_client, ts, seq, base, plen, optlen, flags, i,
                              poffs[i], pcaps[i], bufs, buf0, bufidx, heads)  # fmt: skip
            conn.end = ts
            conn.last_pkt_from_client = from_client
        self.last_ts = ts

    def _count(self, conn: Conn, d: Dir, o: Dir, up: bool, flags: int, seq: int, plen: int,
               ts: float, ttl: int, ipid: int, win: int) -> None:  # fmt: skip
        """A packet without SYN, FIN or RST: Zeek's state while its side is
        inactive, the side's TTLs and IP ID, zero windows."""
        if not d.zst:  # Zeek state INACTIVE: this packet may change it
            zeek_update(conn, d, o, up, flags, seq, plen, ts)
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
                conn.hist.append("W" if up else "w")

    def _ack(self, conn: Conn, d: Dir, o: Dir, up: bool, flags: int, plen: int, ack: int,
             win: int, ts: float) -> bool:  # fmt: skip
        """A packet with the ACK flag: the handshake's end, Zeek's A letter,
        duplicate ACKs. True for a pure ACK (no payload): nothing follows."""
        if not d.ack_seen:
            d.ack_seen = True
            if not conn.hs_done and up and conn.s.synack and conn.c.syn:
                if not flags & SYN:
                    conn.hs_done = True
                    conn.hs_ts = ts
        if plen:
            d.last_ack_no = ack
            return False
        if not flags & 0x07:
            if not conn.hbits & d.hA:
                conn.hbits |= d.hA
                conn.hist.append(d.cA)
            la = d.last_ack_no
            if la >= 0 and win == d.last_win:
                ob = o.base
                if ack == la and ob is not None:
                    una = (o.max_end - ((ack - ob) & M32)) & M32
                    if 0 < una < HALF:
                        d.dupacks += 1
        d.last_ack_no = ack
        d.last_win = win
        return True

    def _payload(self, conn: Conn, d: Dir, o: Dir, up: bool, ts: float, seq: int, base: int,
                 plen: int, optlen: int, flags: int, i: int, poff: int, pcap: int,
                 bufs: list, buf0: bytes, bufidx: list | None, heads: dict) -> None:  # fmt: skip
        """Packet ``i``'s payload: Zeek's D letter, new bytes or a
        retransmission (full-MSS or small), then the HTTP exchange it
        continues (its bytes at ``poff`` in its buffer, its message head
        parsed ahead in ``heads``)."""
        if not flags & 0x07 and not conn.hbits & d.hD:
            # Zeek's D: any payload packet without SYN/FIN/RST, retransmitted too
            conn.hbits |= d.hD
            conn.hist.append(d.cD)
        end = (seq - base + plen) & M32
        diff = (end - d.max_end) & M32
        mss_o = o.mss
        mss = -1 if mss_o is None else mss_o
        if diff == 0 or diff >= HALF:
            d.retrans += 1
            if mss >= 0 and plen + optlen >= mss:
                d.mss_retrans += 1
            else:
                d.small_retrans += 1
            if d.retrans in _REPEAT_AT:
                conn.hist.append("T" if up else "t")
            if d.head is None and ((seq - base) & M32) == 0:
                # the stream's first bytes, arriving after later ones
                _head(d, o, ts, poff, pcap, buf0 if bufidx is None else bufs[bufidx[i]], True)
            return
        d.bytes += diff
        d.max_end = end
        d.data_pkts += 1
        if mss >= 0 and plen + optlen >= mss:
            d.mss_segs += 1
        else:
            d.small_segs += 1
        d.last_data_at = ts
        d.last_plen = plen
        conn.last_data_at = ts
        if d.head is None or (o.fin_ts is not None and d.late_ts is None):
            _head(d, o, ts, poff, pcap, buf0 if bufidx is None else bufs[bufidx[i]],
                  ((seq - base) & M32) == 0)  # fmt: skip
        if conn.rst_events:
            data_after_rst(conn, up)
        if conn.proto or (up and d.data_pkts == 1 and pcap and i not in heads):
            # FastCGI, uwsgi, WebSocket (track.dispatch), decided at the client's first
            # payload (an HTTP request line, parsed ahead in `heads`, is none of them)
            buf = buf0 if bufidx is None else bufs[bufidx[i]]
            data = bytes(buf[poff : poff + pcap])
            if not conn.proto:
                detect_proto(conn, (seq - base) & M32, data)
            if conn.proto:
                proto_payload(conn, up, ts, (seq - base) & M32, plen, data, heads.get(i))
                return
        if up:
            buf = buf0 if bufidx is None else bufs[bufidx[i]]
            http_client(conn, ts, (seq - base) & M32, plen, poff, pcap, buf, heads.get(i))
            return
        ex = conn._cur_resp
        rl_o = None if ex is None or ex.resp_end_ts is not None else ex.resp_len
        if rl_o is not None and ex is not None:
            # the common case: more of a response of known length
            rl = rl_o
            ex.resp_bytes += plen
            ex.last_resp_at = ts
            if ex.resp_bytes >= rl:
                ex.resp_end_ts = ts
        else:
            buf = buf0 if bufidx is None else bufs[bufidx[i]]
            http_server(conn, ts, plen, poff, pcap, buf, heads.get(i))
            if conn.proto:  # 101 Switching Protocols: frames follow
                upgraded(conn, (seq - base) & M32, plen, bytes(buf[poff : poff + pcap]))

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
        return is_reuse(conn, src == conn.client, flags, seq)

    # ---------------------------------------------------------------- data
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


def _head(d: Dir, o: Dir, ts: float, poff: int, pcap: int, buf: bytes, first: bool) -> None:
    """Keep the first bytes of a side's stream (``first``: this segment starts
    it) and of its first payload after the peer's FIN (what the peer's closed
    socket got); called once or twice per side, off the per-packet path."""
    head = bytes(buf[poff : poff + (pcap if pcap < HEAD_BYTES else HEAD_BYTES)])
    if d.head_ts is None:
        d.head_ts = ts
    if d.head is None and first:
        d.head = head
    if o.fin_ts is not None and d.late_ts is None:
        d.late = head
        d.late_ts = ts
