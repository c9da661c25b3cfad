# cython: boundscheck=False, wraparound=False
"""httphead: HTTP/1.x message heads, parsed ahead of the flow tracker.

:func:`preparse` finds the packets whose captured payload starts a request or
status line and reads what the tracker needs from the head: the request line,
and for both kinds the header block's length, chunked transfer coding and
Content-Length, plus the Server / Keep-Alive / Connection values of
responses. It depends only on payload bytes, so another process can run it
(pipeline.py's reader child does).

:func:`parse_headers` is the definition (a regular expression); compiled
(setup.py, httphead.pxd), :func:`preparse` scans the packet bytes in place
with the same rules and gives the same results (tests/test_httphead.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

if TYPE_CHECKING:
    from ..capture.tcp import TcpBatch

#: True when this module runs compiled (setup.py builds it with Cython)
COMPILED: bool = cython.compiled
HTTP_METHODS = (
    b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ",
    b"CONNECT ", b"TRACE ",
)  # fmt: skip
#: bytes of a head that are read (a head longer than this counts as cut)
HTTP_HEAD_MAX = 2048
_HDR_RE = re.compile(
    rb"\r\n(content-length|transfer-encoding|server|keep-alive|connection)[ \t]*:[ \t]*([^\r\n]*)",
    re.I,
)
#: first bytes of HTTP methods and of "HTTP/1."
_STARTS = frozenset(m[0] for m in (*HTTP_METHODS, b"HTTP/1."))
#: the same as a lookup table by byte value (index 256: no payload captured)
_START_BYTE = np.zeros(257, dtype=bool)
_START_BYTE[list(_STARTS)] = True


def parse_headers(
    head: bytes, extra: dict[str, str] | None = None
) -> tuple[int | None, bool, int | None]:
    """(header length incl. blank line, chunked, content-length) from a head.

    With ``extra``, also stores the Server, Keep-Alive and Connection headers
    (lower-case names) found in the captured part.
    """
    end = head.find(b"\r\n\r\n")
    hl = end + 4 if end >= 0 else None
    clen = None
    chunked = False
    for k, v in _HDR_RE.findall(head, 0, end + 2 if end >= 0 else len(head)):
        clen, chunked = _header(k.lower(), v, clen, chunked, extra)
    if hl is None:
        return None, chunked, None
    return hl, chunked, clen


def _header(
    k: bytes, v: bytes, clen: int | None, chunked: bool, extra: dict[str, str] | None
) -> tuple[int | None, bool]:
    """One matched header (``k`` lower case): the new (clen, chunked)."""
    if k == b"content-length":
        try:
            clen = int(v.strip())
        except ValueError:
            clen = None
    elif k == b"transfer-encoding":
        chunked = b"chunked" in v.lower()
    elif extra is not None:
        extra[k.decode()] = v.strip().decode("latin-1")[:80]
    return clen, chunked


def request_line(head: bytes) -> tuple[str, str]:
    eol = head.find(b"\r\n")
    parts = (head[:eol] if eol >= 0 else head).split(b" ", 2)
    method = parts[0].decode("latin-1")
    return method, parts[1].decode("latin-1")[:200] if len(parts) > 1 else ""


def first_payload_bytes(b: TcpBatch) -> np.ndarray:
    """Each packet's first captured payload byte; 256 where none was captured."""
    out = np.full(len(b), 256, dtype=np.int64)
    has = b.pcap > 0
    for k, buf in enumerate(b.bufs):
        m = has if len(b.bufs) == 1 else has & (b.bufidx == k)
        if m.any():
            out[m] = np.frombuffer(buf, dtype=np.uint8)[b.poff[m]]
    return out


def preparse(b: TcpBatch) -> dict:
    """Parse the HTTP message heads in a batch ahead of the flow tracker.

    For every packet whose captured payload starts an HTTP/1.x request or
    status line (exactly the tests FlowTracker applies), index ->
    ``("req", method, target, (hl, chunked, clen))`` or
    ``("resp", head, (hl, chunked, clen), headers)``; any other packet is
    absent, which tells the tracker it starts no message.
    """
    out: dict = {}
    if not len(b):
        return out
    bufs = b.bufs
    cand = np.flatnonzero(_START_BYTE[first_payload_bytes(b)])
    if cython.compiled:
        # each buffer's candidates through one typed view of it (a single
        # file's batches have one buffer)
        for k in range(len(bufs)):
            sel = cand if len(bufs) == 1 else cand[b.bufidx[cand] == k]
            _entries(bufs[k], out, sel.tolist(), b.poff[sel].tolist(), b.pcap[sel].tolist())
        return out
    for i, poff, pcap, bi in zip(
        cand.tolist(), b.poff[cand].tolist(), b.pcap[cand].tolist(), b.bufidx[cand].tolist(),
        strict=True,
    ):  # fmt: skip
        e = _entry(bufs[bi], poff, pcap if pcap < HTTP_HEAD_MAX else HTTP_HEAD_MAX)
        if e is not None:
            out[i] = e
    return out


def _entries(buf, out: dict, idx: list, poffs: list, pcaps: list) -> None:
    """Compiled only: the :func:`_entry` of each candidate packet ``idx[j]``
    in ``buf`` into ``out``, reading the packet bytes in place through a C
    pointer (bytes directly, any other buffer through a typed view, acquired
    once: a view per packet cost ~0.5 us, for 118k message starts per 1M
    packets)."""
    if type(buf) is bytes:
        bb = buf
        v = bb
        size = len(bb)
    else:
        mv = buf
        size = mv.shape[0]
        if size == 0:
            return
        v = cython.address(mv[0])
    for j in range(len(idx)):
        n = pcaps[j]
        e = _entry_at(v, size, poffs[j], n if n < HTTP_HEAD_MAX else HTTP_HEAD_MAX)
        if e is not None:
            out[idx[j]] = e


