"""The uwsgi packet header of a request nginx sends with `uwsgi_pass`.

A request is one uwsgi packet: a 4-byte header (modifier1, datasize as little-endian
16 bits, modifier2), ``datasize`` bytes of variables (each a little-endian 16-bit key
length, the key, a 16-bit value length, the value: the CGI environment), then the request
body, ``CONTENT_LENGTH`` bytes. The response is a plain HTTP response. So a request's
boundary is known from its first segment: ``4 + datasize + CONTENT_LENGTH`` bytes, when the
capture kept the variables up to ``CONTENT_LENGTH`` (nginx's uwsgi_params put it early).
No I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_LEN = 4
#: modifier1 values of the request packets nginx sends: 0 = WSGI (Python), 5 = PSGI (Perl),
#: 7 = Rack (Ruby), 9 = CGI, 14 = PHP
REQUEST_MODIFIERS = frozenset({0, 5, 7, 9, 14})


@dataclass(frozen=True)
class UwsgiRequest:
    modifier1: int
    datasize: int
    modifier2: int
    variables: dict[str, str]  # the variables the capture kept, in order
    complete_vars: bool  # every variable was in the kept bytes
    content_length: int | None  # CONTENT_LENGTH, when kept ("" counts as 0)

    @property
    def length(self) -> int | None:
        """Bytes of the whole request (header, variables, body), when known."""
        if self.content_length is None:
            return None
        return HEADER_LEN + self.datasize + self.content_length


def _vars(b: bytes) -> tuple[dict[str, str], bool]:
    out: dict[str, str] = {}
    i = 0
    while i + 2 <= len(b):
        (klen,) = struct.unpack_from("<H", b, i)
        if i + 2 + klen + 2 > len(b):
            return out, False
        key = b[i + 2 : i + 2 + klen]
        (vlen,) = struct.unpack_from("<H", b, i + 2 + klen)
        v0 = i + 4 + klen
        if v0 + vlen > len(b):
            return out, False
        out[key.decode("latin-1")] = b[v0 : v0 + vlen].decode("latin-1")
        i = v0 + vlen
    return out, i == len(b)


def parse_request(data: bytes) -> UwsgiRequest | None:
    """The uwsgi request starting a segment (``data`` = the bytes the capture kept; the
    variables may go on in bytes it cut or in later segments), or None when it does not
    start with one: a known modifier1, a first variable with an upper-case key."""
    if len(data) < HEADER_LEN + 4 or data[0] not in REQUEST_MODIFIERS:
        return None
    mod1, size, mod2 = struct.unpack_from("<BHB", data, 0)
    (klen,) = struct.unpack_from("<H", data, HEADER_LEN)
    key = data[HEADER_LEN + 2 : HEADER_LEN + 2 + klen]
    if size < 4 or klen == 0 or klen > 64 or not key or len(key) < min(klen, len(data) - 6):
        return None
    if not all(c == 0x5F or 0x41 <= c <= 0x5A or 0x30 <= c <= 0x39 for c in key):
        return None
    kept = data[HEADER_LEN : HEADER_LEN + size]
    variables, whole = _vars(kept)
    whole = whole and len(kept) == size
    cl: int | None = None
    if "CONTENT_LENGTH" in variables:
        v = variables["CONTENT_LENGTH"].strip()
        cl = int(v) if v.isascii() and v.isdigit() else 0 if v == "" else None
    elif whole:
        cl = 0
    return UwsgiRequest(mod1, size, mod2, variables, whole, cl)


def looks_like_uwsgi(data: bytes) -> bool:
    return parse_request(data) is not None
