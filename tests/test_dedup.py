"""Packets captured twice (pcapreset.capture.dedup, run by the decoder): synthetic copies,
then a real Docker-style DNAT capture taken with `tcpdump -i any`."""

from __future__ import annotations

from pathlib import Path

from conftest import ether, ipv4, ipv6, pcap_bytes, tcp, write

from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CaptureReader
from pcapreset.capture.tcp import ACK, PSH, RST, SYN, concat

T0 = 1_700_000_000.0
CLI, VIP, BE = "10.0.0.2", "192.0.2.10", "172.17.0.5"
TS_OPT = b"\x01\x01\x08\x0a" + b"\x00\x00\x00\x07" + b"\x00\x00\x00\x09"


def seg(src, sport, dst, dport, seq, ack, flags, ipid, ttl=64, payload=b"", opts=TS_OPT):
    return ether(ipv4(src, dst, tcp(sport, dport, seq, ack, flags, 500, opts, payload),
                      ipid=ipid, ttl=ttl))  # fmt: skip


def run(tmp_path: Path, recs: list[tuple[float, bytes]], chunk: int = 1 << 22, dedup=True):
    p = write(tmp_path / "d.pcap", pcap_bytes(recs))
    dec = Decoder(dedup=dedup)
    b = concat([dec.decode(fb) for fb in CaptureReader(str(p), chunk=chunk).batches()])
    return b, dec


def frames(b) -> list[int]:
    return [int(f) & ((1 << 40) - 1) for f in b.frame]


def test_same_packet_twice_is_kept_once(tmp_path):
    a = seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, payload=b"GET / HTTP/1.1\r\n\r\n")
    other = seg(CLI, 40001, BE, 3000, 5, 6, ACK, 8)
    recs = [(T0, a), (T0 + 20e-6, a), (T0 + 30e-6, other), (T0 + 40e-6, a)]  # 3 interfaces
    b, dec = run(tmp_path, recs)
    assert frames(b) == [1, 3]
    st = dec.stats
    assert (st.tcp, st.copies, st.translated) == (4, 2, 0)
    b, dec = run(tmp_path, recs, dedup=False)
    assert len(b) == 4 and dec.stats.copies == 0


def test_retransmissions_and_look_alikes_are_kept(tmp_path):
    pay = b"x" * 100
    a = seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, payload=pay)
    recs = [
        (T0, a),
        (T0 + 0.0002, seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 8, payload=pay)),  # new ID
        (T0 + 0.005, a),  # same packet 5 ms later: a retransmission, not a copy
        (T0 + 0.0051, seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, ttl=60, payload=pay)),
        (T0 + 0.0052, seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, payload=b"y" * 100)),
        (T0 + 0.0053, seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, payload=pay, opts=b"")),
        (T0 + 0.0054, seg("10.9.9.9", 1, BE, 3001, 100, 200, ACK | PSH, 7, payload=pay)),
    ]
    b, dec = run(tmp_path, recs)
    assert frames(b) == [1, 2, 3, 4, 5, 6, 7]  # TTL -4, payload, options, both ends differ
    assert dec.stats.copies == dec.stats.translated == 0


def test_id_zero_packets_need_evidence_of_copies(tmp_path):
    """A closed socket answers a segment and the FIN after it with two equal bare
    RSTs (Linux: IP ID 0): real packets, kept, until the capture has shown copies."""
    rst = seg(BE, 3000, CLI, 40000, 300, 0, RST, 0, opts=b"")
    b, dec = run(tmp_path, [(T0, rst), (T0 + 0.0002, rst)])
    assert len(b) == 2 and dec.stats.copies == 0
    syn = seg(CLI, 40002, BE, 3000, 1, 0, SYN, 0, opts=b"\x02\x04\x05\xb4")
    data = seg(CLI, 40000, BE, 3000, 9, 300, ACK, 77)
    recs = [(T0, data), (T0 + 1e-5, data), (T0 + 1, rst), (T0 + 1.0002, rst)]
    b, dec = run(tmp_path, recs)
    assert frames(b) == [1, 3] and dec.stats.copies == 2
    b, dec = run(tmp_path, [(T0, syn), (T0 + 1e-5, syn)])  # a SYN tells too, whatever its ID
    assert frames(b) == [1] and dec.stats.copies == 1


