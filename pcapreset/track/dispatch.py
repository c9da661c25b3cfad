"""dispatch: the upstream protocols other than HTTP/1.x that nginx speaks, on the tracker's path.

The tracker (:mod:`.flows`) follows HTTP/1.x itself (:mod:`.http`). A connection whose
client opens with a FastCGI ``BEGIN_REQUEST`` record (``fastcgi_pass``) or a uwsgi request
packet (``uwsgi_pass``), or whose HTTP request was answered ``101 Switching Protocols``
(a WebSocket), is marked with its protocol (``Conn.proto``, one of conn.PROTO_*) and its
payload comes here instead, with the parser state in ``Conn.pstate``:

* FastCGI (:mod:`.fastcgi`): ``BEGIN_REQUEST`` opens an :class:`~.conn.Exchange` (its
  method and URI from the ``PARAMS`` the capture kept), the empty ``STDIN`` ends the
  request, the first ``STDOUT`` starts the response (its ``Status:`` header, else 200),
  ``END_REQUEST`` ends it; with ``fastcgi_keep_conn on`` the next ``BEGIN_REQUEST`` follows
  on the same connection.
* uwsgi (:mod:`.uwsgi`): the request packet opens an exchange of known length (header,
  variables and ``CONTENT_LENGTH``); the answer is plain HTTP (:func:`.http.http_server`).
* WebSocket (:mod:`.websocket`): the upgrade's exchange is complete at the end of the 101
  head; what follows is frames, counted per side as messages (text, binary,
  continuation), liveness (ping, pong) and goodbyes (close): :class:`WsState`.

The protocol is decided from the client's first payload (and the 101 answer), never from
a port. Observation only; no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conn import PROTO_FASTCGI, PROTO_UWSGI, PROTO_WEBSOCKET, Conn, Exchange
from .http import http_server

M32 = 0xFFFFFFFF

# the parsers are imported with the first connection that needs one (most
# captures have none, and their dataclasses cost milliseconds at start-up)
if TYPE_CHECKING:
    from . import fastcgi, uwsgi
    from . import websocket as ws
else:
    fastcgi = uwsgi = ws = None


def _load() -> None:
    global fastcgi, uwsgi, ws
    if ws is None:
        from . import fastcgi, uwsgi
        from . import websocket as ws


def detect(conn: Conn, rel: int, data: bytes) -> None:
    """The client's first payload segment (``data``: the bytes kept, at stream offset
    ``rel``): a FastCGI ``BEGIN_REQUEST`` or a uwsgi request marks the connection (and
    the segment then goes to :func:`payload`); anything else leaves it to HTTP."""
    if not data or data[0] >= 0x20:  # every HTTP method starts with a letter
        return
    _load()
    if fastcgi.looks_like_fastcgi(data) and data[1] == fastcgi.BEGIN_REQUEST:
        conn.proto = PROTO_FASTCGI
        conn.pstate = FcgiState(rel)
    elif uwsgi.looks_like_uwsgi(data):
        conn.proto = PROTO_UWSGI
        conn.pstate = None


def payload(conn: Conn, up: bool, ts: float, rel: int, plen: int, data: bytes,
            pre: Any) -> None:  # fmt: skip
    """A new data segment of a connection whose ``proto`` is set: ``data`` = the bytes
    the capture kept, ``plen`` = its real length, ``rel`` its stream offset, ``pre`` the
    HTTP head parsed ahead for it (:func:`.httphead.preparse`), if any."""
    p = conn.proto
    if p == PROTO_FASTCGI:
        _fcgi(conn, up, ts, rel, plen, data)
    elif p == PROTO_UWSGI:
        if up:
            _uwsgi_client(conn, ts, rel, plen, data)
        else:
            http_server(conn, ts, plen, 0, len(data), data, pre)
    elif p == PROTO_WEBSOCKET:
        st = conn.pstate
        if st is not None:
            st.feed(conn, up, ts, rel, plen, data)


def upgraded(conn: Conn, rel: int, plen: int, data: bytes) -> None:
    """The server segment at offset ``rel`` carried ``101 Switching Protocols`` (its head
    is the last exchange's ``resp_len`` bytes): frames follow on both sides, the
    client's after its upgrade request."""
    _load()
    ex = conn._cur_resp if conn._cur_resp is not None else conn.exchanges[-1]
    hl = ex.resp_len if ex.resp_len is not None else plen
    c_at = ex.req_start + ex.req_len if ex.req_len is not None else conn.c.max_end
    st = WsState(c_at, rel + hl)
    conn.pstate = st
    if plen > hl:  # frames in the same segment as the 101 head
        st.feed(conn, False, ex.resp_ts or 0.0, rel + hl, plen - hl, data[hl:])


def _aligned(stream: Any, rel: int, plen: int, data: bytes) -> tuple[bytes, int] | None:
    """``data`` from the stream's next offset on (a segment that overlaps bytes already
    fed is cut; one after a gap loses the thread until a segment starts a record)."""
    pos = stream.pos
    if rel == pos:
        return data, plen
    d = (rel - pos) & M32
    if d < 1 << 31:  # bytes missing in between (not captured)
        stream.pos = rel
        stream.lost = True
        return data, plen
    skip = (pos - rel) & M32
    if skip >= plen:
        return None
    return data[skip:], plen - skip


# ---------------------------------------------------------------------- FastCGI
class FcgiState:
    """Both directions' record streams and the exchanges by request id."""

    __slots__ = ("c", "s", "open")

    def __init__(self, c_at: int) -> None:
        _load()
        self.c = fastcgi.RecordStream(pos=c_at, next_header=c_at)
        self.s: fastcgi.RecordStream | None = None
        #: request id -> its exchange, until END_REQUEST
        self.open: dict[int, Exchange] = {}


def _fcgi(conn: Conn, up: bool, ts: float, rel: int, plen: int, data: bytes) -> None:
    st: FcgiState = conn.pstate
    if up:
        stream = st.c
    else:
        if st.s is None:
            st.s = fastcgi.RecordStream(pos=rel, next_header=rel)
        stream = st.s
    got = _aligned(stream, rel, plen, data)
    if got is None:
        return
    part, n = got
    found = stream.feed(part, n)
    records = stream.records
    stream.records = []  # (one segment's records at a time: no growth per connection)
    stream.boundaries = []
    for b in found:
        ev = b.event
        if ev == fastcgi.EV_REQUEST_BEGIN:
            _fcgi_begin(conn, st, ts, b.offset, b.request_id)
        elif ev == fastcgi.EV_REQUEST_END or ev == fastcgi.EV_REQUEST_ABORT:
            ex = st.open.get(b.request_id)
            if ex is not None:
                ex.req_len = ex.req_bytes = b.offset + fastcgi.HEADER_LEN - ex.req_start
                if conn._cur_req is ex:
                    conn._cur_req = None
        elif ev == fastcgi.EV_RESPONSE_BEGIN:
            ex = st.open.get(b.request_id)
            if ex is None:  # its BEGIN_REQUEST was not captured
                ex = st.open[b.request_id] = Exchange(None, "", "", 0)
                conn.exchanges.append(ex)
            ex.resp_ts = ts
            ex.status = _status(records, b.request_id)
            conn._cur_resp = ex
        elif ev == fastcgi.EV_RESPONSE_END:
            ex = st.open.pop(b.request_id, None)
            if ex is not None:
                if ex.resp_ts is None:
                    ex.resp_ts = ts
                    ex.status = 200
                ex.resp_end_ts = ts
                ex.last_resp_at = ts
                ex.resp_bytes += plen
    if up:
        cur = conn._cur_req
        if cur is not None and cur.req_len is None:
            cur.req_bytes += plen
        for r in records:
            if r.type == fastcgi.PARAMS and r.content:
                ex = st.open.get(r.request_id)
                if ex is not None and not ex.method:
                    ex.method, ex.target = _params(r.content)
        return
    for ex in st.open.values():  # the response(s) this segment continues
        if ex.resp_ts is not None:
            ex.last_resp_at = ts
            ex.resp_bytes += plen


def _fcgi_begin(conn: Conn, st: FcgiState, ts: float, at: int, rid: int) -> None:
    # a new request on a kept connection: a response still open there whose END_REQUEST
    # the capture did not keep ended before it
    for old in list(st.open.values()):
        if old.resp_ts is not None and old.resp_end_ts is None:
            old.resp_end_ts = old.last_resp_ts
            st.open.pop(next(k for k, v in st.open.items() if v is old))
    ex = Exchange(ts, "", "", at)
    st.open[rid] = ex
    conn.exchanges.append(ex)
    conn._cur_req = ex


def _nv_len(b: bytes, i: int) -> tuple[int, int]:
    if b[i] < 0x80:
        return b[i], i + 1
    if i + 4 > len(b):
        return -1, i
    return (b[i] & 0x7F) << 24 | b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3], i + 4