def _entry(buf, p0: int, n: int) -> tuple | None:
    """The :func:`preparse` entry of the head at ``buf[p0:p0 + n]``, or None
    (the definition, run by the plain source; compiled, :func:`_entries`
    gives the same through :func:`_entry_at`)."""
    head = bytes(buf[p0 : p0 + n])
    if head.startswith(HTTP_METHODS):
        method, target = request_line(head)
        return ("req", method, target, parse_headers(head))
    if head.startswith(b"HTTP/1.") and len(head) >= 12:
        extra: dict[str, str] = {}
        parsed = parse_headers(head, extra)
        hl = parsed[0]
        if hl is not None and len(head) > hl + 5 and head[9:10] != b"1":
            # the tracker reads the status, the header block and the last 5
            # bytes (chunked end); only interim 1xx heads need what follows
            head = head[:hl] + head[-5:]
        return ("resp", head, parsed, extra)
    return None


def _entry_at(v, size: int, p0: int, n: int) -> tuple | None:
    """:func:`_entry` of the head at ``v[p0:p0 + n]`` in a buffer of ``size``
    bytes (compiled only; without index checks, see the first line: every
    read is inside v[p0:p0 + n])."""
    if p0 < 0 or n <= 0 or p0 + n > size:
        return None
    if _is_request(v, p0, n):
        return ("req", *_request_line_at(v, p0, n), _scan(v, p0, n, None))
    if n >= 12 and _starts(v, p0, n, b"HTTP/1."):
        extra: dict[str, str] = {}
        parsed = _scan(v, p0, n, extra)
        if parsed[0] is not None:
            hl = parsed[0]
            if n > hl + 5 and v[p0 + 9] != 49:  # not "1xx"
                return ("resp", v[p0 : p0 + hl] + v[p0 + n - 5 : p0 + n],
                        parsed, extra)  # fmt: skip
        return ("resp", v[p0 : p0 + n], parsed, extra)
    return None


def _starts(v, p0: int, n: int, prefix: bytes) -> bool:
    k = len(prefix)
    if n < k:
        return False
    for j in range(k):
        if v[p0 + j] != prefix[j]:
            return False
    return True


def _is_request(v, p0: int, n: int) -> bool:
    for m in HTTP_METHODS:
        if _starts(v, p0, n, m):
            return True
    return False


def _request_line_at(v, p0: int, n: int) -> tuple[str, str]:
    """:func:`request_line` of ``v[p0:p0 + n]`` (``v``: a C pointer to the bytes)."""
    eol = n
    for j in range(n - 1):
        if v[p0 + j] == 13 and v[p0 + j + 1] == 10:
            eol = j
            break
    s1 = -1
    for j in range(eol):
        if v[p0 + j] == 32:
            s1 = j
            break
    if s1 < 0:
        return v[p0 : p0 + eol].decode("latin-1"), ""
    s2 = eol
    for j in range(s1 + 1, eol):
        if v[p0 + j] == 32:
            s2 = j
            break
    if s2 - (s1 + 1) > 200:
        s2 = s1 + 1 + 200
    method = v[p0 : p0 + s1].decode("latin-1")
    return method, v[p0 + s1 + 1 : p0 + s2].decode("latin-1")


def _name_at(v, at: int, limit: int, name: bytes) -> bool:
    """``v[at:]`` starts with ``name`` (lower case) without regard to case,
    within ``limit``."""
    ln = len(name)
    if at + ln > limit:
        return False
    for j in range(ln):
        ch = v[at + j]
        if 65 <= ch <= 90:
            ch += 32
        if ch != name[j]:
            return False
    return True


def _scan(v, p0: int, n: int, extra: dict | None) -> tuple[int | None, bool, int | None]:
    """:func:`parse_headers` of ``v[p0:p0 + n]`` (``v``: a C pointer): the
    same matches as _HDR_RE (a header line starts after CRLF; names without
    case; spaces or tabs around the colon; the value runs to CR, LF or the
    end of the search)."""
    end = -1
    for j in range(n - 3):
        if v[p0 + j] == 13 and v[p0 + j + 1] == 10 and v[p0 + j + 2] == 13 and v[p0 + j + 3] == 10:
            end = j
            break
    limit = p0 + (end + 2 if end >= 0 else n)
    clen = None
    chunked = False
    q = p0
    while q + 1 < limit:
        if v[q] != 13 or v[q + 1] != 10:
            q += 1
            continue
        r = q + 2
        name = None
        if r < limit:
            ch = v[r] | 32
            if ch == 99:  # c
                if _name_at(v, r, limit, b"content-length"):
                    name = b"content-length"
                elif _name_at(v, r, limit, b"connection"):
                    name = b"connection"
            elif ch == 116 and _name_at(v, r, limit, b"transfer-encoding"):  # t
                name = b"transfer-encoding"
            elif ch == 115 and _name_at(v, r, limit, b"server"):  # s
                name = b"server"
            elif ch == 107 and _name_at(v, r, limit, b"keep-alive"):  # k
                name = b"keep-alive"
        if name is None:
            q += 1
            continue
        r += len(name)
        while r < limit and (v[r] == 32 or v[r] == 9):
            r += 1
        if r >= limit or v[r] != 58:  # ":"
            q += 1
            continue
        r += 1
        while r < limit and (v[r] == 32 or v[r] == 9):
            r += 1
        s = r
        while r < limit and v[r] != 13 and v[r] != 10:
            r += 1
        clen, chunked = _header(name, v[s:r], clen, chunked, extra)
        q = r
    if end < 0:
        return None, chunked, None
    return end + 4, chunked, clen
