"""conversation: what a connection carries and where a RST fell in it.

Protocol awareness for the facts of :mod:`pcapreset.interpret.evidence`: the
connection's application (``app``: HTTP needs a request and an HTTP answer;
TLS a record header; else ``other``, or ``none`` without payload), who spoke
first (a server banner is a response), and the protocol-free facts of the
RST: who spoke last, what the RST left unacknowledged, whether the sender had
closed and what then reached its socket (TLS alerts, closing lines, late
ACKs and FINs), goodbyes (a last message of at most GOODBYE_MAX bytes) and
probes. HTTP's own facts (requests, responses, keep-alive) stay in evidence.
"""

from __future__ import annotations

from ..track.conn import PROTO_NAMES, PROTO_WEBSOCKET, Conn, Dir, RstEvent
from .fact import FactSink

#: a message this long before the RST is no instant reply: its sender waited
#: (above delayed-ACK timers, below any server's idle timeout; see thresholds.RIGHT_AFTER_S)
WAITED_S = 1.0


_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")


def is_tls_record(h: bytes | None) -> bool:
    """A TLS record header (content type 20-23, version 3.x) or an SSLv2 hello."""
    if not h or len(h) < 3:
        return False
    if 20 <= h[0] <= 24 and h[1] == 3 and h[2] <= 4:
        return True
    return bool(h[0] & 0x80) and h[2] == 1


#: the apps whose requests and responses the tracker follows (track.http, track.dispatch)
REQUEST_APPS = ("http", "fastcgi", "uwsgi")


def conn_app(conn: Conn) -> str:
    """What the connection carries: http | fastcgi | uwsgi | websocket | tls | other | none.

    FastCGI, uwsgi and WebSocket are what the tracker decided (``Conn.proto``). HTTP
    needs both ends to speak it: an HTTP request answered by something else (an SSH
    banner) is not HTTP, nor is what a CONNECT tunnel carries."""
    if conn.proto:
        return PROTO_NAMES[conn.proto]
    sh0 = conn.s.head
    if any(e.method == "CONNECT" and e.status is not None and 200 <= e.status < 300
           for e in conn.exchanges):  # fmt: skip
        return "other"  # a CONNECT tunnel: what it carries is not HTTP to us
    if conn.exchanges and (not sh0 or sh0.startswith(b"HTTP/")):
        return "http"  # (an upgrade other than a WebSocket's, e.g. h2c, stays HTTP)
    ch, sh = conn.c.head, conn.s.head
    if is_tls_record(ch) or is_tls_record(sh):
        return "tls"
    if (ch and ch[:4] in _METHODS and not sh) or (sh and sh.startswith(b"HTTP/1.")):
        return "http"
    if conn.c.data_pkts or conn.s.data_pkts or conn.c.head_ts or conn.s.head_ts:
        return "other"
    return "none"


def server_spoke_first(conn: Conn) -> bool:
    """The server sent payload before the client did (SSH, SMTP, FTP, POP3 banners)."""
    s, c = conn.s.head_ts, conn.c.head_ts
    return s is not None and (c is None or s < c)


#: HTTP request targets of health checks (load balancers, Kubernetes probes)
_HEALTH = ("health", "ping", "ready", "live", "status", "alive")
#: the peer's segment after the sender's FIN starts with one of these TLS
#: record types: no new request (21 alert incl. close_notify, 20 change cipher spec)
_TLS_NO_REQUEST = {20: "ChangeCipherSpec", 21: "alert (close_notify or error)"}
#: TLS 1.3 sends its alerts as application data (type 23): 2 bytes of alert,
#: 1 of inner type and a 16-byte AEAD tag make a 19-byte record
TLS13_ALERT_LEN = 19
#: unread bytes this few, followed by the peer's FIN, are its goodbye (a TLS
#: close_notify record, an SMTP "221", a POP3 "+OK"), not a reply in flight
GOODBYE_MAX = 64
#: a sender that retransmitted this often with data unacknowledged gave up on the peer
GAVE_UP_RETRANS = 3
#: a client's version or greeting line is at most this long (SSH: 255)
GREETING_MAX = 255
#: a responder that sent more than this sent more than a banner
PEER_BULK_BYTES = 4096


