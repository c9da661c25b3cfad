"""Advice per backend: the table of known backends and their settings, the TLS
and restart advice, and one line per backend of a pool (a real pool built from
two lab captures of different backends, the second moved to its own address)."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest
from conftest import SAMPLES

from pcapreset import api
from pcapreset.interpret.advice import recommend
from pcapreset.interpret.backend_advice import header_evidence
from pcapreset.interpret.backends import (
    KNOWN_BACKENDS,
    backend_from_headers,
    guess_backend,
    known_backend,
)
from pcapreset.report.headers import header_stats


def test_backends_named_by_their_server_header() -> None:
    name = backend_from_headers({"server": "Apache/2.4.68 (Debian)"})
    assert name == "Apache/2.4.68 (Debian)"  # as sent
    assert known_backend(name) is not None and known_backend(name).setting == "KeepAliveTimeout"
    assert known_backend("gunicorn/23.0").setting == "--keep-alive"
    assert backend_from_headers({}) is None  # Go writes none of the headers read


def test_every_backend_has_a_setting_and_a_way_to_write_it() -> None:
    for b in KNOWN_BACKENDS:
        assert b.setting and b.default_text
        assert "65" in b.value(65.0)
    assert {b.name for b in KNOWN_BACKENDS} >= {"Apache httpd", "Go net/http"}


def test_apache_advice_names_keepalivetimeout() -> None:
    rec = recommend("keepalive_race", idle_timeout_s=5.0, backend="Apache/2.4.68 (Debian)")
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
    node = [r for r in recs if "10.77.3.2:3000" in r]
    guni = [r for r in recs if "10.77.3.9:3000" in r]
    assert len(node) == len(guni) == 1
    assert "server.keepAliveTimeout = 65000" in node[0]
    assert "--keep-alive 65" in guni[0]


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


# ------------------------------------------- advice in the backend's own terms
def _recs(sample: str, cap: str = "nginx.pcap") -> list[str]:
    d = SAMPLES / sample
    rep = api.analyze(
        d / cap, nginx_conf=d / "nginx.conf", nginx_log=[d / "error.log"], nginx_tz="UTC"
    )
    return rep.to_json()["summary"]["recommendations"]


def test_too_big_header_under_fastcgi_pass_names_fastcgi_buffer_size() -> None:
    recs = " ".join(_recs("php_fpm_too_big_header"))
    assert "fastcgi_buffer_size" in recs
    assert "proxy_read_timeout" not in recs and "connecting side" not in recs


def test_http10_upstream_names_proxy_http_version_once() -> None:
    recs = _recs("backend_crash_http10")
    hits = [r for r in recs if "proxy_http_version 1.1" in r]
    assert len(hits) == 1 and 'Connection ""' in hits[0]


def test_without_nginx_conf_the_advice_stays_generic() -> None:
    rep = api.analyze(SAMPLES / "backend_crash_http10" / "nginx.pcap")
    recs = " ".join(rep.to_json()["summary"]["recommendations"])
    assert "proxy_http_version" not in recs and "OOM killer" in recs


@pytest.mark.parametrize(
    ("cause", "evidence", "words"),
    [
        ("client_abort", {"fastcgi", "too_big_header"}, "fastcgi_buffer_size"),
        ("client_abort", {"uwsgi", "too_big_header"}, "uwsgi_buffer_size"),
        ("client_abort", {"too_big_header"}, "proxy_buffer_size"),
        ("backend_crash", {"fastcgi"}, "request_terminate_timeout"),
        ("backlog_overflow", {"fastcgi"}, "pm.max_children"),
        ("upstream_timeout", {"fastcgi"}, "listen.backlog"),
        ("backend_restart", {"fastcgi"}, "pm.max_requests"),
        ("premature_close", {"uwsgi"}, "harakiri"),
        ("backend_restart", {"uwsgi"}, "max-requests-delta"),
        ("backlog_overflow", {"uwsgi"}, "`processes`"),
        ("keepalive_race", {"tomcat"}, "keepAliveTimeout"),
        ("upstream_timeout", {"websocket"}, "WebSocket"),
        ("backlog_overflow", {"node"}, "server.maxConnections"),
        ("premature_close", {"http10"}, "proxy_http_version 1.1"),
    ],
)
def test_each_backend_row_answers_its_causes(cause: str, evidence: set, words: str) -> None:
    assert words in recommend(cause, evidence=evidence)
    assert words not in recommend(cause)  # no evidence: today's generic advice


def test_tomcat_is_named_by_its_server_header() -> None:
    assert header_evidence("Apache-Coyote/1.1") == {"tomcat"}
    assert header_evidence("Apache/2.4.62") == set()
    assert header_evidence("Node.js") == {"node"}


@pytest.mark.parametrize("cap", ["backend.pcap", "nginx.pcap"])
def test_tomcat_named_by_its_status_lines(cap: str) -> None:
    """Tomcat sends no Server header; its status lines carry no reason phrase
    ("HTTP/1.1 200 " CRLF): the keepAliveTimeout row fires on the real capture, from the
    wire alone (no nginx.conf, no log)."""
    rep = api.analyze(SAMPLES / "keepalive_race_tomcat" / cap)
    recs = " ".join(rep.to_json()["summary"]["recommendations"])
    assert "Tomcat" in recs and "keepAliveTimeout" in recs and header_stats(rep.result).tomcat
    # a backend with reason phrases (Node.js) is no Tomcat
    other = api.analyze(SAMPLES / "keepalive_race_node" / cap)
    assert not header_stats(other.result).tomcat
    assert "Tomcat" not in " ".join(other.to_json()["summary"]["recommendations"])


@pytest.mark.parametrize(
    ("sample", "words"),
    [("php_fpm_terminate", "request_terminate_timeout"), ("uwsgi_harakiri", "harakiri")],
)
def test_backend_rows_from_the_wire_alone(sample: str, words: str) -> None:
    """FastCGI and uwsgi seen on the wire (no nginx.conf) name the backend's own setting."""
    rep = api.analyze(SAMPLES / sample / "backend.pcap")
    assert words in " ".join(rep.to_json()["summary"]["recommendations"])


def test_websocket_idle_past_proxy_read_timeout_is_named() -> None:
    recs = " ".join(_recs("websocket_idle_timeout"))
    assert "WebSocket" in recs and "proxy_read_timeout" in recs


def test_node_resets_after_handshake_name_max_connections() -> None:
    assert "server.maxConnections" in " ".join(_recs("node_max_connections"))
