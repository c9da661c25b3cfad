"""connstate: Zeek-compatible endpoint states, ``conn_state`` and history letters.

Zeek keeps a TCP state per endpoint (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL,
ESTABLISHED, CLOSED, RESET), moves it packet by packet, and at the end maps the
pair to one code of ``conn_state()`` in ``scripts/base/protocols/conn/main.zeek``.
This module replays those transitions on the packets the flow tracker sees, so the
result is Zeek's answer computed from observation only. Checked against Zeek's
source (zeek/zeek a13de64fbbdb):

* transitions: ``TCPSessionAdapter::UpdateStateMachine`` and its ``Update*State``
  helpers (``src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc``);
* connection end: ``ConnectionClosed`` schedules removal ``tcp_close_delay``
  (5 s) after a close is complete (a RST, both sides closed, or one side closed
  while the other never sent anything), ``PartialCloseTimer`` removes a
  connection ``tcp_partial_close_delay`` (3 s) after a side whose first packet
  was a FIN, ``ResetTimer`` removes one ``tcp_reset_delay`` (5 s) after a RST
  that follows its sender's own FIN (``UpdateClosedState``; a Zeek btest
  documents that a connection with history ShADadtFRfr expires then, not
  after the 5-minute inactivity timeout), ``IsReuse`` starts a new
  connection on a SYN whose sequence number differs from the originator's,
  or on any SYN once a side has closed;
* roles of connections without a SYN: ``TCPAnalyzer::WantConnection`` flips when
  the source port is in ``likely_server_ports`` (and, if both are, flips only
  when the source port is the lower one);
* history: ``update_history`` (S H F R once, repeated when the sequence number
  changes; I for FIN+RST, Q for other multi-flag packets; D/A for data/pure ACK
  without SYN/FIN/RST) and ``Session::ScaledHistoryEntry`` (T, W at 1, 10, 100...).

Deliberately not replayed (see docs/zeek-agreement.md): the 5-minute
``tcp_inactivity_timeout`` and the 5 s ``tcp_attempt_delay`` (both would split one
connection in two where a user wants to see one: a long idle keep-alive before a
reset, a SYN retransmitted for 20 s), content gaps (G), checksum errors (C).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .conn import Conn, Dir

CONN_STATES = (
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
)  # fmt: skip

# Zeek's TCP_ENDPOINT_* values (analyzer/protocol/tcp/TCP_Endpoint.h), in its order
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
STATE_NAMES = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")

#: init-bare.zeek defaults
TCP_CLOSE_DELAY_S = 5.0
TCP_RESET_DELAY_S = 5.0
TCP_PARTIAL_CLOSE_DELAY_S = 3.0

#: TCP ports Zeek's default scripts register for analyzers, i.e. its
#: ``likely_server_ports`` (``Analyzer::register_for_ports`` in
#: scripts/base/protocols/*/main.zeek and the spicy .evt files, a13de64fbbdb).
ZEEK_LIKELY_SERVER_PORTS = frozenset(
    {
        21, 22, 23, 25, 53, 79, 80, 81, 88, 135, 139, 143, 389, 443, 445, 465, 502, 513, 514,
        563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995, 1080, 1434, 1883, 2811, 3128,
        3268, 3306, 3389, 5222, 5223, 5269, 5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080,
        8888, 20000,
    }
)  # fmt: skip

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")
_INF = float("inf")
_SYN, _FIN, _RST, _ACK = 0x02, 0x01, 0x04, 0x10
M32 = 0xFFFFFFFF


class ZeekTcp:
    """Per-connection state Zeek keeps besides the endpoint states (``Dir.zst``).

    Index 0 is our client, 1 our server. ``orig`` is the index of the endpoint Zeek
    calls the originator *right now*: for a connection that starts with a SYN-ACK,
    Zeek takes the SYN-ACK sender as originator until data or a pure ACK is seen,
    then flips (``TCP_Endpoint::CheckHistory``).
    """

    __slots__ = ("orig", "prev", "closed", "last_syn", "last_fin", "last_rst", "flags_seen",
                 "delete_at", "pclose_at")  # fmt: skip

    def __init__(self) -> None:
        self.orig = 0
        self.prev = [INACTIVE, INACTIVE]  # TCP_Endpoint::prev_state
        self.closed = [False, False]  # TCP_Endpoint::did_close
        self.last_syn: list[int | None] = [None, None]  # hist_last_SYN (absolute seq)
        self.last_fin: list[int | None] = [None, None]
        self.last_rst: list[int | None] = [None, None]
        self.flags_seen = [0, 0]  # history bits: 1 SYN/SYN-ACK, 2 FIN, 4 RST, 8 I, 16 Q
        self.delete_at = _INF  # ConnDeleteTimer
        self.pclose_at = _INF  # PartialCloseTimer

    def frozen(self) -> ZeekTcp:
        """A copy with only what is read once the connection can change no more
        (``orig`` for :func:`conn_state`, and the two timers); the per-endpoint
        lists the state machine keeps are left unset."""
        z = ZeekTcp.__new__(ZeekTcp)
        z.orig = self.orig
        z.delete_at = self.delete_at
        z.pclose_at = self.pclose_at
        return z


def likely_server_port(port: int) -> bool:
    return port in ZEEK_LIKELY_SERVER_PORTS


def zeek_flips(sport: int, dport: int, flags: int) -> bool:
    """``TCPAnalyzer::WantConnection``: does Zeek make the first packet's receiver
    the originator of a connection that does not start with a SYN?"""
    if flags & _SYN and not flags & _ACK:
        return False
    if not likely_server_port(sport):
        return False
    if likely_server_port(dport):
        return not flags & _SYN and sport < dport
    return True


# ------------------------------------------------------------------ state machine
def _set(d: Dir, zk: ZeekTcp, i: int, state: int) -> None:
    if d.zst != state:
        zk.prev[i] = d.zst
        d.zst = state


def update(conn: Conn, d: Dir, o: Dir, from_client: bool, flags: int, seq: int, plen: int,
           ts: float) -> None:  # fmt: skip
    """One packet from ``d`` (peer ``o``): Zeek's ``UpdateStateMachine``.

    Called for every SYN/FIN/RST packet and for other packets while the sender is
    still INACTIVE (later ones cannot change any state).
    """
    zk: ZeekTcp = conn.zk
    i = 0 if from_client else 1
    if zk.orig and not flags & 0x07 and (plen or flags & _ACK) and conn.hist == ["^", "h"]:
        # SYN-ACK-first connection, now an A or D letter: Zeek flips
        # (TCP_Endpoint::CheckHistory); this packet keeps its stale is_orig.
        zk.orig = 0
        is_orig = False
    else:
        is_orig = i == zk.orig
    st = d.zst
    do_close = False
    if st == INACTIVE:
        do_close = _inactive(conn, zk, d, o, i, is_orig, flags, plen)
    elif st in (SYN_SENT, SYN_ACK_SENT):
        if flags & _FIN:
            _set(d, zk, i, CLOSED)
            do_close = True
        if flags & _RST:
            _set(d, zk, i, RESET)
            do_close = True
    elif st in (ESTABLISHED, PARTIAL):
        if flags & _SYN and st == PARTIAL and o.zst == INACTIVE and not flags & _ACK:
            _set(d, zk, i, SYN_SENT)
        if flags & _FIN and not flags & _RST:
            _set(d, zk, i, CLOSED)
            if o.zst == RESET and zk.prev[1 - i] == CLOSED:
                # the peer sent a FIN then a RST: normal termination after all
                _set(o, zk, 1 - i, CLOSED)
            do_close = True
        if flags & _RST:
            _set(d, zk, i, RESET)
            do_close = True
    elif st == CLOSED:
        # a RST after both FINs leaves the states alone (UpdateClosedState)
        if flags & _RST and o.zst != CLOSED:
            _set(d, zk, i, RESET)
            do_close = not zk.closed[i]
            if not do_close:
                # a RST after the sender's own FIN: ResetTimer removes the
                # connection tcp_reset_delay later (the first one set wins; a
                # close completed before then cancels it, see _closed)
                zk.delete_at = min(zk.delete_at, ts + TCP_RESET_DELAY_S)
                conn.expires_at = next_expiry(conn)
    if do_close:
        _closed(zk, d, o, i, ts)
        conn.expires_at = next_expiry(conn)


def _inactive(conn: Conn, zk: ZeekTcp, d: Dir, o: Dir, i: int, is_orig: bool, flags: int,
              plen: int) -> bool:  # fmt: skip
    """``UpdateInactiveState``; returns do_close."""
    do_close = False
    if flags & _SYN:
        if is_orig:
            _set(d, zk, i, SYN_ACK_SENT if flags & _ACK else SYN_SENT)
        else:
            if not flags & _ACK and o.zst == SYN_ACK_SENT:
                # SYN after its SYN-ACK (reordered): Zeek flips the roles and
                # establishes both sides
                zk.orig = i
                _set(o, zk, 1 - i, ESTABLISHED)
            if o.zst == SYN_SENT:
                _set(o, zk, 1 - i, ESTABLISHED)
            _set(d, zk, i, ESTABLISHED)
    if flags & _FIN:
        _set(d, zk, i, CLOSED)
        do_close = True
    if flags & _RST:
        _set(d, zk, i, RESET)
        do_close = True
    if d.zst == INACTIVE:
        orig_st = (conn.c, conn.s)[zk.orig].zst
        if not is_orig and plen == 0 and orig_st == SYN_SENT:
            pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
        elif flags & _ACK and o.zst == ESTABLISHED:
            _set(d, zk, i, ESTABLISHED)  # we just missed its SYN
        else:
            _set(d, zk, i, PARTIAL)
    return do_close


def _closed(zk: ZeekTcp, d: Dir, o: Dir, i: int, ts: float) -> None:
    """``ConnectionClosed``: did_close and the timers that end the connection."""
    if zk.closed[i]:
        return
    zk.closed[i] = True
    if d.zst == RESET or zk.closed[1 - i] or o.zst == INACTIVE:
        zk.delete_at = ts + TCP_CLOSE_DELAY_S
        zk.pclose_at = _INF  # CancelTimers()
    elif zk.prev[i] == INACTIVE:
        zk.pclose_at = ts + TCP_PARTIAL_CLOSE_DELAY_S


def next_expiry(conn: Conn) -> float:
    zk: ZeekTcp = conn.zk
    return min(zk.delete_at, zk.pclose_at)


def expired(conn: Conn, ts: float) -> bool:
    """Had Zeek removed ``conn`` before a packet at ``ts`` arrived?

    Call when ``ts >= conn.expires_at``; updates ``conn.expires_at``.
    """
    zk: ZeekTcp = conn.zk
    if ts >= zk.delete_at:
        return True
    if ts >= zk.pclose_at:
        zk.pclose_at = _INF
        c, s = conn.c.zst, conn.s.zst
        if (
            c != INACTIVE
            and s != INACTIVE
            and not (zk.closed[0] and zk.closed[1])
            and RESET not in (c, s)
        ):
            return True
    conn.expires_at = next_expiry(conn)
    return False


def _start_seq(dirs: tuple[Dir, Dir], k: int) -> int | None:
    """Zeek's ``StartSeq()`` of endpoint ``k``: its ISN, or one before the first
    sequence number it sent, or, if it sent nothing yet, one before what its peer
    acknowledged (``init_peer``)."""
    d = dirs[k]
    if d.base is not None:
        return (d.base - 1) & M32
    ack = dirs[1 - k].last_ack
    return None if ack is None else (ack - 1) & M32


def is_reuse(conn: Conn, from_client: bool, flags: int, seq: int) -> bool:
    """``TCPSessionAdapter::IsReuse`` for a SYN or SYN-ACK on an existing connection."""
    zk: ZeekTcp = conn.zk
    dirs = (conn.c, conn.s)
    orig = zk.orig
    if flags & _ACK:
        if dirs[orig].zst != INACTIVE:
            return False  # not a half connection
        ref = 1 - orig
    else:
        ref = orig
    if zk.closed[0] or zk.closed[1]:
        return True
    if seq == _start_seq(dirs, ref):
        return False
    # the SYN-ACK was seen before its SYN (capture reordering): not a reuse
    return not (
        not flags & _ACK
        and dirs[orig].zst == SYN_ACK_SENT
        and dirs[1 - orig].zst == INACTIVE
        and seq == _start_seq(dirs, 1 - orig)
    )


# ------------------------------------------------------------------ history
def control_history(conn: Conn, from_client: bool, flags: int, seq: int, plen: int) -> None:
    """History letters of a SYN/FIN/RST packet (``update_history``)."""
    zk: ZeekTcp = conn.zk
    i = 0 if from_client else 1
    seen = zk.flags_seen[i]
    n = (flags & _SYN) // _SYN + (flags & _FIN) + (flags & _RST) // _RST
    if n > 1:
        bit, ch = (8, "I") if flags & _FIN and flags & _RST else (16, "Q")
        if not seen & bit:
            zk.flags_seen[i] = seen | bit
            conn.hist.append(ch if from_client else ch.lower())
        return
    if flags & _SYN:
        ch, last, bit = ("H" if flags & _ACK else "S"), zk.last_syn, 1
        key = seq
    elif flags & _FIN:
        ch, last, bit = "F", zk.last_fin, 2
        key = (seq + plen) & M32  # a FIN's position is after its data
    else:
        ch, last, bit = "R", zk.last_rst, 4
        key = seq
    if not seen & bit or key != last[i]:
        zk.flags_seen[i] = seen | bit
        conn.hist.append(ch if from_client else ch.lower())
    last[i] = key


# ------------------------------------------------------------------ conn_state
def conn_state(conn: Conn) -> str:
    """Zeek's ``conn_state()`` from the replayed endpoint states."""
    zk: ZeekTcp = conn.zk
    dirs = (conn.c, conn.s)
    od, rd = dirs[zk.orig], dirs[1 - zk.orig]
    os_, rs = od.zst, rd.zst
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and od.bytes == 0 and rd.bytes == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            return "RSTOS0" if _RSTOS0.fullmatch(conn.history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def endpoint_states(conn: Conn) -> tuple[str, str]:
    """(originator, responder) Zeek endpoint state names, for debugging and docs."""
    zk: ZeekTcp = conn.zk
    dirs = (conn.c, conn.s)
    return STATE_NAMES[dirs[zk.orig].zst], STATE_NAMES[dirs[1 - zk.orig].zst]