def tls_no_request(h: bytes | None) -> str | None:
    """What a TLS record that cannot carry a request is, else None."""
    if not is_tls_record(h) or h is None:
        return None
    if h[0] in _TLS_NO_REQUEST:
        return "a TLS " + _TLS_NO_REQUEST[h[0]] + " record"
    if h[0] == 23 and len(h) >= 5 and (h[3] << 8 | h[4]) == TLS13_ALERT_LEN:
        return "a TLS 1.3 record the size of an encrypted alert (close_notify)"
    return None


def _before(t: float | None, ts: float) -> float | None:
    return t if t is not None and t <= ts else None


def _unacked(d: Dir, ack: int | None) -> int:
    """Bytes ``d`` sent beyond ``ack`` (an absolute ACK number from its peer)."""
    if d.base is None or ack is None or not d.max_end:
        return 0
    acked = (ack - d.base) & 0xFFFFFFFF
    left = d.max_end - acked
    return left if 0 < left < 1 << 30 else 0


def waiting_at(conn: Conn, t: float) -> bool:
    """An HTTP request had been sent before ``t`` and its response had not
    ended by then: whoever closed at ``t`` gave up on it (or dropped it)."""
    return any(
        e.req_ts is not None and e.req_ts < t and (e.resp_end_ts is None or e.resp_end_ts > t)
        for e in conn.exchanges
    )


def ws_goodbye(conn: Conn, client: bool) -> bool | None:
    """A WebSocket's (track.dispatch.WsState.goodbye) client's or server's last frame: a
    close, ping or pong (True) or a message (False); None: no frame, or no WebSocket."""
    st = conn.pstate if conn.proto == PROTO_WEBSOCKET else None
    return None if st is None else st.goodbye(client)


def _ws_late(conn: Conn, ev: RstEvent) -> int | None:
    """The opcode of the first WebSocket frame the RST's peer sent after the sender's FIN."""
    st = conn.pstate if conn.proto == PROTO_WEBSOCKET else None
    return None if st is None else st.late_opcode[1 if ev.from_client else 0]


