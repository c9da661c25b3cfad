"""Findings and nginx-log ties on the upstream protocols nginx speaks (sample_pcaps/ lab
scenarios, both vantage points): PHP-FPM's full accept queue (pm.max_children with
listen.backlog 2) and the WebSocket idle past proxy_read_timeout."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from pcapreset import api
from pcapreset.engine import run as engine
from pcapreset.interpret.context import handshake_ack_dropped
from pcapreset.interpret.findings import conn_findings, no_finding

VANTAGES = ("nginx.pcap", "backend.pcap")


@pytest.mark.parametrize("vantage", VANTAGES)
def test_accept_queue_drop_after_the_handshake(vantage: str) -> None:
    """php_fpm_max_children: 7 connections completed the handshake but PHP-FPM's
    listen queue (2) was full: the server sent nothing after its SYN-ACK, nginx's
    request was retransmitted unacknowledged (backlog_overflow); 3 were accepted and
    waited for a worker until fastcgi_read_timeout (upstream_timeout)."""
    d = SAMPLES / "php_fpm_max_children"
    rep = api.analyze(d / vantage, nginx_log=[d / "error.log"], nginx_tz="UTC")
    j = rep.to_json()
    got = {f["cause"]: f["count"] for f in j["findings"]}
    assert got == {"backlog_overflow": 7, "upstream_timeout": 3}
    dropped = [c for c in engine.run([str(d / vantage)]).conns if handshake_ack_dropped(c)]
    assert len(dropped) == 7 and all(not no_finding(c) for c in dropped)
    # every "upstream timed out" line is tied: 3 by nginx's FIN, 7 within the wait of
    # a connection whose close is not on the wire (its FIN queued behind the request)
    log = j["nginx_log"]
    assert log["explained"] == log["upstream_errors"] == 10
    hows = sorted(e["explained_by"]["how"][:4] for e in log["errors"])
    assert {e["explained_by"]["cause"] for e in log["errors"]} == set(got)
    assert hows.count("wait") == 7


def test_an_answered_connection_is_no_accept_queue_drop() -> None:
    conns = engine.run([str(SAMPLES / "php_fpm_terminate" / "backend.pcap")]).conns
    assert conns and not any(handshake_ack_dropped(c) for c in conns)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_websocket_idle_is_a_timeout_and_a_close_frame_is_not(vantage: str) -> None:
    """websocket_idle_timeout: one connection nginx closed (FIN, no close frame) 3 s after
    the backend's last frame; the two closed with close frames are not timeouts."""
    conns = engine.run([str(SAMPLES / "websocket_idle_timeout" / vantage)]).conns
    found = {c.client & 0xFFFF: conn_findings(c) for c in conns}
    timed_out = [p for p, f in found.items() if f]
    assert len(timed_out) == 1
    ((cause, text),) = found[timed_out[0]]
    assert cause == "upstream_timeout" and "without a close frame" in text
    for c in conns:
        if c.client & 0xFFFF != timed_out[0]:
            assert c.pstate.close_ts[0] is not None  # nginx relayed the client's close
