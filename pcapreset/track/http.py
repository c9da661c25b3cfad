"""http: HTTP/1.x exchanges from a connection's payload (requests, responses, their ends).

The tracker hands each data packet of a connection here (a response of
known length it follows itself). Message heads come parsed ahead
(:func:`pcapreset.track.httphead.preparse`).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]


from .conn import PROTO_WEBSOCKET, Exchange
from .httphead import HTTP_HEAD_MAX
from .httphead import parse_headers as _parse_headers

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
#: the key of ``Conn.resp_headers`` that marks a status line without a reason phrase
#: (not a header name: it cannot come from the wire)
NO_REASON = ":no-reason-phrase"


def http_client(conn, ts, rel, plen, poff, pcap, buf, pre) -> None:  # type: ignore[no-untyped-def]
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


def http_server(conn, ts, plen, poff, pcap, buf, pre) -> None:  # type: ignore[no-untyped-def]
    """Server payload outside a known-length response: status line or body.

    ``pre`` as in :func:`http_client`.
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
            ex.last_resp_at = ts
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
    if len(conn.exchanges) <= 1 and len(head) > 13 and (head[12] == 13 or head[13] == 13):
        # the connection's first status line is "HTTP/1.1 200 " + CRLF: no reason
        # phrase (Tomcat's Coyote connector)
        conn.resp_headers[NO_REASON] = ""
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
    target.last_resp_at = ts
    if parsed is not None:
        hl, chunked, clen = parsed[2]
        conn.resp_headers.update(parsed[3])
    else:
        hl, chunked, clen = _parse_headers(head, conn.resp_headers)
    if status == 101 and hl is not None:
        # Switching Protocols: the exchange ends with this head; the connection now
        # carries the upgraded protocol (track.dispatch follows a WebSocket's frames)
        target.resp_len = hl
        target.resp_end_ts = ts
        conn._cur_resp = target
        if conn._cur_req is target:
            conn._cur_req = None
        if b"websocket" in head[:hl].lower():  # Upgrade: websocket (not h2c, not TLS)
            conn.proto = PROTO_WEBSOCKET
        return
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
