"""control: what SYN, FIN and RST packets tell the tracker (pure: no I/O).

* roles (:func:`roles`): the SYN sender is the client; without a SYN, the
  SYN-ACK's receiver; without either, the endpoint on ``port`` is the server,
  then a listed server port, then Zeek's likely server ports (the lower one
  when both are), then a well-known port (< 1024), then the first packet's
  sender is the client. The rule that decided is returned with them.
* :func:`control`: a SYN, FIN or RST packet of a connection: Zeek's history
  letters and state, SYN counts, ISN and options (:func:`syn_options`), FIN
  times, RST events (:mod:`.rst`).

:mod:`.flows` calls these off its per-packet path (new connections and
control packets only).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..capture.tcp import ACK, FIN, RST, SYN, TcpBatch, parse_tcp_options
from . import connstate as zeek
from .conn import Conn, Dir, RstEvent
from .connstate import control_history, update
from .rst import rst_event

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
M32 = 0xFFFFFFFF
#: ports treated as "server" ports for connections whose start was not seen
WELL_KNOWN_MAX = 1024


def roles(src: int, dst: int, flags: int, port: int | None,
          server_ports: set[int]) -> tuple[int, int, str]:  # fmt: skip
    """(client, server, rule) of a new connection whose first packet went from
    ``src`` to ``dst`` (endpoints: ip << 16 | port) with TCP ``flags``."""
    if flags & SYN and not flags & ACK:
        client, server, rule = src, dst, "syn"
    elif flags & SYN:
        client, server, rule = dst, src, "syn-ack"
    else:
        # Zeek's rule (TCPAnalyzer::WantConnection) after --port / server ports:
        # a likely server port on one side is the server; on both, the lower one
        sp, dp = src & 0xFFFF, dst & 0xFFFF
        ls, ld = zeek.likely_server_port(sp), zeek.likely_server_port(dp)
        if port is not None and (sp == port) != (dp == port):
            rule = "port-option"
            client, server = (dst, src) if sp == port else (src, dst)
        elif (sp in server_ports) != (dp in server_ports):
            rule = "server-port"
            client, server = (dst, src) if sp in server_ports else (src, dst)
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
    return client, server, rule


def control(conn: Conn, d: Dir, o: Dir, up: bool, ts: float, seq: int, ack: int,
            flags: int, win: int, plen: int, ttl: int, ipid: int, optlen: int,
            b: TcpBatch, i: int, poff: int, buf: bytes) -> RstEvent | None:  # fmt: skip
    """A SYN, FIN or RST (packet ``i`` of batch ``b``; its payload starts
    at ``buf[poff]``) from side ``d`` (``up``: the client) of ``conn``; the
    new RST event it starts, if any."""
    control_history(conn, up, flags, seq, plen)  # S H F R I Q letters
    update(conn, d, o, up, flags, seq, plen, ts)
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
                syn_options(d, buf, poff - optlen, optlen)
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
        return rst_event(conn, d, o, up, ts, seq, ack, flags, win, plen, ttl, ipid, optlen, b, i)
    return None


_LINUX_SYN_KINDS = ["mss", "sackOK", "ts", "nop", "wscale"]


def syn_options(d: Dir, buf: bytes, at: int, n: int) -> None:
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
