"""connstate: Zeek-compatible ``conn_state`` from observed endpoint behaviour.

Zeek keeps a TCP state per endpoint (INACTIVE, SYN_SENT, SYN_ACK_SENT,
PARTIAL, ESTABLISHED, CLOSED, RESET) and maps the pair to one of a closed set
of codes in ``base/protocols/conn/main.zeek``. We derive the endpoint states
from what each side was seen to send, then apply the same mapping.
"""

from __future__ import annotations

import re

from .flows import Conn, Dir

CONN_STATES = (
    "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH",
)  # fmt: skip

INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")


def endpoint_state(d: Dir, peer: Dir, handshake_done: bool) -> int:
    if d.rst:
        return RESET
    if d.fin:
        return CLOSED
    if d.syn or d.synack:
        if handshake_done or (d.syn and peer.synack and d.after_hs):
            return ESTABLISHED
        return SYN_SENT if d.syn else SYN_ACK_SENT
    if d.pkts:
        # without its own SYN an endpoint is PARTIAL, unless the peer opened the
        # connection and the handshake completed
        if peer.syn and handshake_done:
            return ESTABLISHED
        return PARTIAL
    return INACTIVE


def conn_state(conn: Conn) -> str:
    hs = conn.hs_done or bool(conn.c.syn and conn.s.synack and conn.c.after_hs)
    os_ = endpoint_state(conn.c, conn.s, hs)
    rs = endpoint_state(conn.s, conn.c, hs)
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (
            os_ == RESET and conn.c.bytes == 0 and conn.s.bytes == 0
        ):
            return "REJ"
        if o_inactive:
            return "RSTRH"
        return "RSTR"
    if os_ == RESET:
        if r_inactive:
            if _RSTOS0.fullmatch(conn.history):
                return "RSTOS0"
            return "OTH"
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
