"""Single facts of pcapreset.interpret.evidence on small synthetic conversations.

Each test writes a few hand-made packets (tests/conftest.py builders) to a pcap,
runs the real pipeline (``pcapreset.analyze``) and checks one fact, the verdict
it leads to, or the vantage point. The TTLs model the two capture points of
the lab: on nginx's host the client's packets carry their initial TTL (64) and
the backend's arrive one hop lower (63); on the backend host it is the other
way round. Real captures are covered by tests/test_golden.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ether, ipv4, pcap_bytes, tcp, write

import pcapreset
from pcapreset.interpret.vantage import TTL_FAMILIES, hops, initial_ttl

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
TS_OPT = bytes([1, 1, 8, 10]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
MSS_OPT = bytes([2, 4, 0x05, 0xB4])
REQ = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
T0 = 1_800_000_000.0
RTT = 0.002


class Wire:
    """One TCP connection's packets as a capture at ``vantage`` sees them."""

    def __init__(self, out: list, vantage: str, cport: int, t: float = T0) -> None:
        self.out = out
        self.cport = cport
        self.cttl = 64 if vantage == "client" else 63
        self.sttl = 63 if vantage == "client" else 64
        self.cseq, self.sseq = 1000, 90000
        self.t = t
        self.ipid = {True: 100, False: 5000}

    def pkt(
        self,
        from_client: bool,
        flags: int,
        payload: bytes = b"",
        dt: float = 0.0005,
        ttl: int | None = None,
        seq: int | None = None,
        ack: int | None = None,
        opts: bytes = b"",
        ipid: int | None = None,
    ) -> None:
        self.t += dt
        if from_client:
            src, dst, sp, dp = "10.1.0.2", "10.2.0.2", self.cport, 3000
            s = self.cseq if seq is None else seq
            a = self.sseq if ack is None else ack
        else:
            src, dst, sp, dp = "10.2.0.2", "10.1.0.2", 3000, self.cport
            s = self.sseq if seq is None else seq
            a = self.cseq if ack is None else ack
        if not flags & ACK:
            a = 0
        self.ipid[from_client] += 1
        t = (self.cttl if from_client else self.sttl) if ttl is None else ttl
        ip = ipv4(src, dst, tcp(sp, dp, s, a, flags, opts=opts, payload=payload), ttl=t,
                  ipid=self.ipid[from_client] if ipid is None else ipid)  # fmt: skip
        self.out.append((self.t, ether(ip)))
        adv = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if seq is None and not flags & RST:
            if from_client:
                self.cseq += adv
            else:
                self.sseq += adv

    def handshake(self) -> None:
        self.pkt(True, SYN, dt=0.0, opts=MSS_OPT)
        self.pkt(False, SYN | ACK, dt=RTT / 2, opts=MSS_OPT)
        self.pkt(True, ACK, dt=RTT / 2)

    def exchange(self, gap: float = 0.01) -> None:
        self.pkt(True, PSH | ACK, REQ, dt=gap)
        self.pkt(False, PSH | ACK, RESP, dt=RTT)
        self.pkt(True, ACK, dt=0.0001)


def analyze(tmp_path: Path, packets: list, name: str = "t.pcap") -> dict:
    packets.sort(key=lambda p: p[0])
    path = write(tmp_path / name, pcap_bytes(packets, linktype=1))
    return pcapreset.analyze(path).to_json()


def race(out: list, vantage: str, cport: int, t: float = T0, idle_s: float = 5.0) -> Wire:
    """A keep-alive race: the backend's idle FIN and nginx's next request cross."""
    w = Wire(out, vantage, cport, t)
    w.handshake()
    w.exchange()
    fin_seq = w.sseq
    if vantage == "client":  # nginx sends, then the FIN (sent earlier) arrives
        w.pkt(True, PSH | ACK, REQ, dt=idle_s)
        w.pkt(False, FIN | ACK, dt=RTT / 4, ack=w.cseq - len(REQ))
        w.pkt(False, RST, dt=RTT / 2, seq=fin_seq)  # answers the request: seq = its ack
    else:  # the FIN leaves, then the request arrives and bounces
        w.pkt(False, FIN | ACK, dt=idle_s)
        w.pkt(True, PSH | ACK, REQ, dt=RTT / 4, ack=fin_seq)  # sent before the FIN arrived
        w.pkt(False, RST, dt=0.0001, seq=fin_seq)
    return w