def _params(b: bytes) -> tuple[str, str]:
    """REQUEST_METHOD and REQUEST_URI from the name-value pairs of a PARAMS record (the
    part the capture kept)."""
    method = target = ""
    i = 0
    while i + 2 <= len(b):
        kl, i = _nv_len(b, i)
        if kl < 0 or i >= len(b):
            break
        vl, i = _nv_len(b, i)
        if vl < 0 or i + kl + vl > len(b):
            break
        k = b[i : i + kl]
        if k == b"REQUEST_METHOD":
            method = b[i + kl : i + kl + vl].decode("latin-1")
        elif k == b"REQUEST_URI":
            target = b[i + kl : i + kl + vl].decode("latin-1")
        i += kl + vl
    return method, target


def _status(records: list, rid: int) -> int:
    """The status of a FastCGI response: its ``Status:`` header, else 200."""
    for r in records:
        if r.type == fastcgi.STDOUT and r.request_id == rid:
            c = r.content
            k = c.find(b"Status: ")
            end = c.find(b"\r\n\r\n")
            if k >= 0 and (end < 0 or k < end) and c[k + 8 : k + 11].isdigit():
                return int(c[k + 8 : k + 11])
            break
    return 200


# ------------------------------------------------------------------------ uwsgi
def _uwsgi_client(conn: Conn, ts: float, rel: int, plen: int, data: bytes) -> None:
    _load()
    cur = conn._cur_req
    if cur is not None and (cur.req_len is None or cur.req_bytes < cur.req_len):
        r = uwsgi.parse_request(data) if cur.req_len is None else None
        if r is None:
            cur.req_bytes += plen
            return
    else:
        r = uwsgi.parse_request(data)
    if r is None:
        if conn.exchanges:
            conn.exchanges[-1].req_bytes += plen
        return
    v = r.variables
    target = v.get("REQUEST_URI", v.get("PATH_INFO", ""))
    ex = Exchange(ts, v.get("REQUEST_METHOD", ""), target, rel)
    ex.req_len = r.length
    ex.req_bytes = plen
    conn.exchanges.append(ex)
    conn._cur_req = ex


