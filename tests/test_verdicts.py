"""Verdicts on shapes seen in captures others made (tests/test_evidence.py builders).

Each test writes a small conversation the way real stacks put it on the wire
(TLS teardown, scans, browsers closing with RST, SYN retries, pools of
backends) and checks the verdict, the event count, or the report's summary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_evidence import ACK, FIN, MSS_OPT, PSH, REQ, RST, RTT, SYN, T0, Wire, analyze

import pcapreset
from pcapreset.report.text import render_text

TLS_APP = bytes([23, 3, 3, 0, 40]) + b"\x00" * 40
TLS_ALERT = bytes([21, 3, 3, 0, 26]) + b"\x00" * 26
TLS_HELLO = bytes([22, 3, 1, 0, 60]) + b"\x01" + b"\x00" * 59
TLS_SERVER_HELLO = bytes([22, 3, 3, 0, 60]) + b"\x02" + b"\x00" * 59


def tls_session(w: Wire) -> None:
    w.handshake()
    w.pkt(True, PSH | ACK, TLS_HELLO, dt=0.01)
    w.pkt(False, PSH | ACK, TLS_SERVER_HELLO, dt=RTT)
    w.pkt(True, PSH | ACK, TLS_APP, dt=0.01)
    w.pkt(False, PSH | ACK, TLS_APP, dt=RTT)
    w.pkt(True, ACK, dt=0.0001)


def test_tls_close_notify_after_the_servers_fin_is_after_close(tmp_path: Path) -> None:
    """The classic TLS teardown: the server closes, the client's close_notify
    reaches the closed socket, the kernel answers with a bare RST. Its IP ID is
    far from the server's counter (random IDs): no forgery."""
    out: list = []
    w = Wire(out, "client", 41001)
    tls_session(w)
    w.pkt(False, FIN | ACK, dt=0.05)
    w.pkt(True, PSH | ACK, TLS_ALERT, dt=RTT / 2)
    w.pkt(False, RST, dt=RTT / 2, seq=w.sseq, ipid=40000)
    (r,) = analyze(tmp_path, out)["resets"]
    assert (r["cause"], r["sender"], r["app"]) == ("after_close", "server", "tls")
    assert r["harmless"] is True and r["best_guess"] is None
    assert "late_segment_no_request" in r["facts"]
    assert "ipid_jump" in r["facts"] and "rst_shape_mismatch" not in r["facts"]


def test_a_scan_is_a_probe(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 41002)
    w.handshake()
    w.pkt(True, RST | ACK, dt=0.001)
    (r,) = analyze(tmp_path, out)["resets"]
    assert (r["cause"], r["sender"], r["app"], r["rule"]) == (
        "probe",
        "client",
        "none",
        "probe_no_request",
    )


def test_client_rst_after_a_complete_response_is_abortive_close(tmp_path: Path) -> None:
    """A browser closing with RST once it has read everything: nothing lost."""
    out: list = []
    w = Wire(out, "client", 41003)
    w.handshake()
    w.exchange()
    w.pkt(True, RST | ACK, dt=0.2)
    (r,) = analyze(tmp_path, out)["resets"]
    assert (r["cause"], r["sender"], r["app"]) == ("abortive_close", "client", "http")


def test_client_rst_with_its_request_unanswered_is_client_abort(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 41004)
    w.handshake()
    w.pkt(True, PSH | ACK, REQ, dt=0.01)
    w.pkt(False, ACK, dt=RTT)
    w.pkt(True, RST | ACK, dt=3.0)
    (r,) = analyze(tmp_path, out)["resets"]
    assert (r["cause"], r["sender"], r["rule"]) == (
        "client_abort",
        "client",
        "client_abort_request",
    )


def test_a_lone_rst_is_unknown(tmp_path: Path) -> None:
    """No SYN, no reverse traffic: nothing to judge by."""
    out: list = []
    w = Wire(out, "client", 41005)
    w.pkt(True, RST, dt=0.0)
    (r,) = analyze(tmp_path, out)["resets"]
    assert (r["cause"], r["app"], r["best_guess"]) == ("unknown", "none", None)


def test_refused_syn_retries_of_one_attempt_are_one_event(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 41006)
    for k in range(3):  # the same SYN (same ISN) refused three times
        w.pkt(True, SYN, dt=0.0 if k == 0 else 1.0 * 2 ** (k - 1), opts=MSS_OPT, seq=1000)
        w.pkt(False, RST | ACK, dt=RTT, seq=0, ack=1001)
    w2 = Wire(out, "client", 41006, T0 + 20)
    w2.cseq = 777000  # a new attempt on the same port: another event
    w2.pkt(True, SYN, dt=0.0, opts=MSS_OPT)
    w2.pkt(False, RST | ACK, dt=RTT, seq=0, ack=w2.cseq + 1)
    j = analyze(tmp_path, out)
    assert [r["cause"] for r in j["resets"]] == ["connection_refused"] * 2
    first = j["resets"][0]
    assert first["rst_packets"] == 3 and "syn_retries_refused" in first["facts"]
    assert j["summary"]["by_cause"] == {"connection_refused": 2}


