"""FastCGI record boundaries in one direction of a connection (nginx `fastcgi_pass`).

A FastCGI stream is a sequence of records, each an 8-byte header (version 1, type,
request id, content length, padding length, reserved) followed by its content and padding.
What marks a request and its response:

* client -> server: ``BEGIN_REQUEST`` (type 1) opens request *id*; ``PARAMS`` (4) and
  ``STDIN`` (5) records follow; an empty ``STDIN`` record ends the request (its body sent);
  ``ABORT_REQUEST`` (2) cancels it.
* server -> client: ``STDOUT`` (6) / ``STDERR`` (7) records carry the response; an
  ``END_REQUEST`` (3) record ends it (app status, protocol status). With
  ``fastcgi_keep_conn on`` the connection then carries the next ``BEGIN_REQUEST``.

:class:`RecordStream` is fed the segments of one direction in stream order, each with the
bytes a capture kept (a snaplen may cut them) and the segment's real length. It follows the
records' lengths across segments; a header that falls in bytes the capture did not keep
loses the thread (``lost``): nothing is reported until a segment starts with a
``BEGIN_REQUEST``, ``STDOUT`` or ``END_REQUEST`` header (nginx writes each request from its
first record, PHP-FPM each response from its first ``STDOUT`` and often its
``END_REQUEST`` alone), where the stream picks the thread up again (``resyncs``). No I/O,
no state outside the object.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER_LEN = 8
VERSION = 1

BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST = 1, 2, 3
PARAMS, STDIN, STDOUT, STDERR = 4, 5, 6, 7
TYPE_NAMES = {
    1: "BEGIN_REQUEST",
    2: "ABORT_REQUEST",
    3: "END_REQUEST",
    4: "PARAMS",
    5: "STDIN",
    6: "STDOUT",
    7: "STDERR",
    8: "DATA",
    9: "GET_VALUES",
    10: "GET_VALUES_RESULT",
    11: "UNKNOWN_TYPE",
}

#: boundary events: a request opened / fully sent / aborted; a response started / ended
EV_REQUEST_BEGIN = "request_begin"
EV_REQUEST_END = "request_end"
EV_REQUEST_ABORT = "request_abort"
EV_RESPONSE_BEGIN = "response_begin"
EV_RESPONSE_END = "response_end"


@dataclass(frozen=True)
class Record:
    offset: int  # stream offset of the record's header
    type: int
    request_id: int
    content_len: int
    padding_len: int
    content: bytes  # the content bytes the capture kept (may be shorter than content_len)

    @property
    def total_len(self) -> int:
        return HEADER_LEN + self.content_len + self.padding_len


@dataclass(frozen=True)
class Boundary:
    offset: int
    event: str
    request_id: int
    app_status: int | None = None  # END_REQUEST only
    protocol_status: int | None = None


def looks_like_fastcgi(head: bytes) -> bool:
    """Does a direction's first payload start with a FastCGI record header (version 1, a
    known type, reserved byte 0)?"""
    return len(head) >= HEADER_LEN and head[0] == VERSION and head[1] in TYPE_NAMES and head[7] == 0


def _resync_point(data: bytes) -> bool:
    """A segment that starts with a record a writer starts a segment with: nginx's
    ``BEGIN_REQUEST``, the backend's first ``STDOUT`` or its ``END_REQUEST`` (8 bytes of
    content)."""
    if not looks_like_fastcgi(data):
        return False
    if data[1] == END_REQUEST:
        return data[4] == 0 and data[5] == 8
    return data[1] in (BEGIN_REQUEST, STDOUT)


def parse_header(b: bytes) -> tuple[int, int, int, int] | None:
    """(type, request id, content length, padding length) of an 8-byte header, or None when
    it is not a FastCGI version-1 header."""
    if len(b) < HEADER_LEN or b[0] != VERSION or b[1] not in TYPE_NAMES:
        return None
    _v, typ, rid, clen, plen, _r = struct.unpack("!BBHHBB", b[:HEADER_LEN])
    return typ, rid, clen, plen


@dataclass
class RecordStream:
    """One direction's records, fed segment by segment (in stream order, no overlap)."""

    pos: int = 0  # stream offset fed so far
    next_header: int = 0  # stream offset of the next record header
    lost: bool = False  # a header fell in bytes the capture did not keep, or was not FastCGI
    resyncs: int = 0  # times a segment starting with a record header picked the thread up
    records: list[Record] = field(default_factory=list)
    boundaries: list[Boundary] = field(default_factory=list)
    _open: set[int] = field(default_factory=set)  # request ids whose response began
    _pending: bytes = b""  # a header split across segments (kept bytes only)

    def feed(self, data: bytes, seg_len: int | None = None) -> list[Boundary]:
        """Feed one segment: ``data`` = the bytes the capture kept, ``seg_len`` = the
        segment's real payload length (default: ``len(data)``). Returns the boundaries
        this segment completed."""
        seg_len = len(data) if seg_len is None else seg_len
        start, end = self.pos, self.pos + seg_len
        kept_end = start + len(data)
        self.pos = end
        found: list[Boundary] = []
        if self.lost and _resync_point(data):
            self.lost, self._pending, self.next_header = False, b"", start
            self.resyncs += 1
        while not self.lost and self.next_header < end:
            h = self.next_header
            if self._pending:
                need = HEADER_LEN - len(self._pending)
                if kept_end - start < need:
                    self.lost = True
                    break
                raw = self._pending + data[:need]
                self._pending = b""
                hdr_at = h
                body_from = start + need
            elif h + HEADER_LEN > end:
                if h < kept_end and kept_end == end:  # header split across segments
                    self._pending = data[h - start :]
                    break
                self.lost = True
                break
            elif h + HEADER_LEN > kept_end:
                self.lost = True
                break
            else:
                raw = data[h - start : h - start + HEADER_LEN]
                hdr_at = h
                body_from = h + HEADER_LEN
            parsed = parse_header(raw)
            if parsed is None:
                self.lost = True
                break
            typ, rid, clen, plen = parsed
            lo, hi = body_from - start, min(body_from + clen, kept_end) - start
            content = data[lo:hi] if hi > lo else b""
            rec = Record(hdr_at, typ, rid, clen, plen, content)
            self.records.append(rec)
            self.next_header = hdr_at + rec.total_len
            b = self._boundary(rec)
            if b is not None:
                found.append(b)
        self.boundaries.extend(found)
        return found

    def _boundary(self, rec: Record) -> Boundary | None:
        t, rid = rec.type, rec.request_id
        if t == BEGIN_REQUEST:
            return Boundary(rec.offset, EV_REQUEST_BEGIN, rid)
        if t == STDIN and rec.content_len == 0:
            return Boundary(rec.offset, EV_REQUEST_END, rid)
        if t == ABORT_REQUEST:
            return Boundary(rec.offset, EV_REQUEST_ABORT, rid)
        if t in (STDOUT, STDERR) and rid not in self._open:
            self._open.add(rid)
            return Boundary(rec.offset, EV_RESPONSE_BEGIN, rid)
        if t == END_REQUEST:
            self._open.discard(rid)
            app = proto = None
            if len(rec.content) >= 5:
                app, proto = struct.unpack("!IB", rec.content[:5])
            return Boundary(rec.offset, EV_RESPONSE_END, rid, app, proto)
        return None
