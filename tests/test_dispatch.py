"""FastCGI, uwsgi and WebSocket on the tracker's path (pcapreset.track.dispatch).

The real captures in sample_pcaps/ against independent counts: tshark's FastCGI dissector
(`tshark -d tcp.port==3000,fcgi -T fields -e fcgi.type`: BEGIN_REQUEST and END_REQUEST
records), nginx's access.log (statuses), tshark's WebSocket frames (tests/test_websocket.py);
the ``app`` of every reset in the JSON; and synthetic connections that show the protocol
comes from the first client bytes and the 101 answer, not from the port.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLES, ipv4, pcap_bytes, tcp
from hypothesis import given
from hypothesis import strategies as st

from pcapreset.cli import main
from pcapreset.engine import run as engine
from pcapreset.interpret.conversation import conn_app
from pcapreset.track.conn import PROTO_FASTCGI, PROTO_HTTP, PROTO_UWSGI, PROTO_WEBSOCKET, Conn
from pcapreset.track.dispatch import detect, payload

VANTAGES = ("nginx.pcap", "backend.pcap")


def _conns(scenario: str, vantage: str) -> list[Conn]:
    path = SAMPLES / scenario / vantage
    if not path.exists():
        pytest.skip("not recorded")
    return engine.run([str(path)]).conns


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize(
    ("scenario", "begin", "end"),
    [  # tshark's BEGIN_REQUEST / END_REQUEST record counts
        ("php_fpm_terminate", 10, 6),
        ("php_fpm_max_children", 13, 3),
        ("php_fpm_too_big_header", 6, 4),
    ],
)
def test_fastcgi_requests_and_responses(scenario: str, begin: int, end: int, vantage: str) -> None:
    conns = _conns(scenario, vantage)
    assert conns and all(c.proto == PROTO_FASTCGI for c in conns)
    exs = [e for c in conns for e in c.exchanges]
    assert sum(e.req_ts is not None for e in exs) == begin
    assert sum(e.resp_end_ts is not None for e in exs) == end
    # every request's method and URI came from its PARAMS record; responses begin
    # after their request and end after they begin
    assert all(e.method == "GET" and e.target.startswith("/?") for e in exs)
    for e in exs:
        if e.resp_end_ts is not None:
            assert e.req_ts is not None and e.resp_ts is not None
            assert e.req_ts <= e.resp_ts <= e.resp_end_ts and e.status == 200


@pytest.mark.parametrize("vantage", VANTAGES)
def test_fastcgi_keep_conn_reuse(vantage: str) -> None:
    """fastcgi_keep_conn on: later requests ride on connections that answered earlier
    ones, each exchange ending before the next begins."""
    conns = _conns("php_fpm_terminate", vantage)
    reused = [c for c in conns if len(c.exchanges) > 1]
    assert reused
    for c in reused:
        for a, b in zip(c.exchanges, c.exchanges[1:], strict=False):
            assert a.resp_end_ts is not None and b.req_ts is not None
            assert a.resp_end_ts <= b.req_ts


@pytest.mark.parametrize("vantage", VANTAGES)
def test_uwsgi_requests_with_http_answers(vantage: str) -> None:
    """uwsgi_harakiri: 5 requests (a GET and a POST killed by harakiri); nginx's
    access.log has 3 answered (200) and 2 failed (502)."""
    conns = _conns("uwsgi_harakiri", vantage)
    assert conns and all(c.proto == PROTO_UWSGI for c in conns)
    exs = [e for c in conns for e in c.exchanges]
    assert len(exs) == 5
    assert Counter(e.status for e in exs) == {200: 3, None: 2}
    assert {(e.method, e.target) for e in exs if e.status is None} == {
        ("GET", "/?sleep=4"),
        ("POST", "/upload?sleep=4"),
    }
    for e in exs:
        assert e.req_len is not None and e.req_bytes >= min(e.req_len, 1)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_uwsgi_recycle_every_request_answered(vantage: str) -> None:
    conns = _conns("uwsgi_recycle", vantage)
    exs = [e for c in conns for e in c.exchanges]
    assert all(c.proto == PROTO_UWSGI for c in conns) and len(exs) == 50
    assert all(e.complete and e.status == 200 for e in exs)


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize(
    ("scenario", "frames"),
    [  # tshark's counts (tests/test_websocket.py)
        ("websocket_idle_timeout", {"messages": 18, "liveness": 6, "close": 4}),
        ("websocket_backend_restart", {"messages": 126, "liveness": 0, "close": 6}),
    ],
)
def test_websocket_after_101(scenario: str, frames: dict[str, int], vantage: str) -> None:
    """After 101 the upgrade's exchange is complete (not one request that never ends);
    the frames are counted as messages, liveness (ping/pong) and close frames."""
    conns = _conns(scenario, vantage)
    assert conns and all(c.proto == PROTO_WEBSOCKET for c in conns)
    for c in conns:
        assert len(c.exchanges) == 1
        ex = c.exchanges[0]
        assert ex.status == 101 and ex.complete and ex.resp_len == ex.resp_bytes
        assert not any(s.lost for s in c.pstate.streams)
    got = {
        "messages": sum(sum(c.pstate.messages) for c in conns),
        "liveness": sum(sum(c.pstate.liveness) for c in conns),
        "close": sum(t is not None for c in conns for t in c.pstate.close_ts),
    }
    assert got == frames


@pytest.mark.parametrize(
    ("scenario", "app"),
    [
        ("php_fpm_terminate", "fastcgi"),
        ("php_fpm_too_big_header", "fastcgi"),
        ("uwsgi_harakiri", "uwsgi"),
        ("websocket_backend_restart", "websocket"),
        ("keepalive_race_node", "http"),
    ],
)
def test_app_in_json(scenario: str, app: str) -> None:
    """Each reset's ``app`` (SPEC) and the evidence line that says it."""
    path = SAMPLES / scenario / "backend.pcap"
    out = CliRunner().invoke(main, ["analyze", str(path), "--format", "json", "-q"])
    assert out.exit_code == 0, out.output
    resets = json.loads(out.output)["resets"]
    assert resets and {r["app"] for r in resets} == {app}
    says = {"fastcgi": "FastCGI", "uwsgi": "uwsgi", "websocket": "a WebSocket", "http": "HTTP/1.x"}
    for r in resets:
        assert any(e.startswith("the connection carries " + says[app]) for e in r["evidence"])