def idle_close(out: list, vantage: str, cport: int, t: float, idle_s: float) -> Wire:
    """The backend closes an idle keep-alive connection cleanly."""
    w = Wire(out, vantage, cport, t)
    w.handshake()
    w.exchange()
    w.pkt(False, FIN | ACK, dt=idle_s)
    w.pkt(True, FIN | ACK, dt=RTT)
    w.pkt(False, ACK, dt=RTT)
    return w


# ----------------------------------------------------------------- TTL basics
def test_initial_ttl_families() -> None:
    assert TTL_FAMILIES == (32, 64, 128, 255)
    assert [initial_ttl(t) for t in (64, 63, 1, 33, 128, 120, 255, 200)] == [
        64, 64, 32, 64, 128, 128, 255, 255,
    ]  # fmt: skip
    assert hops(63) == 1 and hops(64) == 0 and hops(250) == 5


# ---------------------------------------------------------- keep-alive race
@pytest.mark.parametrize("vantage", ["client", "server"])
def test_keepalive_race_from_both_vantage_points(tmp_path: Path, vantage: str) -> None:
    out: list = []
    race(out, vantage, 40001)
    j = analyze(tmp_path, out)
    (r,) = j["resets"]
    assert (r["cause"], r["sender"], r["phase"]) == ("keepalive_race", "server", "request")
    assert {"stateless_rst", "fin_crossed_request", "reused_connection"} <= set(r["facts"])
    # the backend's TTL differs between the two capture points, but not within the flow
    assert "ttl_mismatch" not in r["facts"] and "ttl_consistent" in r["facts"]
    where = j["capture"]["vantage"]["where"]
    assert where.startswith("client host" if vantage == "client" else "server host")
    assert r["idle_before_s"] == pytest.approx(5.0, abs=0.01)


@pytest.mark.parametrize("vantage", ["client", "server"])
def test_race_without_fin_is_recognised_by_timing(tmp_path: Path, vantage: str) -> None:
    """close() with the request unread: RST,ACK at once, no FIN (the timer won narrowly)."""
    out: list = []
    w = Wire(out, vantage, 40002)
    w.handshake()
    w.exchange()
    w.pkt(True, PSH | ACK, REQ, dt=5.0)
    w.pkt(False, RST | ACK, dt=RTT if vantage == "client" else 0.0002, opts=TS_OPT)
    (r,) = analyze(tmp_path, out)["resets"]
    assert {"active_rst", "rst_soon_after_request", "idle_gap"} <= set(r["facts"])
    assert (r["cause"], r["rule"]) == ("keepalive_race", "keepalive_race_instant")


def test_slow_reset_after_request_is_not_a_race(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 40003)
    w.handshake()
    w.exchange()
    w.pkt(True, PSH | ACK, REQ, dt=5.0)
    w.pkt(False, ACK, dt=RTT)
    w.pkt(False, RST | ACK, dt=1.5, opts=TS_OPT)
    (r,) = analyze(tmp_path, out)["resets"]
    assert "rst_soon_after_request" not in r["facts"]
    assert r["cause"] == "backend_crash"


# ------------------------------------------------------------------ middlebox
@pytest.mark.parametrize("vantage", ["client", "server"])
def test_forged_rst_ttl_is_middlebox_from_both_vantage_points(tmp_path: Path, vantage: str) -> None:
    """A router's RST carries the router's TTL, not the claimed sender's."""
    out: list = []
    w = Wire(out, vantage, 40004)
    w.handshake()
    w.exchange()
    if vantage == "client":  # the router answers nginx in the backend's name: 0 hops away
        w.pkt(True, PSH | ACK, REQ, dt=4.5)
        w.pkt(False, RST, dt=0.0003, ttl=64, ipid=0)
    else:  # an injector resets the backend in nginx's name with its own TTL
        w.pkt(True, RST, dt=0.5, ttl=200, ipid=7)
    (r,) = analyze(tmp_path, out)["resets"]
    assert "ttl_mismatch" in r["facts"]
    assert (r["cause"], r["sender"], r["rule"]) == ("middlebox", "middlebox", "forged_ttl")