def conversation_facts(f: FactSink, conn: Conn, ev: RstEvent) -> None:
    """What the connection carries and where the RST fell in it, protocol-free:
    who spoke, who spoke last, what each side had not yet acknowledged."""
    app = conn_app(conn)
    f.add("app_" + app, {
        "http": "the connection carries HTTP/1.x",
        "fastcgi": "the connection carries FastCGI (fastcgi_pass): its records are the "
        "requests and responses",
        "uwsgi": "the connection carries uwsgi requests (uwsgi_pass) and HTTP answers",
        "websocket": "the connection carries a WebSocket (HTTP upgrade)",
        "tls": "the connection carries TLS: its records are the message boundaries",
        "other": "the connection carries a protocol other than HTTP or TLS",
        "none": "no payload on the connection",
    }[app])  # fmt: skip
    p0 = ev.packets[0]
    d, o = (conn.c, conn.s) if ev.from_client else (conn.s, conn.c)
    if server_spoke_first(conn) and app not in REQUEST_APPS:
        f.add("server_spoke_first", "the server spoke first (a banner): it had responded")
    if conn.c.syn:
        f.add("syn_seen", "the capture has the client's SYN")
    if conn.c.syn and not conn.s.synack and conn.s.pkts > conn.s.rst:
        f.add(
            "odd_handshake",
            "the server answered the SYN with something other than SYN-ACK: a crafted or "
            "broken handshake",
        )
    c_head = _before(conn.c.head_ts, ev.ts)
    if c_head is None:
        f.add("no_request", "the client sent no payload before the RST")
    elif (
        app == "http"
        and conn.exchanges
        and all(any(h in e.target.lower() for h in _HEALTH) for e in conn.exchanges)
    ):
        f.add("health_check_request", f"the client only asked {conn.exchanges[0].target}")
    d_last, o_last = _before(d.last_data_ts, ev.ts), _before(o.last_data_ts, ev.ts)
    if ev.peer_data_after and (o_last is None or (d_last is not None and o_last < d_last)):
        # its last data came after the RST: it was sending up to it
        o_last = ev.ts
    if _before(d.head_ts, ev.ts) is not None and _before(o.head_ts, ev.ts) is not None:
        f.add("both_spoke", "both ends sent payload before the RST")
    if o_last is not None and (d_last is None or o_last > d_last):
        f.add("peer_spoke_last", "the last payload before the RST came from the other end")
    elif d_last is not None:
        f.add("sender_spoke_last", "the RST's sender sent the last payload before it")
    ack = p0.ack if p0.ack is not None else (d.last_ack if d.ack_seen else None)
    unread = _unacked(o, ack) if not ev.peer_data_after else 0
    if p0.ack is None and not ev.sender_fin_before:
        # a bare RST says nothing of what its sender received; its last ACK
        # may just be older than the data it read
        unread = 0
    if ev.peer_data_after and not ev.sender_fin_before:
        f.add(
            "peer_still_sending",
            f"the other end's data kept arriving after the RST ({ev.peer_data_after} "
            "segment(s)): it was still sending",
        )
    o_fin = _before(o.fin_ts, ev.ts)
    if o.bytes > PEER_BULK_BYTES:
        f.add("peer_bulk", f"the other end sent {o.bytes} bytes: more than a banner")
    if o_fin is not None and not ev.sender_fin_before:
        f.add(
            "peer_closed_first",
            f"the other end had closed (FIN) {ev.ts - o_fin:.3f} s before; this end answered "
            "with RST instead of its own FIN",
        )
    if (
        unread
        and unread <= GOODBYE_MAX
        and o_fin is not None
        and app not in REQUEST_APPS
        and ws_goodbye(conn, not ev.from_client) is not False
    ):
        f.add(
            "peer_goodbye_unread",
            f"the other end's last {unread} byte(s), then its FIN, were left unread: its "
            "goodbye (a close_notify or a closing line), not a reply in flight",
        )
    elif unread:
        f.add(
            "peer_data_unread",
            f"the RST left {unread} byte(s) from the other end unacknowledged (in flight or "
            "unread)",
        )
    inflight = _unacked(d, o.last_ack)
    if inflight and inflight <= GOODBYE_MAX and app not in REQUEST_APPS and d_last is not None:
        f.add(
            "own_goodbye_unacked",
            f"the sender's last {inflight} byte(s), sent just before the RST, were not yet "
            "ACKed: its goodbye (a TLS alert or a closing line), nothing else in flight",
        )
    elif inflight:
        f.add("own_data_unacked", f"{inflight} byte(s) the sender had sent were not yet ACKed")
    if not ev.from_client and "peer_spoke_last" in f:
        f.add("client_unanswered", "the client's last message had no answer from the server")
        if (
            0 < o.last_plen <= GOODBYE_MAX
            and "peer_data_unread" not in f
            and o_last is not None
            and ev.ts - o_last < WAITED_S
        ):
            f.add(
                "client_said_goodbye",
                f"the client's last segment was {o.last_plen} byte(s) (a closing request: "
                "unbind, QUIT, logoff), ACKed by the RST at once",
            )
    if d.retrans >= GAVE_UP_RETRANS and inflight:
        f.add(
            "sender_gave_up",
            f"the sender retransmitted {d.retrans} time(s), its data still unacknowledged: "
            "it gave up on the other end",
        )
    if (
        ev.from_client
        and server_spoke_first(conn)
        and 0 < conn.c.bytes <= GREETING_MAX
        and conn.c.data_pkts <= 1
    ):
        f.add(
            "client_said_little",
            f"the client sent one message of {conn.c.bytes} byte(s) (a greeting or version line)",
        )
    if (
        ev.sender_fin_before
        and d.fin_ts is not None
        and not ev.prev_pkt_from_peer
        and ev.ts - d.fin_ts < WAITED_S
    ):
        if 0 < unread <= GOODBYE_MAX and o_fin is None:
            f.add(
                "late_segment_no_request",
                f"the other end's last {unread} byte(s) (its goodbye) arrived as the "
                f"{'client' if ev.from_client else 'server'} closed; its kernel reset the "
                "unread goodbye",
            )
        else:
            f.add(
                "reset_after_own_fin",
                f"the sender reset {ev.ts - d.fin_ts:.3f} s after its own FIN, nothing from "
                "the other end in between: an abortive close",
            )
    if d_last is not None and o_last is not None and o_last > d_last and ev.ts - o_last < WAITED_S:
        f.add("rst_soon_after_peer", "the RST came within 1 s of the other end's last message")
    ch, sh = conn.c.head, conn.s.head
    if ev.from_client and is_tls_record(ch) and sh and 0x20 <= sh[0] < 0x7F:
        f.add(
            "tls_reply_not_tls",
            "the client started TLS and the server answered with something else: the client "
            "gave up",
        )
    if (
        ev.from_client
        and app == "tls"
        and is_tls_record(sh)
        and c_head is not None
        and conn.s.head_ts is not None
        and d_last is not None
        and d_last < conn.s.head_ts
    ):
        f.add(
            "tls_handshake_only",
            "the client sent its TLS hello, got the server's handshake and reset without "
            "going on: no request",
        )
    if (
        ev.from_client
        and "sender_spoke_last" in f
        and "own_data_unacked" not in f
        and d_last is not None
        and ev.ts - d_last >= WAITED_S
    ):
        f.add(
            "client_waited",
            f"the client's last message was ACKed but not answered; it reset "
            f"{ev.ts - d_last:.1f} s later: it gave up waiting",
        )
    if (
        not ev.outstanding
        and "peer_data_unread" not in f
        and "own_data_unacked" not in f
        and "response_partial" not in f
        and "peer_still_sending" not in f
        and not (app not in REQUEST_APPS and "peer_spoke_last" in f and not ev.from_client)
    ):
        f.add("nothing_in_flight", "nothing was in flight: no request waiting, no data unread")
    # a closed socket answering a late segment
    if ev.sender_fin_before and ev.prev_pkt_from_peer and d.fin_ts is not None:
        late = o.late if o.late_ts is not None and o.late_ts <= ev.ts else None
        late_bytes = _unacked(o, d.last_ack if d.ack_seen else None) or 0
        what = None
        # with the other end's FIN too, the socket is gone once its own FIN is ACKed
        o_fin_seen = o.fin_ts is not None and o.fin_ts <= ev.ts
        if late is None and late_bytes > GOODBYE_MAX:
            if ev.from_client:
                f.add(
                    "reply_after_client_close",
                    f"{late_bytes} byte(s) of the server's answer were still in flight when "
                    "the client closed: the client gave up on them",
                )
        elif (
            late is None
            and late_bytes
            and not ev.from_client
            and app == "websocket"
            and ws_goodbye(conn, True) is False
        ):
            f.add(
                "late_request_after_close",
                f"the client's last WebSocket message ({late_bytes} bytes unacknowledged by "
                "the server's FIN) crossed the server's close and met the closed socket",
            )
        elif late is None and (o_fin_seen or ev.ts - d.fin_ts >= WAITED_S):
            what = "only ACKs, a FIN or a keep-alive probe"
        elif late is None:
            # only the ACK of its own FIN came back, and the RST at once: the
            # application aborted right after closing, no segment provoked it
            f.add(
                "reset_after_own_fin",
                f"the sender reset {ev.ts - d.fin_ts:.3f} s after its own FIN, the other end "
                "having only ACKed it: an abortive close, nothing in flight",
            )
        elif tls_no_request(late) is not None:
            what = tls_no_request(late)
        elif app == "websocket" and (op := _ws_late(conn, ev)) is not None:
            from ..track.websocket import CLOSE, OPCODE_NAMES, PING, PONG  # (WebSocket only)

            if op == CLOSE:
                what = "a WebSocket close frame: its goodbye, no new message"
            elif op in (PING, PONG):
                what = f"a WebSocket {OPCODE_NAMES[op]}: liveness, no new message"
            elif not ev.from_client:
                f.add(
                    "late_request_after_close",
                    f"the client's next WebSocket message (a {OPCODE_NAMES[op]} "
                    "frame) reached the server after the server had closed: the message and "
                    "the close crossed",
                )
        elif app in REQUEST_APPS and ev.from_client and waiting_at(conn, d.fin_ts):
            f.add(
                "reply_after_client_close",
                "the response to a request still waiting reached the client after it had "
                "closed: the client gave up on it",
            )
        elif app in REQUEST_APPS and not ev.outstanding and not waiting_at(conn, d.fin_ts):
            what = "the rest of a message already answered, no new request"
        elif app not in REQUEST_APPS and late_bytes <= GOODBYE_MAX:
            what = (
                f"{late_bytes} byte(s): a closing message (QUIT or its reply, a goodbye "
                "frame), no new request"
            )
        elif app not in REQUEST_APPS and ev.from_client:
            f.add(
                "reply_after_client_close",
                f"the server's answer ({late_bytes} byte(s)) reached the client after it had "
                "closed: the client gave up on it",
            )
        elif app not in REQUEST_APPS and not ev.from_client:
            f.add(
                "late_request_after_close",
                f"the client's next message ({late_bytes} bytes) reached the server after "
                "the server had closed: the message and the close crossed",
            )
        if what is not None:
            f.add(
                "late_segment_no_request",
                f"the {'client' if ev.from_client else 'server'} had closed its socket "
                f"{ev.ts - d.fin_ts:.3f} s before; the other end then sent {what}",
            )
