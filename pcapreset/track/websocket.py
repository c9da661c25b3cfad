"""WebSocket frames (RFC 6455) in one direction of an upgraded connection: what follows
nginx's request with `Upgrade: websocket` and the backend's `101 Switching Protocols`.

Each frame: a byte with FIN and the opcode (0 continuation, 1 text, 2 binary, 8 close,
9 ping, 10 pong), a byte with the MASK bit and a 7-bit length (126: a 16-bit length follows,
127: a 64-bit one), the 4-byte masking key when masked (frames from the client side always
are), then the payload. Close frames carry a status code (masked by the client: unmasked
here). Ping/pong are the liveness of a quiet connection: a WebSocket idle for longer than
nginx's `proxy_read_timeout` with no frame from the backend is closed by nginx.

:class:`FrameStream` is fed the segments of one direction in stream order, each with the
bytes the capture kept and its real length; a frame header in bytes the capture did not
keep loses the thread (``lost``). No I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
OPCODE_NAMES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


@dataclass(frozen=True)
class Frame:
    offset: int  # stream offset of the frame's first byte
    fin: bool
    opcode: int
    masked: bool
    payload_len: int
    close_code: int | None = None  # close frames whose first two payload bytes were kept

    @property
    def name(self) -> str:
        return OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode}")


def _header(b: bytes) -> tuple[int, int, bool, int, int] | None:
    """(first byte, opcode, masked, payload length, header length incl. mask), or None when
    ``b`` is too short to hold the header or it is not a frame header (reserved bits or an
    unknown opcode)."""
    if len(b) < 2:
        return None
    b0, b1 = b[0], b[1]
    if b0 & 0x70 or (b0 & 0x0F) not in OPCODE_NAMES:
        return None
    n, hl = b1 & 0x7F, 2
    if n == 126:
        if len(b) < 4:
            return None
        (n,) = struct.unpack_from("!H", b, 2)
        hl = 4
    elif n == 127:
        if len(b) < 10:
            return None
        (n,) = struct.unpack_from("!Q", b, 2)
        hl = 10
    masked = bool(b1 & 0x80)
    return b0, b0 & 0x0F, masked, n, hl + (4 if masked else 0)


@dataclass
class FrameStream:
    pos: int = 0
    next_frame: int = 0
    lost: bool = False
    frames: list[Frame] = field(default_factory=list)
    _pending: bytes = b""  # the kept start of a frame whose header spans segments

    def feed(self, data: bytes, seg_len: int | None = None) -> list[Frame]:
        """Feed one segment (``data`` kept, ``seg_len`` real); returns the frames whose
        header it completed."""
        seg_len = len(data) if seg_len is None else seg_len
        start, end = self.pos, self.pos + seg_len
        kept_end = start + len(data)
        self.pos = end
        found: list[Frame] = []
        while not self.lost and self.next_frame < end:
            at = self.next_frame
            if self._pending:
                buf = self._pending + data
                base = at
            elif at >= kept_end:
                self.lost = True
                break
            else:
                buf = data[at - start :]
                base = at
            h = _header(buf[:14])
            if h is None:
                if len(buf) >= 14 or kept_end < end:
                    self.lost = True
                elif _header(buf[:2] + b"\0" * 12) is None:
                    self.lost = True
                else:  # header continues in the next segment
                    self._pending = buf
                break
            self._pending = b""
            b0, op, masked, n, hl = h
            code = None
            if op == CLOSE and n >= 2 and len(buf) >= hl + 2:
                p = bytearray(buf[hl : hl + 2])
                if masked:
                    key = buf[hl - 4 : hl]
                    p = bytearray(x ^ key[i] for i, x in enumerate(p))
                (code,) = struct.unpack("!H", bytes(p))
            fr = Frame(base, bool(b0 & 0x80), op, masked, n, code)
            found.append(fr)
            self.next_frame = base + hl + n
        self.frames.extend(found)
        return found