@pytest.mark.parametrize(("attempts", "finding"), [(1, False), (3, True)])
def test_silent_backlog_needs_a_burst(tmp_path: Path, attempts: int, finding: bool) -> None:
    """One retransmitted SYN is ordinary loss; several attempts at once is a burst."""
    out: list = []
    for i in range(attempts):
        w = Wire(out, "client", 41010 + i, T0 + 0.01 * i)
        w.pkt(True, SYN, dt=0.0, opts=MSS_OPT, seq=1000)
        w.pkt(True, SYN, dt=1.0, opts=MSS_OPT, seq=1000)  # retransmitted: no SYN-ACK yet
        w.cseq = 1001
        w.pkt(False, SYN | ACK, dt=RTT / 2, opts=MSS_OPT)
        w.pkt(True, ACK, dt=RTT / 2)
        w.exchange()
    causes = [f["cause"] for f in analyze(tmp_path, out)["findings"]]
    assert ("backlog_overflow" in causes) is finding


def test_servers_summary_and_backend_named_as_sent(tmp_path: Path) -> None:
    """One object per upstream server; the backend named by its Server header as
    sent, and no timing guess of Node.js or uvicorn when it names another."""
    out: list = []
    resp = b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.62\r\nContent-Length: 2\r\n\r\nok"
    for i in range(2):  # two idle closes after 5 s: Node.js/uvicorn timing
        w = Wire(out, "client", 41020 + i, T0 + 10 * i)
        w.handshake()
        w.pkt(True, PSH | ACK, REQ, dt=0.01)
        w.pkt(False, PSH | ACK, resp, dt=RTT)
        w.pkt(True, ACK, dt=0.0001)
        w.pkt(False, FIN | ACK, dt=5.0)
        w.pkt(True, FIN | ACK, dt=RTT)
        w.pkt(False, ACK, dt=RTT)
    j = analyze(tmp_path, out)
    s = j["summary"]
    (srv,) = s["servers"]
    assert srv["server"] == "10.2.0.2:3000" and srv["backend"] == "Apache/2.4.62"
    assert srv["idle_timeout_s"] == pytest.approx(5.0, abs=0.01)
    assert srv["idle_timeout_basis"] == "idle closes" and srv["resets"] == 0
    assert s["backend"] == "Apache/2.4.62"
    text = " ".join(s["recommendations"])
    assert "Apache/2.4.62" in text and "Node.js" not in text and "uvicorn" not in text


def test_text_shows_confidence_and_groups_identical_resets(tmp_path: Path) -> None:
    out: list = []
    for i in range(4):
        w = Wire(out, "client", 41030 + i, T0 + i)
        w.pkt(True, SYN, dt=0.0, opts=MSS_OPT)
        w.pkt(False, RST | ACK, dt=RTT, seq=0, ack=w.cseq + 1)
    from conftest import pcap_bytes, write

    path = write(tmp_path / "t.pcap", pcap_bytes(sorted(out, key=lambda p: p[0]), linktype=1))
    lines = render_text(pcapreset.analyze(path)).splitlines()
    header = next(x for x in lines if x.startswith("time "))
    assert " conf " in header
    rows = [x for x in lines if "connection_refused" in x and " 0.95 " in x]
    assert len(rows) == 1 and "x4" in rows[0].split()
    assert max(len(x) for x in lines) <= 80


def test_advice_for_traffic_that_is_not_http_does_not_speak_of_nginx(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 41040)
    w.handshake()
    w.pkt(True, PSH | ACK, b"\x00\x00\x00\x10binary-request!!", dt=0.01)
    w.pkt(False, PSH | ACK, b"\x00\x00\x00\x08reply...", dt=RTT)
    w.pkt(True, ACK, dt=0.0001)
    w.pkt(False, RST | ACK, dt=0.001)
    j = analyze(tmp_path, out)
    (r,) = j["resets"]
    assert (r["cause"], r["sender"], r["app"]) == ("abortive_close", "server", "other")
    recs = " ".join(j["summary"]["recommendations"])
    assert recs and "nginx" not in recs and "backend" not in recs


def test_every_cause_has_advice_for_http_and_other_traffic() -> None:
    from pcapreset.interpret.advice import recommend
    from pcapreset.interpret.rules import CAUSES

    for cause in CAUSES:
        if cause == "unknown":
            continue
        assert recommend(cause), cause
        other = recommend(cause, http=False)
        assert other and ("nginx" not in other or "TLS upstreams" in other), cause


def test_a_pool_of_backends_gets_one_answer_per_server() -> None:
    """sample_pcaps/pool_three_backends: Node.js (6 s idle close), Go (3 s) and
    Apache (5 s) behind one upstream: summary.servers and the keep-alive advice
    give each its own idle timeout and name (labels.json "servers")."""
    folder = Path(__file__).resolve().parents[1] / "sample_pcaps" / "pool_three_backends"
    if not folder.is_dir():
        pytest.skip("pool_three_backends not present")
    import json

    want = {s["server"]: s for s in json.loads((folder / "labels.json").read_text())["servers"]}
    j = pcapreset.analyze(folder / "nginx.pcap").to_json()
    got = {s["server"]: s for s in j["summary"]["servers"]}
    assert set(got) == set(want)
    for srv, w in want.items():
        assert got[srv]["idle_timeout_s"] == pytest.approx(w["idle_timeout_s"], abs=0.1), srv
        recs = [r for r in j["summary"]["recommendations"] if r.startswith(f"server {srv}:")]
        assert len(recs) == 1 and f"~{w['idle_timeout_s']:.1f} s" in recs[0], (srv, recs)
    assert got["10.77.3.4:3000"]["backend"].startswith("Apache/2.4")