# -------------------------------------------------------------------- WebSocket
class WsState:
    """An upgraded connection's frames, per side (index 0 = client, 1 = server)."""

    __slots__ = ("streams", "messages", "liveness", "last_frame_ts", "last_message_ts",
                 "close_ts", "close_code", "late_opcode", "last_opcode")  # fmt: skip

    def __init__(self, c_at: int, s_at: int) -> None:
        _load()
        self.streams = (ws.FrameStream(pos=c_at, next_frame=c_at),
                        ws.FrameStream(pos=s_at, next_frame=s_at))  # fmt: skip
        #: data frames (text, binary, continuation) and ping/pong frames each side sent
        self.messages = [0, 0]
        self.liveness = [0, 0]
        #: when each side sent its last frame (any), its last data frame, its close frame
        self.last_frame_ts: list[float | None] = [None, None]
        self.last_message_ts: list[float | None] = [None, None]
        self.close_ts: list[float | None] = [None, None]
        self.close_code: list[int | None] = [None, None]
        #: the opcode of each side's first frame after the other side's FIN
        self.late_opcode: list[int | None] = [None, None]
        #: the opcode of each side's last frame
        self.last_opcode: list[int | None] = [None, None]

    def goodbye(self, client: bool) -> bool | None:
        """Was the client's (``client``) or the server's last frame a close, ping or
        pong (True: a goodbye or liveness) or a data frame (False: a message)? None: it
        sent no frame."""
        op = self.last_opcode[0 if client else 1]
        return None if op is None else op in (ws.CLOSE, ws.PING, ws.PONG)

    def feed(self, conn: Conn, up: bool, ts: float, rel: int, plen: int, data: bytes) -> None:
        k = 0 if up else 1
        stream = self.streams[k]
        got = _aligned(stream, rel, plen, data)
        if got is None:
            return
        frames = stream.feed(*got)
        stream.frames = []
        if not frames:
            return
        peer_fin = (conn.s if up else conn.c).fin_ts
        if peer_fin is not None and self.late_opcode[k] is None:
            self.late_opcode[k] = frames[0].opcode
        self.last_frame_ts[k] = ts
        self.last_opcode[k] = frames[-1].opcode
        for fr in frames:
            op = fr.opcode
            if op == ws.CLOSE:
                if self.close_ts[k] is None:
                    self.close_ts[k] = ts
                    self.close_code[k] = fr.close_code
            elif op == ws.PING or op == ws.PONG:
                self.liveness[k] += 1
            else:
                self.messages[k] += 1
                self.last_message_ts[k] = ts
