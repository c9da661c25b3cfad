"""The lab's own tooling on the recorded production-condition samples (no root needed).

The labels in sample_pcaps/ come from the lab's logs and its independent pcap reader
(scripts/pcapreset_lab.py), never from pcapreset; these tests check that reader and the
lab's logs against the captures: VXLAN decapsulation, DNAT aliases, retransmitted SYNs,
the lossy router's drop log, and the pool's hash keys against nginx's access.log.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import lab_production as prod  # noqa: E402
import lab_upstreams as ups  # noqa: E402
import pcapreset_lab as lab  # noqa: E402


def _need(*names: str) -> Path:
    d = SAMPLES / names[0]
    for n in names[1:]:
        if not (d / n).exists():
            pytest.skip(f"{d / n} not recorded")
    return d


def _key(p: lab.Pkt) -> tuple:
    return (p.src, p.sport, p.dst, p.dport, p.seq, p.ack, p.flags, p.plen)


def test_vxlan_mirror_carries_every_packet_nginx_saw() -> None:
    d = _need("vxlan_mirror", "mirror.pcap", "nginx.pcap")
    _lt, mirrored = lab.read_pcap(d / "mirror.pcap")
    _lt, at_nginx = lab.read_pcap(d / "nginx.pcap")
    assert mirrored, "no TCP packet decapsulated from the VXLAN mirror"
    # the mirror copies each frame as it reaches the router: the same TCP segments as
    # nginx's veth, the server's ones one hop earlier (TTL 64 there, 63 at nginx)
    assert sorted(map(_key, mirrored)) == sorted(map(_key, at_nginx))
    assert {p.ttl for p in mirrored} == {64}
    assert {p.ttl for p in at_nginx if p.sport == lab.PORT} == {63}


def test_dnat_any_capture_sees_each_packet_twice_and_aliases_merge_them() -> None:
    d = _need("dnat_any_twice", "backend.pcap", "nginx.pcap", "labels.json")
    labels = json.loads((d / "labels.json").read_text())
    aliases = labels["server_aliases"]
    (translated,) = aliases
    ctr_ip = translated.rsplit(":", 1)[0]
    _lt, raw = lab.read_pcap(d / "backend.pcap")
    before = [p for p in raw if lab.V4["be"] in (p.src, p.dst)]
    after = [p for p in raw if ctr_ip in (p.src, p.dst)]
    assert len(before) == len(after) > 0
    merged = lab.connections(lab.unalias(raw, aliases))
    _lt, ngx = lab.read_pcap(d / "nginx.pcap")
    assert len(merged) == len(lab.connections(ngx)) == len(labels["connections"])
    assert {c.server for c in merged} == {f"{lab.V4['be']}:{lab.PORT}"}


def _pkt(ts: float, flags: int, seq: int, sport: int = 40000, dport: int = 3000) -> lab.Pkt:
    src, dst = ("10.0.0.1", "10.0.0.2") if dport == 3000 else ("10.0.0.2", "10.0.0.1")
    return lab.Pkt(ts, src, dst, sport, dport, flags, seq, 0, 64, 1, 0, 0)


def test_retransmitted_syn_stays_in_its_connection_a_new_isn_starts_another() -> None:
    syn, synack = lab.F_SYN, lab.F_SYN | lab.F_ACK
    pkts = [_pkt(0.0, syn, 100), _pkt(0.05, synack, 900, 3000, 40000),
            _pkt(1.0, syn, 100),  # SYN-ACK lost on the way: same ISN again
            _pkt(9.0, lab.F_RST, 101), _pkt(10.0, syn, 5555)]  # fmt: skip
    conns = lab.connections(pkts)
    assert [len(c.pkts) for c in conns] == [4, 1]


def test_payload_kinds() -> None:
    def kind(head: bytes) -> str:
        p = _pkt(0.0, lab.F_ACK | lab.F_PSH, 1)
        p.head = head
        return lab.payload_kind(p)

    assert kind(b"GET / HT") == "request"
    assert kind(b"\x17\x03\x03\x00\x59") == "tls_appdata"
    assert kind(b"\x15\x03\x03\x00\x1a") == "tls_alert"
    assert kind(b"HTTP/1.1") == "other"


def test_lossy_router_drop_log_matches_the_two_captures() -> None:
    d = _need("lossy_path", "drops.log", "backend.pcap", "nginx.pcap")
    drops = lab.read_jsonl(d / "drops.log")
    assert drops
    seen: dict[str, Counter] = {}
    for cap in ("backend.pcap", "nginx.pcap"):
        _lt, pkts = lab.read_pcap(d / cap)
        seen[cap] = Counter(
            (lab.fmt_ep(p.src, p.sport), lab.fmt_ep(p.dst, p.dport), p.seq, p.flags) for p in pkts
        )
    dropped = Counter((e["src"], e["dst"], e["seq"], e["flags"]) for e in drops)
    for k, n in dropped.items():
        sent, received = ("nginx.pcap", "backend.pcap") if k[0].startswith("10.77.2.") else (
            "backend.pcap", "nginx.pcap")  # fmt: skip
        # every copy the sender put on the wire reached the other side but the dropped ones
        assert seen[sent][k] >= n, k
        assert seen[received][k] == seen[sent][k] - n, k


def test_pool_hash_keys_reach_the_backend_they_were_chosen_for() -> None:
    d = _need("pool_three_backends", "access.log")
    rx = re.compile(r'"GET /\?k=(\w+) HTTP/1.1" \d+ \d+ ([\d.:]+)')
    want = {prod.hash_key_for(i): f"{ip}:{lab.PORT}" for i, (_k, ip, *_r) in
            enumerate(prod.POOL)}  # fmt: skip
    lines = [rx.search(ln) for ln in (d / "access.log").read_text().splitlines()]
    got = [(m.group(1), m.group(2).rstrip(",")) for m in lines if m]
    assert len(got) >= 15
    assert all(want[k] == first for k, first in got), got


def _view(labels: dict) -> dict:
    out = {}
    for c in labels["connections"]:
        for cap, v in c["per_capture"].items():
            key = (c["client"], c["server"], cap, v["first_ts"])
            out[key] = (v["has_rst"], v.get("cause"), v.get("sender"),
                        bool(v.get("fin_crossed_request")), v["rst_packets"])  # fmt: skip
    return out


@pytest.mark.parametrize(
    "scenario",
    sorted(
        n for n in {**prod.PRODUCTION, **ups.UPSTREAMS} if (SAMPLES / n / "labels.json").exists()
    ),
)
def test_checked_in_labels_are_what_the_lab_derives_from_the_folder(scenario: str) -> None:
    """Rebuilt from the folder's captures and the lab's logs kept there, every connection
    gets the same cause, sender, RST count and FIN-crossing as in labels.json."""
    d = SAMPLES / scenario
    recorded = json.loads((d / "labels.json").read_text())
    rebuilt = lab.relabel(d)
    assert _view(rebuilt) == _view(recorded)
    assert rebuilt["captures"].keys() == recorded["captures"].keys()
    for cap, info in recorded["captures"].items():
        for k in ("rst_packets", "tcp_connections", "connections_with_rst", "linktype"):
            assert rebuilt["captures"][cap][k] == info[k], (cap, k)


def test_php_fpm_terminations_are_the_server_resets_mid_request() -> None:
    """Each server RST in php_fpm_terminate falls in the second PHP-FPM's master logged a
    worker terminated at request_terminate_timeout (or the next), and answers a FastCGI
    request the server never answered (no server data after the client's last record)."""
    d = _need("php_fpm_terminate", "backend.pcap", "php-fpm.log")
    kills = [
        line
        for line in (d / "php-fpm.log").read_text().splitlines()
        if ups.FPM_TIMEOUT.search(line)
    ]
    assert kills
    secs = [time.mktime(time.strptime(k[1:21], "%d-%b-%Y %H:%M:%S")) for k in kills]
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    resets = 0
    for c in lab.connections(pkts):
        f = lab.conn_facts(c)
        r = f.get("first_rst")
        if not r:
            continue
        resets += 1
        assert r["dir"] == "s2c"
        assert any(s <= r["ts"] < s + 2 for s in secs), r
        # FastCGI: the client's last record (BEGIN_REQUEST ...) after the server's last data
        last_c = max(p.ts for p in c.pkts if p.plen and c.dir(p) == "c2s" and p.ts < r["ts"])
        assert last_c > r["last_s2c_data_ts"]
        assert [p.head[:2] for p in c.pkts if p.plen and c.dir(p) == "c2s"][-1] == b"\x01\x01"
    assert resets == len(kills)


def test_php_fpm_max_children_overflow_is_silent_and_logged() -> None:
    """pm.max_children reached (PHP-FPM's own warning), no RST on the wire, and every
    request beyond the workers and the accept queue ended in nginx's 504."""
    d = _need("php_fpm_max_children", "backend.pcap", "php-fpm.log", "access.log")
    assert "server reached pm.max_children" in (d / "php-fpm.log").read_text()
    labels = json.loads((d / "labels.json").read_text())
    assert not any(c["has_rst"] for c in labels["connections"])
    found = {f["cause"]: f["count"] for f in labels["findings"]}
    n504 = sum(1 for line in (d / "access.log").read_text().splitlines() if '" 504 ' in line)
    assert found["backlog_overflow"] + found["upstream_timeout"] == n504


def test_http10_upstream_carries_one_request_per_connection() -> None:
    """nginx without proxy_http_version 1.1 speaks HTTP/1.0 upstream: no connection carries
    a second request, so none of its resets can be a keep-alive race."""
    d = _need("backend_crash_http10", "backend.pcap", "labels.json")
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    conns = lab.connections(pkts)
    per_conn = [
        [p for p in c.pkts if c.dir(p) == "c2s" and lab.payload_kind(p) == "request"] for c in conns
    ]
    assert sum(len(r) for r in per_conn) >= 5
    assert all(len(r) <= 1 for r in per_conn)
    labels = json.loads((d / "labels.json").read_text())
    assert "keepalive_race" not in {c["cause"] for c in labels["connections"]}


def test_websocket_restart_resets_follow_the_backends_fin() -> None:
    """websocket_backend_restart: each server RST comes after the server's FIN, which
    falls within a second after the lab's SIGTERM, and answers client data (frames)."""
    d = _need("websocket_backend_restart", "backend.pcap", "labels.json")
    labels = json.loads((d / "labels.json").read_text())
    (kill,) = [e["ts"] for e in labels["lab_events"] if e["event"] == "backend_sigterm"]
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    reset = 0
    for c in lab.connections(pkts):
        f = lab.conn_facts(c)
        r = f.get("first_rst")
        if r:
            reset += 1
            assert r["dir"] == "s2c" and r["server_fin_before"]
            assert kill <= f["fin_s2c_ts"] <= kill + 1.0
            assert r["client_data_after_server_fin"]
    assert reset == sum(1 for c in labels["connections"] if c["has_rst"]) > 0


def test_websocket_idle_close_is_nginx_after_proxy_read_timeout() -> None:
    """websocket_idle_timeout: the one connection nginx closed on its own came >= 3 s
    (proxy_read_timeout) after the last frame either way, and error.log says why."""
    d = _need("websocket_idle_timeout", "backend.pcap", "error.log")
    assert "while proxying upgraded connection" in (d / "error.log").read_text()
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    idle = [lab.conn_facts(c).get("client_fin_idle_s") or 0 for c in lab.connections(pkts)]
    assert sum(1 for s in idle if s >= 3.0) == 1
    assert sum(1 for s in idle if s < 1.0) == 2


def test_uwsgi_harakiri_kills_match_the_wire() -> None:
    """uwsgi_harakiri: as many harakiri kills in uWSGI's log as connections the server
    ended mid-request (RST for the POST whose body the app never read, FIN for the GET);
    every request starts with a uwsgi packet header (modifier1 0, little-endian size)."""
    d = _need("uwsgi_harakiri", "backend.pcap", "uwsgi.log")
    kills = [
        ln for ln in (d / "uwsgi.log").read_text().splitlines() if ups.UWSGI_HARAKIRI.match(ln)
    ]
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    facts = [lab.conn_facts(c) for c in lab.connections(pkts)]
    rst = [f for f in facts if f.get("first_rst")]
    fin_mid = [f for f in facts if f["fin_with_request_outstanding"] and not f.get("first_rst")]
    assert len(kills) == len(rst) + len(fin_mid) == 2
    firsts = [
        p.head for c in lab.connections(pkts) for p in c.pkts[:4] if p.plen and c.dir(p) == "c2s"
    ]
    assert firsts and all(h[0] == 0 and h[3] == 0 for h in firsts)


def test_uwsgi_recycling_without_resets() -> None:
    """uwsgi_recycle: workers recycled at max-requests (uWSGI's log) while every request
    got its 200 on its own connection, and the wire has no RST."""
    d = _need("uwsgi_recycle", "backend.pcap", "uwsgi.log", "access.log")
    assert (d / "uwsgi.log").read_text().count("Seeya!") >= 2
    lines = (d / "access.log").read_text().splitlines()
    assert lines and all('" 200 ' in ln for ln in lines)
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    assert not any(p.flags & lab.F_RST for p in pkts)
    assert len(lab.connections(pkts)) == len(lines)


def test_node_max_connections_drops_are_the_resets() -> None:
    """node_max_connections: the connections the server reset are exactly the peers Node's
    log says it dropped at server.maxConnections, each without a byte of server data."""
    d = _need("node_max_connections", "backend.pcap", "backend.log")
    drops = {e["peer"] for e in lab.read_jsonl(d / "backend.log") if e["event"] == "drop"}
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    facts = [lab.conn_facts(c) for c in lab.connections(pkts)]
    reset = {f["client"] for f in facts if f.get("first_rst")}
    assert reset == drops and drops
    assert all(f["data_s2c"] == 0 for f in facts if f["client"] in drops)


def test_tomcat_races_cross_its_keepalive_timeout() -> None:
    """keepalive_race_tomcat: every server FIN comes keepAliveTimeout (3 s) after the
    server's last response on that connection, and each RST is a bare RST after it."""
    d = _need("keepalive_race_tomcat", "backend.pcap", "labels.json")
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    fins = 0
    for c in lab.connections(pkts):
        f = lab.conn_facts(c)
        if f["fin_s2c_ts"] is None:
            continue
        last = max(p.ts for p in c.pkts if c.dir(p) == "s2c" and p.plen and p.ts < f["fin_s2c_ts"])
        if f["fin_c2s_ts"] is None or f["fin_c2s_ts"] > f["fin_s2c_ts"]:
            fins += 1
            assert 2.95 <= f["fin_s2c_ts"] - last <= 3.1
        r = f.get("first_rst")
        if r:
            assert r["dir"] == "s2c" and not r["ack_flag"] and r["server_fin_before"]
    labels = json.loads((d / "labels.json").read_text())
    assert fins >= labels["captures"]["backend.pcap"]["fin_crossed_request"] > 0


def test_too_big_header_is_nginx_resetting_a_response_still_arriving() -> None:
    """php_fpm_too_big_header: one nginx RST,ACK (unread response bytes) per 'upstream sent
    too big header' line, each after server data and with no server FIN before it."""
    d = _need("php_fpm_too_big_header", "backend.pcap", "error.log")
    n_lines = (d / "error.log").read_text().count("upstream sent too big header")
    _lt, pkts = lab.read_pcap(d / "backend.pcap")
    resets = [f for f in map(lab.conn_facts, lab.connections(pkts)) if f.get("first_rst")]
    assert len(resets) == n_lines == 2
    for f in resets:
        r = f["first_rst"]
        assert r["dir"] == "c2s" and r["ack_flag"] and not r["server_fin_before"]
        assert f["data_s2c"] > 0