# ------------------------------------------------------------- not by the port
def _fcgi_record(typ: int, content: bytes, rid: int = 1) -> bytes:
    return struct.pack("!BBHHBB", 1, typ, rid, len(content), 0, 0) + content


def _pairs(**kv: str) -> bytes:
    return b"".join(bytes([len(k), len(v)]) + k.encode() + v.encode() for k, v in kv.items())


FCGI_REQUEST = (
    _fcgi_record(1, b"\x00\x01\x01\x00\x00\x00\x00\x00")
    + _fcgi_record(4, _pairs(REQUEST_METHOD="GET", REQUEST_URI="/x"))
    + _fcgi_record(4, b"")
    + _fcgi_record(5, b"")
)
FCGI_RESPONSE = _fcgi_record(6, b"Status: 404 Not Found\r\n\r\nno") + _fcgi_record(
    3, b"\x00\x00\x00\x00\x00\x00\x00\x00"
)
HTTP_REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
HTTP_RESPONSE = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"


def _capture(tmp_path: Path, sport: int, req: bytes, resp: bytes) -> Path:
    cl, sv, cp, c, s = "10.0.0.1", "10.0.0.2", 40000, 1000, 5000
    pk = [
        (cl, sv, cp, sport, c, 0, 0x02, b""),
        (sv, cl, sport, cp, s, c + 1, 0x12, b""),
        (cl, sv, cp, sport, c + 1, s + 1, 0x10, b""),
        (cl, sv, cp, sport, c + 1, s + 1, 0x18, req),
        (sv, cl, sport, cp, s + 1, c + 1 + len(req), 0x18, resp),
    ]
    recs = [
        (1_700_000_000.0 + 0.001 * i, ipv4(a, b, tcp(p, q, sq, ak, fl, payload=pl)))
        for i, (a, b, p, q, sq, ak, fl, pl) in enumerate(pk)
    ]
    path = tmp_path / f"{sport}.pcap"
    path.write_bytes(pcap_bytes(recs, linktype=101))
    return path


@pytest.mark.parametrize(
    ("port", "req", "resp", "proto"),
    [
        (80, FCGI_REQUEST, FCGI_RESPONSE, PROTO_FASTCGI),  # FastCGI on HTTP's port
        (9000, HTTP_REQUEST, HTTP_RESPONSE, PROTO_HTTP),  # HTTP on PHP-FPM's port
        (3031, HTTP_REQUEST, HTTP_RESPONSE, PROTO_HTTP),  # ... and on uWSGI's
    ],
)
def test_protocol_from_the_first_bytes_not_the_port(
    tmp_path: Path, port: int, req: bytes, resp: bytes, proto: int
) -> None:
    (c,) = engine.run([str(_capture(tmp_path, port, req, resp))]).conns
    assert c.proto == proto
    (ex,) = c.exchanges
    assert (ex.method, ex.target, ex.status) == ("GET", "/x", 404) and ex.complete


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@pytest.mark.parametrize(
    ("upgrade", "proto"), [(b"websocket", PROTO_WEBSOCKET), (b"h2c", PROTO_HTTP)]
)
def test_only_a_websocket_upgrade_is_a_websocket(
    tmp_path: Path, upgrade: bytes, proto: int
) -> None:
    """101 ends the exchange either way; frames are followed after a WebSocket
    upgrade only (h2c's HTTP/2 frames are no WebSocket), here one in the 101's segment."""
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + upgrade + b"\r\n\r\n"
    (c,) = engine.run([str(_capture(tmp_path, 3000, UPGRADE, head + b"\x81\x02hi"))]).conns
    assert c.proto == proto
    (ex,) = c.exchanges
    assert ex.status == 101 and ex.complete and ex.resp_len == len(head)
    assert conn_app(c) == ("websocket" if proto == PROTO_WEBSOCKET else "http")
    if proto == PROTO_WEBSOCKET:
        assert c.pstate.messages == [0, 1] and c.pstate.last_opcode == [None, 1]


# ------------------------------------------------------------- any bytes at all
@given(
    first=st.binary(min_size=1, max_size=80),
    more=st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=80)), max_size=8),
    prefix=st.sampled_from([b"", b"\x01\x01", b"\x00", FCGI_REQUEST[:12]]),
)
def test_any_bytes_never_raise(first: bytes, more: list, prefix: bytes) -> None:
    """Whatever the client opens with and whatever follows (cut anywhere, either way),
    detection and the protocol's parser take it without an exception."""
    conn = Conn(0, 1, 2, "syn", 0.0)
    data = prefix + first
    detect(conn, 0, data)
    rel = {True: len(data), False: 0}
    if conn.proto:
        payload(conn, True, 0.0, 0, len(data), data, None)
    for i, (up, chunk) in enumerate(more):
        if conn.proto:
            payload(conn, up, float(i), rel[up], len(chunk) + 3, chunk, None)
        rel[up] += len(chunk) + 3  # the capture kept fewer bytes than were sent
    assert conn.proto in (PROTO_HTTP, PROTO_FASTCGI, PROTO_UWSGI)
