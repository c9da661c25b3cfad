"""WebSocket frames (pcapreset.track.websocket): synthetic frames split every way, and the
frames of sample_pcaps/websocket_* (read here with dpkt) against tshark's count of them
(`tshark -d tcp.port==3000,http -Y websocket -T fields -e websocket.opcode`)."""

from __future__ import annotations

import os
import struct
from collections import Counter, defaultdict
from pathlib import Path

import dpkt
import pytest

from pcapreset.track import websocket as ws

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"


def frame(op: int, payload: bytes, mask: bool) -> bytes:
    n = len(payload)
    b1 = 0x80 if mask else 0
    head = (
        bytes([0x80 | op, b1 | n])
        if n < 126
        else bytes([0x80 | op, b1 | 126]) + struct.pack("!H", n)
    )
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(x ^ key[i % 4] for i, x in enumerate(payload))


def test_frames_and_close_code() -> None:
    data = (
        frame(ws.TEXT, b"hi", True)
        + frame(ws.PING, b"", False)
        + frame(ws.CLOSE, struct.pack("!H", 1001) + b"bye", True)
    )
    st = ws.FrameStream()
    got = st.feed(data)
    assert [f.name for f in got] == ["text", "ping", "close"]
    assert got[-1].close_code == 1001 and got[0].masked and not got[1].masked


@pytest.mark.parametrize("cut", range(1, 40))
def test_split_anywhere(cut: int) -> None:
    data = frame(ws.TEXT, b"x" * 200, True) + frame(ws.CLOSE, struct.pack("!H", 1000), False)
    st = ws.FrameStream()
    got = st.feed(data[:cut]) + st.feed(data[cut:])
    assert [(f.opcode, f.payload_len) for f in got] == [(1, 200), (8, 2)]
    assert got[1].close_code == 1000 and not st.lost


def test_cut_capture_loses_the_thread() -> None:
    data = frame(ws.BINARY, b"y" * 300, False) + frame(ws.TEXT, b"z", False)
    st = ws.FrameStream()
    assert [f.opcode for f in st.feed(data[:100], len(data))] == [2]
    assert st.lost


def _frames(path: Path) -> Counter[tuple[str, str]]:
    """(direction, frame name) counts over every upgraded connection of a capture: frames
    start after the client's request head (c2s) and after the 101 response head (s2c)."""
    segs: dict[tuple[int, str], list[tuple[bytes, int]]] = defaultdict(list)
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = ip.data
            real = ip.len - ip.hl * 4 - tcp.off * 4
            if real > 0:
                key = (tcp.sport, "c2s") if tcp.dport == 3000 else (tcp.dport, "s2c")
                segs[key].append((bytes(tcp.data), real))
    out: Counter[tuple[str, str]] = Counter()
    for (_port, d), items in segs.items():
        st, head = ws.FrameStream(), True
        for data, real in items:
            if head:  # the HTTP head (request or 101) ends the segment's first part
                i = data.find(b"\r\n\r\n")
                assert i >= 0
                data, real, head = data[i + 4 :], real - i - 4, False
                if real <= 0:
                    continue
            st.feed(data, real)
        assert not st.lost
        out.update((d, f.name) for f in st.frames)
    return out


@pytest.mark.parametrize(
    ("scenario", "tshark"),
    [
        ("websocket_idle_timeout", {"text": 18, "close": 4, "ping": 6}),
        ("websocket_backend_restart", {"text": 126, "close": 6}),
    ],
)
def test_real_frames_match_tshark(scenario: str, tshark: dict[str, int]) -> None:
    path = SAMPLES / scenario / "nginx.pcap"
    if not path.exists():
        pytest.skip("not recorded")
    got = _frames(path)
    by_name: Counter[str] = Counter()
    for (_d, n), c in got.items():
        by_name[n] += c
    assert dict(by_name) == tshark
    # the backend sends pings, the clients never do; close frames go both ways
    assert got[("s2c", "ping")] == tshark.get("ping", 0)
    assert got[("c2s", "close")] == got[("s2c", "close")] == tshark["close"] // 2
