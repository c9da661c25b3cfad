"""FastCGI record boundaries (pcapreset.track.fastcgi): synthetic records split every way a
TCP stream splits them, and the real records nginx and PHP-FPM exchanged in
sample_pcaps/php_fpm_terminate and php_fpm_max_children (read here with dpkt)."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import dpkt
import pytest

from pcapreset.track import fastcgi as fcgi

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"


def rec(typ: int, rid: int, content: bytes = b"", pad: int = 0) -> bytes:
    return struct.pack("!BBHHBB", 1, typ, rid, len(content), pad, 0) + content + b"\0" * pad


def request(rid: int = 1, params: bytes = b"\x0b\x02SERVER_PORT80") -> bytes:
    begin = rec(fcgi.BEGIN_REQUEST, rid, struct.pack("!HB5x", 1, 1))
    return (
        begin + rec(fcgi.PARAMS, rid, params, pad=3) + rec(fcgi.PARAMS, rid) + rec(fcgi.STDIN, rid)
    )


def response(rid: int = 1, body: bytes = b"Status: 200\r\n\r\nok\n") -> bytes:
    end = rec(fcgi.END_REQUEST, rid, struct.pack("!IB3x", 0, 0))
    return rec(fcgi.STDOUT, rid, body, pad=5) + rec(fcgi.STDOUT, rid) + end


def events(bs: list[fcgi.Boundary]) -> list[tuple[str, int]]:
    return [(b.event, b.request_id) for b in bs]


def test_whole_request_and_response() -> None:
    c, s = fcgi.RecordStream(), fcgi.RecordStream()
    assert events(c.feed(request())) == [("request_begin", 1), ("request_end", 1)]
    got = s.feed(response())
    assert events(got) == [("response_begin", 1), ("response_end", 1)]
    assert (got[-1].app_status, got[-1].protocol_status) == (0, 0)
    assert [r.type for r in s.records] == [fcgi.STDOUT, fcgi.STDOUT, fcgi.END_REQUEST]


@pytest.mark.parametrize("cut", range(1, 60))
def test_records_split_at_every_byte_give_the_same_boundaries(cut: int) -> None:
    whole = request(7) + request(8)
    st = fcgi.RecordStream()
    got = st.feed(whole[:cut]) + st.feed(whole[cut:])
    assert events(got) == [
        ("request_begin", 7),
        ("request_end", 7),
        ("request_begin", 8),
        ("request_end", 8),
    ]
    assert not st.lost


def test_snaplen_cut_loses_the_thread_then_resyncs_on_the_next_request() -> None:
    big = request(1, params=b"\x0b\xc8" + b"X" * 11 + b"v" * 200)
    st = fcgi.RecordStream()
    # the capture kept 40 bytes of the segment: the second PARAMS header is not in them
    assert events(st.feed(big[:40], len(big))) == [("request_begin", 1)]
    assert st.lost
    assert events(st.feed(request(2))) == [("request_begin", 2), ("request_end", 2)]
    assert st.resyncs == 1 and not st.lost


def test_response_cut_by_the_snaplen_resyncs_on_its_end_request() -> None:
    """PHP-FPM often sends END_REQUEST in a segment of its own: a STDOUT record cut by
    the snaplen loses the thread, the END_REQUEST segment picks it up again."""
    seg = rec(fcgi.STDOUT, 1, b"Status: 200\r\n\r\n" + b"x" * 300) + rec(fcgi.STDOUT, 1)
    end = rec(fcgi.END_REQUEST, 1, struct.pack("!IB3x", 0, 0))
    st = fcgi.RecordStream()
    # the capture kept 40 bytes of the segment: the empty STDOUT's header is not in them
    assert events(st.feed(seg[:40], len(seg))) == [("response_begin", 1)]
    assert st.lost
    assert events(st.feed(end)) == [("response_end", 1)]
    assert st.resyncs == 1 and not st.lost
    # a segment starting with any other record (STDERR) is no resync point
    st2 = fcgi.RecordStream(lost=True)
    assert st2.feed(rec(fcgi.STDERR, 1, b"warn")) == [] and st2.lost


def test_not_fastcgi_is_lost_not_guessed() -> None:
    st = fcgi.RecordStream()
    assert st.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    assert st.lost and st.records == []
    assert not fcgi.looks_like_fastcgi(b"GET / HTTP/1.1\r\n")
    assert fcgi.looks_like_fastcgi(request())


def _streams(path: Path) -> dict[tuple[int, str], list[tuple[bytes, int]]]:
    """(nginx's port, direction) -> [(kept payload, real payload length)] in capture order,
    retransmitted segments (a sequence number seen before) left out; the lab's router does
    not reorder."""
    out: dict[tuple[int, str], list[tuple[bytes, int]]] = defaultdict(list)
    seen: set[tuple[int, int, int]] = set()
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            real = ip.len - ip.hl * 4 - tcp.off * 4
            if real <= 0 or (tcp.sport, tcp.dport, tcp.seq) in seen:
                continue
            seen.add((tcp.sport, tcp.dport, tcp.seq))
            if tcp.dport == 3000:
                out[(tcp.sport, "c2s")].append((bytes(tcp.data), real))
            else:
                out[(tcp.dport, "s2c")].append((bytes(tcp.data), real))
    return out


def _boundaries(path: Path) -> dict[tuple[int, str], fcgi.RecordStream]:
    res = {}
    for key, segs in _streams(path).items():
        st = fcgi.RecordStream()
        for data, real in segs:
            st.feed(data, real)
        res[key] = st
    return res


def test_real_php_fpm_responses_end_with_end_request_complete() -> None:
    """php_fpm_terminate: every STDOUT response of PHP-FPM ends with END_REQUEST (app
    status 0, FCGI_REQUEST_COMPLETE); the requests of the workers it terminated got none."""
    path = SAMPLES / "php_fpm_terminate" / "nginx.pcap"
    if not path.exists():
        pytest.skip("not recorded")
    streams = _boundaries(path)
    ends = [b for (_p, d), st in streams.items() if d == "s2c" for b in st.boundaries]
    begins = [b for (_p, d), st in streams.items() if d == "c2s" for b in st.boundaries]
    done = [b for b in ends if b.event == "response_end"]
    assert done and all((b.app_status, b.protocol_status) == (0, 0) for b in done)
    assert len([b for b in ends if b.event == "response_begin"]) == len(done)
    requests = [b for b in begins if b.event == "request_begin"]
    # 4 requests met a terminated worker: begun, never answered
    assert len(requests) - len(done) == 4
    for (port, d), st in streams.items():
        if d == "s2c":
            assert not st.lost, port


def test_real_keep_conn_requests_are_found_after_snaplen_cuts() -> None:
    """php_fpm_max_children (snaplen 256): nginx's first segment of a request is cut, so the
    thread is lost inside PARAMS; each request on a kept connection starts a segment with
    BEGIN_REQUEST and is found again. Responses (short) are whole."""
    path = SAMPLES / "php_fpm_max_children" / "nginx.pcap"
    if not path.exists():
        pytest.skip("not recorded")
    streams = _boundaries(path)
    c2s = [st for (_p, d), st in streams.items() if d == "c2s"]
    s2c = [st for (_p, d), st in streams.items() if d == "s2c"]
    # the warm-up request and the burst of 12 (retransmissions left out)
    assert sum(1 for st in c2s for b in st.boundaries if b.event == "request_begin") == 13
    assert sum(1 for st in s2c for b in st.boundaries if b.event == "response_end") == 3
    assert all(r.request_id == 1 for st in c2s for r in st.records)
