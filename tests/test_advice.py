"""Advice per backend: the table of known backends and their settings, the TLS
and restart advice, and one line per backend of a pool (a real pool built from
two lab captures of different backends, the second moved to its own address)."""

from __future__ import annotations

from pathlib import Path

import dpkt
from conftest import SAMPLES

from pcapreset import api
from pcapreset.interpret.advice import (
    KNOWN_BACKENDS,
    ServerView,
    backend_from_headers,
    guess_backend,
    per_server_advice,
    recommend,
)


def test_backends_named_by_their_server_header() -> None:
    assert backend_from_headers({"server": "Apache/2.4.68 (Debian)"}) == "Apache httpd"
    assert backend_from_headers({"server": "gunicorn"}) == "gunicorn"
    assert backend_from_headers({"server": "nginx/1.22.1"}) == "nginx"
    assert backend_from_headers({}) is None  # Go writes none of the headers read


def test_every_backend_has_a_setting_and_a_way_to_write_it() -> None:
    for b in KNOWN_BACKENDS:
        assert b.setting and b.default_text
        assert "65" in b.value(65.0)
    assert {b.name for b in KNOWN_BACKENDS} >= {"Apache httpd", "Go net/http"}


def test_apache_advice_names_keepalivetimeout() -> None:
    rec = recommend("keepalive_race", idle_timeout_s=5.0, backend="Apache httpd")
    assert "set KeepAliveTimeout 65" in rec and "keepalive_timeout 4s" in rec


def test_go_advice_when_the_responses_name_no_server() -> None:
    # Go's net/http writes no Server, Connection or Keep-Alive header, and has
    # no idle close by default: a quiet backend that closes idle is Go configured so
    assert [b.name for b in guess_backend(4.0, None, quiet=True)] == ["Go net/http"]
    assert "Go net/http" not in [b.name for b in guess_backend(5.0, None)]
    rec = recommend("keepalive_race", idle_timeout_s=4.0, quiet=True)
    assert "http.Server.IdleTimeout: 65 * time.Second" in rec


def test_tls_and_restart_advice() -> None:
    rec = recommend("keepalive_race", idle_timeout_s=5.0, backend="uvicorn", tls=True)
    assert "--timeout-keep-alive 65" in rec and "close_notify" in rec
    assert "close_notify" not in recommend("keepalive_race", idle_timeout_s=5.0)
    rec = recommend("backend_restart")
    assert "drain" in rec and "proxy_next_upstream" in rec


def test_per_server_advice_one_line_per_backend_that_needs_a_change() -> None:
    views = [
        ServerView("10.0.0.2:3000", 5.0, "Apache httpd", "Apache/2.4.68 (Debian)", True),
        ServerView("10.0.0.3:3000", 3.0, None, None, False, quiet=True),
        ServerView("10.0.0.4:3000", 75.0, "nginx", "nginx/1.27.0", False),  # outlasts nginx
        ServerView("10.0.0.5:3000", None, None, None, False),  # no idle close seen
    ]
    lines = per_server_advice(views, 60.0, "nginx default")
    assert len(lines) == 2
    assert lines[0].startswith("10.0.0.2:3000 (Apache/2.4.68 (Debian)): backend closes")
    assert "KeepAliveTimeout 65" in lines[0]
    assert lines[1].startswith("10.0.0.3:3000 (not named by its headers): no race seen yet")
    assert "http.Server.IdleTimeout" in lines[1]
    # nginx's one keepalive_timeout for the pool stays below its shortest idle close
    assert all("`keepalive_timeout 2s` (below every backend's in the pool)" in x for x in lines)


def _pool(tmp_path: Path) -> Path:
    """keepalive_race_node's nginx.pcap followed by keepalive_race_gunicorn's, the
    gunicorn backend moved from 10.77.3.2 to 10.77.3.9 (both Ethernet, IPv4)."""
    old, new = bytes([10, 77, 3, 2]), bytes([10, 77, 3, 9])
    out = tmp_path / "pool.pcap"
    with open(out, "wb") as g:
        w = None
        for name, move in (("keepalive_race_node", False), ("keepalive_race_gunicorn", True)):
            with open(SAMPLES / name / "nginx.pcap", "rb") as f:
                r = dpkt.pcap.Reader(f)
                w = w or dpkt.pcap.Writer(g, linktype=r.datalink(), snaplen=r.snaplen)
                for ts, buf in r:
                    eth = dpkt.ethernet.Ethernet(buf)
                    ip = eth.data
                    if move:
                        ip.src = new if ip.src == old else ip.src
                        ip.dst = new if ip.dst == old else ip.dst
                        ip.sum = 0
                    w.writepkt(bytes(eth), ts)
    return out


def test_pool_gets_one_line_per_backend(tmp_path: Path) -> None:
    s = api.analyze(_pool(tmp_path)).to_json()["summary"]
    assert set(s["server_idle_timeouts"]) == {"10.77.3.2:3000", "10.77.3.9:3000"}
    recs = s["recommendations"]
    node = [r for r in recs if r.startswith("10.77.3.2:3000 (Node.js): ")]
    guni = [r for r in recs if r.startswith("10.77.3.9:3000 (gunicorn): ")]
    assert len(node) == len(guni) == 1
    assert "server.keepAliveTimeout = 65000" in node[0]
    assert "--keep-alive 65" in guni[0]
    # no line speaks for the whole pool with one backend's timeout
    assert not [r for r in recs if r.startswith("backend closes idle")]


def test_tls_note_from_nginx_conf(tmp_path: Path) -> None:
    d = SAMPLES / "keepalive_race_node"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        (d / "nginx.conf").read_text().replace("proxy_pass http://", "proxy_pass https://")
    )
    recs = api.analyze(d / "nginx.pcap", nginx_conf=conf).to_json()["summary"]["recommendations"]
    assert any("server.keepAliveTimeout = 65000" in r and "close_notify" in r for r in recs)
    plain = api.analyze(d / "nginx.pcap", nginx_conf=d / "nginx.conf").to_json()["summary"]
    assert not any("close_notify" in r for r in plain["recommendations"])