def test_ipv6_copies(tmp_path):
    s = ether(ipv6("fd00::1", "fd00::2", tcp(40000, 3000, 1, 0, SYN, 500, b"\x02\x04\x05\xa0")),
              0x86DD)  # fmt: skip
    b, dec = run(tmp_path, [(T0, s), (T0 + 5e-6, s)])
    assert frames(b) == [1] and dec.stats.copies == 1


def dnat_conversation() -> list[tuple[float, bytes]]:
    """A DNAT seen with -i any on the NAT host: requests before (to VIP:8080)
    then after translation (to BE:3000, TTL - 1); replies before un-translation
    (from BE:3000) then after (from VIP:8080, TTL - 1)."""
    out, t = [], T0

    def fwd(seq, ack, flags, ipid, payload=b""):
        nonlocal t
        out.append((t, seg(CLI, 40000, VIP, 8080, seq, ack, flags, ipid, 64, payload)))
        out.append((t + 3e-5, seg(CLI, 40000, BE, 3000, seq, ack, flags, ipid, 63, payload)))
        t += 0.001

    def rev(seq, ack, flags, ipid, payload=b""):
        nonlocal t
        out.append((t, seg(BE, 3000, CLI, 40000, seq, ack, flags, ipid, 64, payload)))
        out.append((t + 3e-5, seg(VIP, 8080, CLI, 40000, seq, ack, flags, ipid, 63, payload)))
        t += 0.001

    fwd(1000, 0, SYN, 11)
    rev(5000, 1001, SYN | ACK, 0)
    fwd(1001, 5001, ACK, 12)
    fwd(1001, 5001, ACK | PSH, 13, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rev(5001, 1028, ACK | PSH, 21, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    rev(5039, 1028, RST | ACK, 22)
    return out


def test_dnat_copies_keep_the_published_side(tmp_path):
    """Both directions keep the addresses outside the translation: the published
    VIP:8080 that nginx connects to and names in its error.log."""
    recs = dnat_conversation()
    b, dec = run(tmp_path, recs)
    ep = dec.book.endpoint
    tuples = {(ep(int(s)), ep(int(d))) for s, d in zip(b.src, b.dst, strict=True)}
    assert tuples == {(f"{CLI}:40000", f"{VIP}:8080"), (f"{VIP}:8080", f"{CLI}:40000")}
    assert len(b) == len(recs) // 2
    st = dec.stats
    assert (st.copies, st.translated) == (0, len(recs) // 2)
    want = {(dec.book.id_of(VIP) << 16 | 8080, dec.book.id_of(BE) << 16 | 3000)}
    assert set(st.translated_pairs) == want
    # across batch boundaries (chunks of 2-3 frames, so copies fall into the next
    # batch): the same rows are dropped, and no row keeps the inside tuple: the
    # translation of the requests (the SYN's copies) tells the replies' one, and
    # replies whose outside copy is in the next batch are given the outside tuple
    for chunk, inside in ((200, []), (250, []), (300, []), (350, []), (400, [])):
        b2, dec2 = run(tmp_path, recs, chunk=chunk)
        assert dec2.stats.copies + dec2.stats.translated == len(recs) // 2
        assert len(b2) == len(recs) // 2
        ep = dec2.book.endpoint
        got = [f for f, s in zip(frames(b2), b2.src, strict=True) if ep(int(s)) == f"{BE}:3000"]
        assert got == inside, chunk


def test_reset_events_are_not_doubled(tmp_path):
    from pcapreset.api import analyze

    p = write(tmp_path / "nat.pcap", pcap_bytes(dnat_conversation()))
    out = analyze(str(p)).to_json()
    assert out["flows"] == 1 and len(out["resets"]) == 1
    assert out["resets"][0]["server"] == f"{VIP}:8080"
    w = [w for w in out["capture"]["warnings"] if w["kind"] == "captured_twice"]
    assert len(w) == 1 and w[0]["count"] == 6
    assert f"{VIP}:8080 (= {BE}:3000)" in w[0]["message"]


def test_real_dnat_capture_with_i_any():
    """tests/captures/dnat-any.pcap (scripts/test-captures): Docker-style DNAT
    10.201.1.1:8080 -> 172.31.0.2:3000 behind a bridge, `tcpdump -i any` on the
    NAT host. tshark: 78 frames, 12 SYNs and 12 RSTs, i.e. 26 packets seen
    three times (4 SYNs, 4 RSTs: three connections closed by the server with
    RST, one refused)."""
    from pcapreset.api import analyze

    path = Path(__file__).parent / "captures" / "dnat-any.pcap"
    out = analyze(str(path)).to_json()
    cap = out["capture"]
    assert (cap["packets"], cap["tcp_packets"]) == (78, 78)
    w = {w["kind"]: w for w in cap["warnings"]}
    assert w["captured_twice"]["count"] == 52
    assert "before and after address translation" in w["captured_twice"]["message"]
    assert out["flows"] == 4
    got = sorted((r["cause"], r["client"].split(":")[0], r["server"]) for r in out["resets"])
    assert got == [("abortive_close", "10.201.1.2", "10.201.1.1:8080")] * 3 + [
        ("connection_refused", "10.201.1.2", "10.201.1.1:8081")
    ]
    assert "10.201.1.1:8080 (= 172.31.0.2:3000)" in w["captured_twice"]["message"]
    assert out["findings"] == []  # no backlog burst from the SYN copies


def test_snat_copies_keep_the_public_source(tmp_path):
    """An SNAT seen with -i any: requests before (private source) then after
    (public source), replies before (to the public address) then after."""
    pub, srv = "203.0.113.5", "198.51.100.80"
    recs = []
    for k, (fwd, flags, ipid) in enumerate([(True, SYN, 5), (False, SYN | ACK, 0), (True, ACK, 6)]):
        t = T0 + k * 0.001
        if fwd:
            recs.append((t, seg(CLI, 40000, srv, 80, 7 + (flags == ACK), 0, flags, ipid, 64)))
            recs.append(
                (t + 2e-5, seg(pub, 40000, srv, 80, 7 + (flags == ACK), 0, flags, ipid, 63))
            )
        else:
            recs.append((t, seg(srv, 80, pub, 40000, 90, 8, flags, ipid, 60)))
            recs.append((t + 2e-5, seg(srv, 80, CLI, 40000, 90, 8, flags, ipid, 59)))
    b, dec = run(tmp_path, recs)
    ep = dec.book.endpoint
    tuples = {(ep(int(s)), ep(int(d))) for s, d in zip(b.src, b.dst, strict=True)}
    assert tuples == {(f"{pub}:40000", f"{srv}:80"), (f"{srv}:80", f"{pub}:40000")}
    assert dec.stats.translated == 3


def test_each_file_is_filtered_on_its_own(tmp_path):
    """Two files analysed together (their batches interleave in the decoder): a
    packet in both is not a copy; within each file, copies still are."""
    from pcapreset.api import analyze

    a = seg(CLI, 40000, BE, 3000, 100, 200, ACK | PSH, 7, payload=b"x")
    p1 = write(tmp_path / "one.pcap", pcap_bytes([(T0, a), (T0 + 1e-5, a)]))
    p2 = write(tmp_path / "two.pcap", pcap_bytes([(T0 + 2e-5, a)]))
    dec = Decoder()
    rows = sum(
        len(dec.decode(fb))
        for i, p in enumerate((p1, p2))
        for fb in CaptureReader(str(p), file_index=i).batches()
    )
    assert rows == 2 and dec.stats.copies == 1
    w = analyze([str(p1), str(p2)]).to_json()["capture"]["warnings"]
    assert [x["count"] for x in w if x["kind"] == "captured_twice"] == [1]


def test_two_connections_of_one_host_are_not_copies(tmp_path):
    """Generated traffic can give two connections the same ISN and IP ID: a
    different port at the same address is another connection, not a NAT."""
    syns = [seg(CLI, 40000 + i, BE, 3000, 1, 0, SYN, 9, opts=b"\x02\x04\x05\xb4") for i in range(3)]
    b, dec = run(tmp_path, [(T0 + i * 1e-4, f) for i, f in enumerate(syns)])
    assert frames(b) == [1, 2, 3] and dec.stats.copies == dec.stats.translated == 0
