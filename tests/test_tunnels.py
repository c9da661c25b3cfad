"""Tunnels (pcapreset.capture.tunnels, via the decoder): synthetic frames, one header fact
per test, then real captures."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import ether, ipv4, ipv6, pcap_bytes, tcp, write
from test_decode import PAY, T0, check4, check6, decode, seg4, seg6

from pcapreset.capture.decode import MAX_NESTING, Decoder
from pcapreset.capture.tcp import RST

OUTER4 = ("203.0.113.1", "203.0.113.2")
OUTER6 = ("2001:db8:ffff::1", "2001:db8:ffff::2")


# ------------------------------------------------------------------ builders
def gre(proto: int, body: bytes, key: int | None = None, seq: int | None = None,
        csum: bool = False, version: int = 0, routing: bool = False) -> bytes:  # fmt: skip
    flags = (0x8000 if csum else 0) | (0x4000 if routing else 0)
    flags |= (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0) | version
    out = struct.pack(">HH", flags, proto)
    if csum or routing:
        out += b"\0\0\0\0"
    if key is not None:
        out += struct.pack(">I", key)
    if seq is not None:
        out += struct.pack(">I", seq)
    return out + body


def erspan2(frame: bytes, session: int = 5) -> bytes:
    return struct.pack(">HHI", 0x1000 | 7, session, 18) + frame


def erspan3(frame: bytes, ft: int = 0, sub: bool = False) -> bytes:
    word3 = (0x1234 << 16) | (ft << 10) | (3 << 4) | int(sub)
    out = struct.pack(">HHII", 0x2000 | 7, 9, 0xDEADBEEF, word3)
    return out + (b"\x11" * 8 if sub else b"") + frame


def udp(dport: int, body: bytes, sport: int = 51234) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(body), 0) + body


def vxlan(frame: bytes, vni: int = 77, flags: int = 0x08) -> bytes:
    return struct.pack(">BBHI", flags, 0, 0, vni << 8) + frame


def geneve(body: bytes, proto: int = 0x6558, opts: bytes = b"", version: int = 0) -> bytes:
    assert len(opts) % 4 == 0
    return struct.pack(">BBHI", version << 6 | len(opts) // 4, 0, proto, 99 << 8) + opts + body


def dot11(payload: bytes, ethertype: int = 0x0800, qos: bool = True) -> bytes:
    """An 802.11 data frame to the DS (QoS data when ``qos``), LLC/SNAP, payload."""
    fc = bytes([0x88 if qos else 0x08, 0x01])
    hdr = fc + b"\0\0" + b"\x02" * 18 + b"\x10\x00" + (b"\0\0" if qos else b"")
    return hdr + b"\xaa\xaa\x03\0\0\0" + struct.pack(">H", ethertype) + payload


def over4(l4: bytes, proto: int, **kw) -> bytes:
    return ether(ipv4(*OUTER4, l4, proto=proto, ttl=250, ipid=9, **kw))


def over6(l4: bytes, nh: int) -> bytes:
    return ether(ipv6(*OUTER6, l4, nh=nh), 0x86DD)


def run(tmp_path: Path, frames: list[bytes], kernel: bool | None = None):
    recs = [(T0 + i, f) for i, f in enumerate(frames)]
    p = write(tmp_path / "t.pcap", pcap_bytes(recs, linktype=1))
    return decode(p) if kernel is None else _decode_with(p, kernel)


def _decode_with(p: Path, kernel: bool):
    from pcapreset.capture.sources import CaptureReader
    from pcapreset.capture.tcp import concat

    dec = Decoder(kernel=kernel)
    b = concat([dec.decode(fb) for fb in CaptureReader(str(p)).batches()])
    return b, dec.stats, dec


def accounted(st) -> int:
    return st.tcp + st.non_ip + st.non_tcp + sum(st.undecodable.values()) + st.ip_fragments


# ---------------------------------------------------------------- each tunnel
CASES4 = [
    ("GRE IPv4", over4(gre(0x0800, seg4()), 47), "GRE"),
    ("GRE key+seq+csum", over4(gre(0x0800, seg4(), key=7, seq=3, csum=True), 47), "GRE"),
    ("GRE TEB", over4(gre(0x6558, ether(seg4(), vlans=[(0x8100, 5)])), 47), "GRE"),
    ("GRE over IPv6", over6(gre(0x0800, seg4()), 47), "GRE"),
    ("ERSPAN I", over4(gre(0x88BE, ether(seg4())), 47), "ERSPAN I"),
    ("ERSPAN II", over4(gre(0x88BE, erspan2(ether(seg4())), seq=1), 47), "ERSPAN II"),
    ("ERSPAN III", over4(gre(0x22EB, erspan3(ether(seg4())), seq=1), 47), "ERSPAN III"),
    ("ERSPAN III subheader", over4(gre(0x22EB, erspan3(ether(seg4()), sub=True)), 47),
     "ERSPAN III"),
    ("ERSPAN III frame type IP", over4(gre(0x22EB, erspan3(seg4(), ft=2)), 47), "ERSPAN III"),
    ("VXLAN", over4(udp(4789, vxlan(ether(seg4()))), 17), "VXLAN"),
    ("VXLAN 8472", over4(udp(8472, vxlan(ether(seg4()))), 17), "VXLAN"),
    ("VXLAN over IPv6", over6(udp(4789, vxlan(ether(seg4()))), 17), "VXLAN"),
    ("Geneve Ethernet", over4(udp(6081, geneve(ether(seg4()))), 17), "Geneve"),
    ("Geneve options", over4(udp(6081, geneve(ether(seg4()), opts=b"\x01\x02\x03\x01" * 3)), 17),
     "Geneve"),
    ("Geneve IPv4", over4(udp(6081, geneve(seg4(), 0x0800)), 17), "Geneve"),
    ("Aruba 802.11 QoS", over4(gre(0x8200, dot11(seg4())), 47), "GRE (Aruba 802.11)"),
    ("Aruba 802.11", over4(gre(0x8200, dot11(seg4(), qos=False)), 47), "GRE (Aruba 802.11)"),
]  # fmt: skip


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "numpy"])
@pytest.mark.parametrize("name,frame,kind", CASES4, ids=[c[0] for c in CASES4])
def test_inner_ipv4_tcp(tmp_path, name, frame, kind, kernel):
    b, st, dec = run(tmp_path, [frame], kernel)
    check4(b, dec)  # the inner packet's addresses, ports, TTL, IP ID, payload
    assert (st.frames, st.tcp, st.non_tcp, st.undecodable) == (1, 1, 0, {})
    assert st.tunnels == {kind: 1} and st.linktypes == {1: 1}


@pytest.mark.parametrize(
    "name,frame",
    [
        ("GRE IPv6", over4(gre(0x86DD, seg6()), 47)),
        ("VXLAN IPv6", over6(udp(4789, vxlan(ether(seg6(), 0x86DD))), 17)),
        ("Geneve IPv6", over4(udp(6081, geneve(seg6(), 0x86DD)), 17)),
        ("ERSPAN II IPv6", over6(gre(0x88BE, erspan2(ether(seg6(), 0x86DD)), seq=9), 47)),
    ],
)
def test_inner_ipv6_tcp(tmp_path, name, frame):
    b, st, dec = run(tmp_path, [frame])
    check6(b, dec)
    assert st.tcp == 1 and not st.undecodable


def test_nested_tunnels_and_the_nesting_bound(tmp_path):
    two = over4(gre(0x0800, ipv4(*OUTER4, udp(4789, vxlan(ether(seg4()))), proto=17)), 47)
    b, st, dec = run(tmp_path, [two])
    check4(b, dec)
    assert st.tunnels == {"GRE": 1, "VXLAN": 1}
    deep = seg4()
    for _ in range(MAX_NESTING + 1):
        deep = ipv4(*OUTER4, gre(0x0800, deep), proto=47)
    b, st, _ = run(tmp_path, [ether(deep)])
    assert len(b) == 0 and st.tcp == 0
    assert st.undecodable == {f"tunnels nested more than {MAX_NESTING} deep": 1}
    assert accounted(st) == st.frames == 1


def test_frame_order_and_accounting_with_tunnels(tmp_path):
    rst = ipv4("10.1.1.1", "10.1.1.2", tcp(3000, 41000, 55, 0, RST, 0), ipid=0)
    frames = [
        ether(seg4()),
        over4(udp(4789, vxlan(ether(rst))), 17),
        over4(udp(53, b"\0" * 12), 17),  # DNS: not a tunnel
        over4(gre(0x880B, b"\xff\x03\x00\x21" + seg4(), key=1, version=1), 47),  # PPTP
        over4(gre(0x8847, b"\0\0\x01\xff" + seg4()), 47),  # MPLS in GRE
        over4(gre(0x0800, seg4(), routing=True), 47),
        over4(udp(4789, vxlan(ether(seg4()), flags=0)), 17),
        over4(udp(4789, b"\x08\0\0"), 17),  # cut short
        over4(udp(6081, geneve(seg4(), 0x88CC)), 17),
        over4(udp(6081, geneve(seg4(), version=1)), 17),
        over4(gre(0x22EB, erspan3(ether(seg4()), ft=5)), 47),
        over4(gre(0x88BE, b"\x10\x00", seq=2), 47),  # ERSPAN II cut short
        over4(udp(4789, vxlan(ether(b"\0" * 28, 0x0806))), 17),  # ARP inside VXLAN
        over4(udp(6081, geneve(ipv4("10.0.0.1", "10.0.0.2", b"\0" * 8, proto=1), 0x0800)), 17),
        over4(gre(0x0800, seg4())[:20], 47, frag_off=1480),  # a later piece of a GRE packet
        ether(seg4()),
    ]
    for kernel in (True, False):
        b, st, dec = run(tmp_path, frames, kernel)
        assert b.frame.tolist() == [1, 2, 16]
        assert dec.book.endpoint(int(b.src[1])) == "10.1.1.1:3000" and int(b.flags[1]) == RST
        assert st.non_tcp == 2 and st.non_ip == 1 and st.ip_fragments == 1
        assert st.undecodable == {
            "ERSPAN III frame type not decoded": 1,
            "ERSPAN header cut short": 1,
            "GRE protocol 0x8847 not decoded": 1,
            "GRE version 1 (PPTP) not decoded": 1,
            "GRE with source routing not decoded": 1,
            "Geneve header with an unknown version": 1,
            "Geneve protocol 0x88cc not decoded": 1,
            "VXLAN header cut short": 1,
            "VXLAN header without the VNI flag": 1,
        }
        assert accounted(st) == st.frames == len(frames)
        assert st.tunnels == {"VXLAN": 2, "Geneve": 1}


def test_inner_frame_ends_with_the_outer_ip_packet(tmp_path):
    """Ethernet padding after the outer IP packet is not read as inner bytes,
    and a snaplen cut inside the tunnel keeps the inner headers."""
    rst = ipv4("10.1.1.1", "10.1.1.2", tcp(3000, 41000, 55, 0, RST, 0), ipid=0)
    padded = over4(gre(0x0800, rst), 47) + b"\xee" * 30
    b, st, _ = run(tmp_path, [padded])
    assert int(b.plen[0]) == 0 and int(b.pcap[0]) == 0
    cut = over4(gre(0x6558, ether(seg4())), 47)
    p = write(tmp_path / "s.pcap", pcap_bytes([(T0, cut[:-10], len(cut))], linktype=1))
    b, st, _ = decode(p)
    assert int(b.plen[0]) == len(PAY) and int(b.pcap[0]) == len(PAY) - 10
    assert st.snap_truncated == 1


def test_802_11_link_type(tmp_path):
    frames = [dot11(seg4()), b"\x80\x00" + b"\0" * 30, dot11(seg4())[:26]]  # data, beacon, short
    p = write(tmp_path / "w.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(frames)], 105))
    b, st, dec = decode(p)
    assert len(b) == 1 and st.non_ip == 1
    assert st.undecodable == {"link header cut short": 1}
    assert dec.book.endpoint(int(b.src[0])) == "192.0.2.1:41000"


def test_reference_decoder_agrees(tmp_path):
    """The dpkt reference (tests/reference_decoder.py) opens the same tunnels."""
    from reference_decoder import read

    frames = [c[1] for c in CASES4]
    p = write(tmp_path / "all.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(frames)]))
    ref = read(str(p))
    b, _, dec = decode(p)
    assert len(ref.packets) == len(b) == len(frames)
    for i, pk in enumerate(ref.packets):
        got = (dec.book.endpoint(int(b.src[i])), dec.book.endpoint(int(b.dst[i])), int(b.seq[i]),
               int(b.plen[i]), int(b.ttl[i]), int(b.ipid[i]), int(b.frame[i]))  # fmt: skip
        assert got == (pk.src, pk.dst, pk.seq, pk.plen, pk.ttl, pk.ipid, pk.frame_no)


# ------------------------------------------------------ real captures (corpus)
# Reference counts from tshark 4.x: `tshark -r F -Y tcp | wc -l`,
# `-Y tcp.flags.reset==1`, and the number of distinct tcp.stream values.
CORPUS_TUNNELS = [
    # two ERSPAN II sessions (GRE 0x88BE with sequence numbers) mirroring one
    # host: most packets arrive twice (pcapreset.capture.dedup analyses them once)
    ("suricata-verify__bug-5437-02__input.pcap", 60, 4, "ERSPAN II", ["captured_twice"]),
    # an Aruba access point's GRE (0x8200) carrying 802.11 QoS data frames, in a VLAN
    ("zeek__tunnels__gre-aruba.pcap", 2407, 2, "GRE (Aruba 802.11)", []),
]


@pytest.mark.parametrize(
    "name,tcp_pkts,rst_pkts,kind,more", CORPUS_TUNNELS, ids=[c[0] for c in CORPUS_TUNNELS]
)
def test_corpus_tunnels(name, tcp_pkts, rst_pkts, kind, more):
    from conftest import CORPUS

    from pcapreset.api import analyze
    from pcapreset.capture.sources import CaptureReader
    from pcapreset.capture.tcp import concat

    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"public corpus not found at {CORPUS}")
    dec = Decoder(dedup=False)
    b = concat([dec.decode(fb) for fb in CaptureReader(str(path)).batches()])
    st = dec.stats
    assert st.tcp == len(b) == tcp_pkts == st.frames
    assert int(((b.flags & RST) != 0).sum()) == rst_pkts
    assert st.tunnels == {kind: tcp_pkts} and not st.undecodable
    rep = analyze(str(path))
    cap = rep.capture_json()
    assert cap["tcp_packets"] == tcp_pkts
    assert [w["kind"] for w in cap["warnings"]] == ["decapsulated", *more]
    assert rep.resets  # the tunnels' RSTs are reset events


def test_real_vxlan_capture():
    """tests/captures/vxlan-underlay.pcap (made by scripts/test-captures on a
    VXLAN overlay in two namespaces): tshark counts 38 frames, 26 TCP packets
    inside the tunnel in 4 streams, 4 with RST (3 server RSTs after a response,
    one RST,ACK refusing a SYN)."""
    from pcapreset.api import analyze

    path = Path(__file__).parent / "captures" / "vxlan-underlay.pcap"
    b, st, _ = decode(path)
    assert (st.frames, st.tcp, int(((b.flags & RST) != 0).sum())) == (38, 26, 4)
    assert st.tunnels == {"VXLAN": 38} and not st.undecodable
    out = analyze(str(path)).to_json()
    assert out["flows"] == 4
    got = sorted((r["cause"], r["sender"], r["server"]) for r in out["resets"])
    assert got == [("abortive_close", "server", "192.168.200.2:3000")] * 3 + [
        ("connection_refused", "server", "192.168.200.2:3001")
    ]


# tcpdump's GSO test captures (corpus malformed/: one oversized packet each);
# inner TCP payload length from tshark's tcp.len
GSO = [
    ("tcpdump__gso-ipv4-vxlan-ipv4.pcap", "VXLAN", 6990),
    ("tcpdump__gso-ipv4-vxlan-ipv6.pcap", "VXLAN", 4134),
    ("tcpdump__gso-ipv6-vxlan-ipv4.pcap", "VXLAN", 6890),
    ("tcpdump__gso-ipv6-vxlan-ipv6.pcap", "VXLAN", 4074),
    ("tcpdump__gso-ipv4-geneve-ipv4.pcap", "Geneve", 6990),
    ("tcpdump__gso-ipv4-geneve-ipv6.pcap", "Geneve", 4134),
    ("tcpdump__gso-ipv6-geneve-ipv4.pcap", "Geneve", 6890),
    ("tcpdump__gso-ipv6-geneve-ipv6.pcap", "Geneve", 6790),
]


@pytest.mark.parametrize("name,kind,tcp_len", GSO, ids=[g[0] for g in GSO])
def test_corpus_gso_tunnels(name, kind, tcp_len):
    from conftest import MALFORMED

    path = MALFORMED / name
    if not path.exists():
        pytest.skip(f"malformed corpus not found at {MALFORMED}")
    b, st, _ = decode(path)
    assert (st.frames, st.tcp, st.tunnels, st.undecodable) == (1, 1, {kind: 1}, {})
    assert int(b.plen[0]) == tcp_len