@pytest.mark.parametrize(
    ("ipid", "host_rst_zero", "forged"),
    [
        (30000, True, True),  # TTL copied, IP ID neither 0 (the host's RSTs) nor its counter
        (30000, False, False),  # the host's RST shape unknown: an IP ID jump alone is nothing
        (0, True, False),  # the Linux kernel's own stateless RST: IP ID 0
        (5010, True, False),  # the socket's own RST: near the next value of its counter
    ],
)
def test_forged_rst_with_copied_ttl_needs_the_hosts_rst_shape(
    tmp_path: Path, ipid: int, host_rst_zero: bool, forged: bool
) -> None:
    """A RST with the sender's exact TTL: only the IP ID can tell, and only
    against the host's own baseline (scripts/lab middlebox_injector_ttl63 is
    the real capture of this): its packets count up and its other RSTs carry
    IP ID 0."""
    out: list = []
    if host_rst_zero:  # another connection where the backend's kernel answers with IP ID 0
        a = Wire(out, "client", 40005)
        a.handshake()
        a.exchange()
        a.exchange()
        a.pkt(False, FIN | ACK, dt=0.2)
        a.pkt(True, PSH | ACK, REQ, dt=0.3)
        a.pkt(False, RST, dt=0.0003, seq=a.sseq, ipid=0)
    w = Wire(out, "client", 40006, t=T0 + 5)
    w.handshake()
    w.exchange()
    w.exchange()
    w.exchange()
    w.pkt(False, RST, dt=0.5, seq=w.sseq, ipid=ipid)
    r = analyze(tmp_path, out)["resets"][-1]
    assert r["client"].endswith(":40006")
    assert "ttl_mismatch" not in r["facts"]
    assert ("rst_shape_mismatch" in r["facts"]) is forged
    if forged:
        assert (r["cause"], r["sender"], r["rule"]) == (
            "middlebox",
            "middlebox",
            "forged_rst_shape",
        )
    else:
        assert r["cause"] != "middlebox"


def test_refused_connect_and_vantage_from_one_side(tmp_path: Path) -> None:
    out: list = []
    for i in range(2):
        w = Wire(out, "client", 40010 + i, T0 + i)
        w.pkt(True, SYN, dt=0.0, opts=MSS_OPT)
        w.pkt(False, RST | ACK, dt=RTT, seq=0, ack=w.cseq)
    j = analyze(tmp_path, out)
    assert [(r["cause"], r["sender"], r["rule"]) for r in j["resets"]] == [
        ("connection_refused", "server", "refused")
    ] * 2
    assert j["capture"]["vantage"]["where"].startswith("client host")
    assert "ttl_mismatch" not in j["resets"][0]["facts"]


# ------------------------------------------------------------------- handshake
@pytest.mark.parametrize("vantage", ["client", "server"])
def test_accept_queue_abort_in_a_burst(tmp_path: Path, vantage: str) -> None:
    out: list = []
    for i in range(5):
        w = Wire(out, vantage, 40020 + i, T0 + 0.001 * i)
        w.handshake()
        w.pkt(False, RST, dt=0.0001 if vantage == "server" else RTT / 2)
    resets = analyze(tmp_path, out)["resets"]
    assert len(resets) == 5
    for r in resets:
        assert {"rst_after_handshake", "concurrent_connects"} <= set(r["facts"])
        assert (r["cause"], r["rule"]) == ("backlog_overflow", "accept_queue_abort_burst")


# ---------------------------------------------------------------------- crash
def test_mass_active_reset_with_requests_in_flight_is_a_crash(tmp_path: Path) -> None:
    out: list = []
    for i in range(3):
        w = Wire(out, "server", 40030 + i, T0 + 0.3 * i)
        w.handshake()
        w.pkt(True, PSH | ACK, REQ, dt=0.001)
        w.pkt(False, ACK, dt=0.0001)
        w.t = T0 + 2.0 + 0.0001 * i
        w.pkt(False, RST | ACK, dt=0.0, opts=TS_OPT)
    resets = analyze(tmp_path, out)["resets"]
    assert [r["cause"] for r in resets] == ["backend_crash"] * 3
    assert all({"mass_reset", "active_rst"} <= set(r["facts"]) for r in resets)


