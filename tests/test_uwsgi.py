"""The uwsgi request header (pcapreset.track.uwsgi): synthetic packets, and the real
requests nginx sent with uwsgi_pass in sample_pcaps/uwsgi_harakiri (read here with dpkt)."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import dpkt
import pytest

from pcapreset.track import uwsgi

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"


def packet(env: dict[str, str], body: bytes = b"") -> bytes:
    v = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(x)) + x.encode()
        for k, x in env.items()
    )
    return struct.pack("<BHB", 0, len(v), 0) + v + body


def test_synthetic_request_length_is_header_vars_and_body() -> None:
    p = packet({"QUERY_STRING": "", "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5"}, b"hello")
    r = uwsgi.parse_request(p)
    assert r is not None and r.complete_vars
    assert r.variables["REQUEST_METHOD"] == "POST"
    assert r.length == len(p)


def test_cut_variables_still_give_what_was_kept() -> None:
    p = packet({"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "", "SERVER_NAME": "x" * 100})
    r = uwsgi.parse_request(p[:50])  # CONTENT_LENGTH kept, SERVER_NAME cut
    assert r is not None and not r.complete_vars
    assert r.content_length == 0 and r.length == len(p)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\x00\x00", b"HTTP/1.1 200 OK\r\n", b"\x00\x05\x00"],
)
def test_other_payloads_are_not_uwsgi(data: bytes) -> None:
    assert not uwsgi.looks_like_uwsgi(data)


def test_real_uwsgi_pass_requests() -> None:
    """uwsgi_harakiri: each connection's first client segment is a uwsgi request whose
    length (header + variables + CONTENT_LENGTH) is exactly what nginx sent on it; the
    backend's answers are plain HTTP, not uwsgi."""
    path = SAMPLES / "uwsgi_harakiri" / "nginx.pcap"
    if not path.exists():
        pytest.skip("not recorded")
    first: dict[int, bytes] = {}
    sent: dict[int, int] = defaultdict(int)
    seen: set[tuple[int, int]] = set()
    answers = []
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = ip.data
            real = ip.len - ip.hl * 4 - tcp.off * 4
            if real <= 0:
                continue
            if tcp.dport == 3000 and (tcp.sport, tcp.seq) not in seen:
                seen.add((tcp.sport, tcp.seq))
                first.setdefault(tcp.sport, bytes(tcp.data))
                sent[tcp.sport] += real
            elif tcp.sport == 3000:
                answers.append(bytes(tcp.data))
    assert len(first) == 5
    methods = []
    for port, data in first.items():
        r = uwsgi.parse_request(data)
        assert r is not None and r.modifier1 == 0, port
        assert r.length == sent[port], port
        methods.append(r.variables["REQUEST_METHOD"])
    assert sorted(methods) == ["GET", "GET", "GET", "GET", "POST"]
    assert answers and all(a.startswith(b"HTTP/1.1 ") for a in answers)
    assert not any(uwsgi.looks_like_uwsgi(a) for a in answers)


def test_cut_before_content_length_leaves_the_length_unknown() -> None:
    p = packet({"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "7", "SERVER_NAME": "x"}, b"x" * 7)
    r = uwsgi.parse_request(p[:30])
    assert r is not None and r.content_length is None and r.length is None


def test_a_non_ascii_digit_is_no_content_length() -> None:
    """'²' (latin-1 0xb2) is a digit to str.isdigit but not to int(): no length, no error."""
    body = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((b"CONTENT_LENGTH", b"\xb2"), (b"REQUEST_METHOD", b"GET"))
    )
    r = uwsgi.parse_request(struct.pack("<BHB", 0, len(body), 0) + body)
    assert r is not None and r.content_length is None and r.length is None