def test_rst_answering_inflight_data_is_one_reset(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "server", 40040)
    w.handshake()
    w.pkt(False, RST, dt=0.0001)
    w.pkt(True, PSH | ACK, REQ, dt=0.0001)
    w.pkt(False, RST, dt=0.0001, seq=w.sseq)
    (r,) = analyze(tmp_path, out)["resets"]
    assert r["rst_packets"] == 2


# ------------------------------------------------------------- idle timeout
def test_idle_timeout_from_idle_closes_and_race_gaps(tmp_path: Path) -> None:
    out: list = []
    idle_close(out, "client", 40050, T0, 2.0)
    idle_close(out, "client", 40051, T0 + 10, 2.5)
    race(out, "client", 40052, T0 + 20, idle_s=2.2)
    j = analyze(tmp_path, out)
    s = j["summary"]
    assert s["server_idle_timeout_basis"] == "idle closes"
    assert s["server_idle_timeout_min_s"] == pytest.approx(2.0, abs=0.01)
    assert s["server_idle_timeout_max_s"] == pytest.approx(2.5, abs=0.01)
    assert s["server_idle_timeout_samples"] == 3  # the raced FIN is an idle close too
    assert j["resets"][0]["cause"] == "keepalive_race"
    assert any("keepalive_timeout" in rec for rec in s["recommendations"])


def test_idle_timeout_from_raced_requests_alone(tmp_path: Path) -> None:
    out: list = []
    for i, gap in enumerate((5.9, 5.95)):
        w = Wire(out, "server", 40060 + i, T0 + 20 * i)
        w.handshake()
        w.exchange()
        w.pkt(True, PSH | ACK, REQ, dt=gap)
        w.pkt(False, RST | ACK, dt=0.0002, opts=TS_OPT)
    s = analyze(tmp_path, out)["summary"]
    assert s["server_idle_timeout_basis"] == "raced requests"
    assert s["server_idle_timeout_s"] == pytest.approx(5.925, abs=0.01)


# ------------------------------------------------------------------- findings
def test_crossing_fin_is_not_a_premature_close(tmp_path: Path) -> None:
    out: list = []
    race(out, "client", 40070)
    assert analyze(tmp_path, out)["findings"] == []


def test_fin_after_a_received_request_is_a_premature_close(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 40071)
    w.handshake()
    w.pkt(True, PSH | ACK, REQ, dt=0.01)
    w.pkt(False, ACK, dt=RTT)
    w.pkt(False, FIN | ACK, dt=0.5)
    w.pkt(True, FIN | ACK, dt=0.001)
    j = analyze(tmp_path, out)
    assert [(f["cause"], f["count"]) for f in j["findings"]] == [("premature_close", 1)]


def test_nginx_fin_after_the_backend_fin_is_not_a_timeout(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 40072)
    w.handshake()
    w.pkt(True, PSH | ACK, REQ, dt=0.01)
    w.pkt(False, ACK, dt=RTT)
    w.pkt(False, FIN | ACK, dt=1.5)
    w.pkt(True, FIN | ACK, dt=0.01)
    causes = [f["cause"] for f in analyze(tmp_path, out)["findings"]]
    assert "upstream_timeout" not in causes and causes == ["premature_close"]


def test_nginx_giving_up_is_an_upstream_timeout(tmp_path: Path) -> None:
    out: list = []
    w = Wire(out, "client", 40073)
    w.handshake()
    w.pkt(True, PSH | ACK, REQ, dt=0.01)
    w.pkt(False, ACK, dt=RTT)
    w.pkt(True, FIN | ACK, dt=3.0)
    w.pkt(False, ACK, dt=RTT)
    assert [f["cause"] for f in analyze(tmp_path, out)["findings"]] == ["upstream_timeout"]
