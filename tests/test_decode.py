"""Decoder (pcapreset.capture.decode) on synthetic packets: one link-type / header fact per test."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import (
    ether,
    ext_dst,
    ext_frag,
    ext_hbh,
    ipv4,
    ipv6,
    null,
    pcap_bytes,
    pppoe,
    sll,
    sll2,
    tcp,
    write,
)

from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CaptureReader
from pcapreset.capture.tcp import ACK, PSH, RST, SYN, DecodeStats, TcpBatch, concat
from pcapreset.capture.tcp import parse_tcp_options as parse_opts

T0 = 1_700_000_000.0
PAY = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


def decode(path: Path, chunk: int = 1 << 22) -> tuple[TcpBatch, DecodeStats, Decoder]:
    """Every TCP row (the same packet in several frames too: tests/test_dedup.py)."""
    dec = Decoder(dedup=False)
    r = CaptureReader(str(path), chunk=chunk)
    out = [dec.decode(fb) for fb in r.batches()]
    return concat(out), dec.stats, dec


def one(tmp_path: Path, frame: bytes, linktype: int, wirelen: int | None = None):
    rec = (T0, frame) if wirelen is None else (T0, frame, wirelen)
    p = write(tmp_path / f"lt{linktype}.pcap", pcap_bytes([rec], linktype=linktype))
    return decode(p)


def payload(b: TcpBatch, i: int = 0) -> bytes:
    o = int(b.poff[i])
    return bytes(b.bufs[int(b.bufidx[i])][o : o + int(b.pcap[i])])


def seg4(**kw) -> bytes:
    return ipv4(
        "192.0.2.1", "198.51.100.7", tcp(41000, 3000, 123456789, 987654321, ACK | PSH, 512,
                                         payload=PAY), ttl=61, ipid=0xBEEF, **kw
    )  # fmt: skip


def seg6(ext=()) -> bytes:
    return ipv6(
        "2001:db8::1", "2001:db8::2", tcp(41000, 443, 5, 6, ACK, 100, payload=PAY), hlim=63, ext=ext
    )


def check4(b: TcpBatch, dec: Decoder) -> None:
    assert len(b) == 1
    assert dec.book.endpoint(int(b.src[0])) == "192.0.2.1:41000"
    assert dec.book.endpoint(int(b.dst[0])) == "198.51.100.7:3000"
    assert (int(b.seq[0]), int(b.ack[0]), int(b.flags[0]), int(b.win[0])) == (
        123456789, 987654321, ACK | PSH, 512,
    )  # fmt: skip
    assert (int(b.ttl[0]), int(b.ipid[0]), int(b.plen[0])) == (61, 0xBEEF, len(PAY))
    assert payload(b) == PAY
    assert b.ts[0] == T0


def check6(b: TcpBatch, dec: Decoder) -> None:
    assert len(b) == 1
    assert dec.book.endpoint(int(b.src[0])) == "[2001:db8::1]:41000"
    assert dec.book.endpoint(int(b.dst[0])) == "[2001:db8::2]:443"
    assert (int(b.ttl[0]), int(b.ipid[0]), int(b.plen[0])) == (63, -1, len(PAY))
    assert payload(b) == PAY


# ---------------------------------------------------------------- link types
@pytest.mark.parametrize(
    "name,frame,lt",
    [
        ("ethernet", ether(seg4()), 1),
        ("802.1Q", ether(seg4(), vlans=[(0x8100, 10)]), 1),
        ("QinQ 802.1ad", ether(seg4(), vlans=[(0x88A8, 100), (0x8100, 10)]), 1),
        ("QinQ old 0x9100", ether(seg4(), vlans=[(0x9100, 100), (0x8100, 10)]), 1),
        ("PPPoE", ether(pppoe(seg4()), ethertype=0x8864), 1),
        ("FDDI LLC/SNAP", b"\x50" + b"\x02" * 12 + b"\xaa\xaa\x03\0\0\0\x08\x00" + seg4(), 10),
        ("SLL", sll(seg4()), 113),
        ("SLL2", sll2(seg4()), 276),
        ("NULL little-endian", null(seg4(), 2, "<"), 0),
        ("NULL big-endian", null(seg4(), 2, ">"), 0),
        ("LOOP", null(seg4(), 2, ">"), 108),
        ("RAW 12", seg4(), 12),
        ("RAW 14", seg4(), 14),
        ("RAW 101", seg4(), 101),
        ("IPV4 228", seg4(), 228),
    ],
)
def test_link_types_ipv4(tmp_path, name, frame, lt):
    b, st, dec = one(tmp_path, frame, lt)
    check4(b, dec)
    assert st.tcp == 1 and st.frames == 1 and st.linktypes == {lt: 1}


@pytest.mark.parametrize(
    "name,frame,lt",
    [
        ("ethernet", ether(seg6(), 0x86DD), 1),
        ("802.1Q", ether(seg6(), 0x86DD, vlans=[(0x8100, 7)]), 1),
        ("PPPoE", ether(pppoe(seg6(), 0x0057), ethertype=0x8864), 1),
        ("SLL", sll(seg6(), 0x86DD), 113),
        ("SLL2", sll2(seg6(), 0x86DD), 276),
        ("NULL LE (BSD AF_INET6=24)", null(seg6(), 24, "<"), 0),
        ("NULL BE (FreeBSD 28)", null(seg6(), 28, ">"), 0),
        ("NULL LE (macOS 30)", null(seg6(), 30, "<"), 0),
        ("LOOP", null(seg6(), 24, ">"), 108),
        ("RAW 101", seg6(), 101),
        ("RAW 12", seg6(), 12),
        ("IPV6 229", seg6(), 229),
    ],
)
def test_link_types_ipv6(tmp_path, name, frame, lt):
    b, st, dec = one(tmp_path, frame, lt)
    check6(b, dec)
    assert st.tcp == 1


def test_non_ip_and_non_tcp_are_counted(tmp_path):
    arp = ether(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\0" * 20, 0x0806)
    udp = ether(ipv4("10.0.0.1", "10.0.0.2", b"\0" * 8 + b"dns", proto=17))
    short = b"\x01\x02\x03"  # shorter than an Ethernet header
    recs = [(T0, arp), (T0 + 1, udp), (T0 + 2, short), (T0 + 3, ether(seg4()))]
    b, st, _ = decode(write(tmp_path / "m.pcap", pcap_bytes(recs)))
    assert (st.frames, st.tcp, st.non_ip, st.non_tcp) == (4, 1, 1, 1)
    assert st.undecodable == {"link header cut short": 1}
    assert len(b) == 1


def test_unsupported_link_type_is_counted_not_decoded(tmp_path):
    b, st, _ = one(tmp_path, ether(seg4()), 147)
    assert len(b) == 0 and st.unsupported == {147: 1} and st.tcp == 0


# ------------------------------------------------------------------------ IP
def test_ipv4_options(tmp_path):
    opts = b"\x94\x04\x00\x00"  # router alert (4 bytes)
    b, st, dec = one(tmp_path, ether(seg4(opts=opts)), 1)
    check4(b, dec)


def test_ipv4_fragments(tmp_path):
    seg = tcp(41000, 3000, 1, 1, ACK, payload=b"A" * 64)
    first = ipv4("10.0.0.1", "10.0.0.2", seg[:48], mf=True, total_len=20 + 48)
    rest = ipv4("10.0.0.1", "10.0.0.2", seg[48:], frag_off=48)
    recs = [(T0, ether(first)), (T0 + 0.1, ether(rest))]
    b, st, _ = decode(write(tmp_path / "f.pcap", pcap_bytes(recs)))
    assert st.ip_fragments == 1  # the non-first one: counted, not reassembled
    assert st.tcp == 1 and int(b.plen[0]) == 28  # first fragment: its own share of payload


def test_ipv6_extension_headers(tmp_path):
    ext = [ext_hbh(1), ext_frag(0, more=False), ext_dst(0)]
    b, st, dec = one(tmp_path, ether(seg6(ext), 0x86DD), 1)
    check6(b, dec)


def test_ipv6_non_first_fragment_counted(tmp_path):
    frag = ipv6("2001:db8::1", "2001:db8::2", b"Z" * 40, ext=[ext_hbh(), ext_frag(1448)])
    b, st, _ = one(tmp_path, ether(frag, 0x86DD), 1)
    assert len(b) == 0 and st.ip_fragments == 1


def test_ipv6_extension_header_cut_short(tmp_path):
    pk = seg6([ext_hbh(3)])[: 40 + 5]
    b, st, _ = one(tmp_path, pk, 229, wirelen=200)
    assert len(b) == 0 and st.undecodable == {"IPv6 extension header cut short": 1}


# ----------------------------------------------------------------------- TCP
def test_tcp_options_parsed():
    opts = (
        struct.pack(">BBH", 2, 4, 1460)  # MSS
        + b"\x01\x03\x03\x07"  # NOP, wscale 7
        + b"\x04\x02"  # SACK permitted
        + struct.pack(">BBII", 8, 10, 111, 222)  # timestamps
    )
    opts += b"\x00" * (-len(opts) % 4)
    pk = ipv4("10.0.0.1", "10.0.0.2", tcp(flags=SYN, opts=opts))
    o = parse_opts(opts)
    assert o["mss"] == 1460 and o["wscale"] == 7 and o["sack_perm"] is True
    assert o["ts"] == (111, 222)
    assert o["kinds"][:5] == ["mss", "nop", "wscale", "sackOK", "ts"]
    assert len(pk) == 20 + 20 + len(opts)


def test_tcp_options_from_the_decoded_packet(tmp_path):
    opts = struct.pack(">BBH", 2, 4, 1400) + b"\x01\x01\x04\x02" + b"\x01\x03\x03\x09"
    pk = ether(ipv4("10.0.0.1", "10.0.0.2", tcp(flags=SYN, opts=opts)))
    b, st, _ = one(tmp_path, pk, 1)
    assert int(b.optlen[0]) == len(opts) and int(b.plen[0]) == 0
    o = int(b.poff[0])
    raw = b.bufs[0][o - int(b.optlen[0]) : o]
    got = parse_opts(raw)
    assert (got["mss"], got["wscale"], got["sack_perm"]) == (1400, 9, True)


@pytest.mark.parametrize(
    "raw",
    [b"\x02", b"\x02\x00", b"\x02\x01\x05", b"\x08\x0a\x00", b"\x05\xff", bytes(range(40))],
)
def test_tcp_options_malformed_never_raise(raw):
    out = parse_opts(raw)
    assert isinstance(out["kinds"], list)


def test_snaplen_truncated_payload_length_from_ip(tmp_path):
    big = ipv4("10.0.0.1", "10.0.0.2", tcp(41000, 3000, 1, 1, ACK, payload=b"x" * 1400))
    frame = ether(big)
    cut = frame[: 14 + 20 + 20 + 10]
    b, st, _ = one(tmp_path, cut, 1, wirelen=len(frame))
    assert int(b.plen[0]) == 1400  # from the IP total length
    assert int(b.pcap[0]) == 10  # what was captured
    assert payload(b) == b"x" * 10
    assert st.snap_truncated == 1 and st.tcp == 1


def test_snaplen_cut_inside_tcp_header_is_undecodable(tmp_path):
    frame = ether(seg4())
    b, st, _ = one(tmp_path, frame[: 14 + 20 + 12], 1, wirelen=len(frame))
    assert len(b) == 0 and st.undecodable == {"TCP header cut short": 1}


def test_tso_gso_ip_total_length_zero(tmp_path):
    """TSO/GSO captures write IP total length 0: the length comes from the wire length."""
    seg = tcp(41000, 3000, 1, 1, ACK, payload=b"y" * 3000)
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", seg, total_len=0))
    b, st, _ = one(tmp_path, frame, 1)
    assert int(b.plen[0]) == 3000
    v6 = ether(ipv6("2001:db8::1", "2001:db8::2", seg, payload_len=0), 0x86DD)
    b, st, _ = one(tmp_path, v6, 1)
    assert int(b.plen[0]) == 3000


def test_ethernet_padding_ignored(tmp_path):
    """Minimum-size frames are padded to 60 bytes: the payload length comes from IP."""
    rst = ether(ipv4("10.0.0.2", "10.0.0.1", tcp(3000, 41000, 77, 0, RST))) + b"\0" * 6
    b, st, _ = one(tmp_path, rst, 1)
    assert int(b.plen[0]) == 0 and int(b.flags[0]) == RST


def test_bad_tcp_data_offset(tmp_path):
    seg = bytearray(tcp())
    seg[12] = 0x30  # data offset 12 bytes < 20
    b, st, _ = one(tmp_path, ether(ipv4("10.0.0.1", "10.0.0.2", bytes(seg))), 1)
    assert len(b) == 0 and st.undecodable == {"bad TCP header length": 1}


def test_ns_flag_bit(tmp_path):
    b, _, _ = one(tmp_path, ether(ipv4("10.0.0.1", "10.0.0.2", tcp(flags=0x110))), 1)
    assert int(b.flags[0]) == 0x110


def test_mixed_batch_keeps_file_order_and_accounting(tmp_path):
    """Several link types in one pcapng batch: rows stay in frame order; every frame counted."""
    from conftest import ng_epb, ng_idb, ng_shb

    frames = [
        (0, ether(seg4())),
        (1, sll2(seg6(), 0x86DD)),
        (0, ether(b"\0" * 28, 0x0806)),
        (2, seg4()),
        (1, sll2(seg4())),
        (0, b"\0" * 5),
    ]
    data = ng_shb() + ng_idb(1) + ng_idb(276) + ng_idb(101)
    data += b"".join(ng_epb(i, int(T0 * 1e6) + k, f) for k, (i, f) in enumerate(frames))
    b, st, _ = decode(write(tmp_path / "mix.pcapng", data), chunk=128)
    assert b.frame.tolist() == [1, 2, 4, 5]
    assert st.frames == 6
    counted = st.tcp + st.non_ip + st.non_tcp + st.ip_fragments
    counted += sum(st.undecodable.values()) + sum(st.unsupported.values())
    assert counted == st.frames


def test_snaplen_cut_inside_tcp_options(tmp_path):
    """Only the captured option bytes count; poff - optlen never reaches the next record."""
    opts = struct.pack(">BBH", 2, 4, 1460) + b"\x01\x01\x08\x0a" + b"\0" * 8 + b"\x01\x01\x04\x02"
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", tcp(flags=SYN, opts=opts)))
    cut = frame[: 14 + 20 + 20 + 6]  # 6 of the 20 option bytes
    recs = [(T0, cut, len(frame)), (T0 + 1, b"\xaa" * 60)]
    b, st, _ = decode(write(tmp_path / "o.pcap", pcap_bytes(recs)))
    assert len(b) == 1
    assert int(b.optlen[0]) == 6 and int(b.pcap[0]) == 0 and int(b.plen[0]) == 0
    o = int(b.poff[0])
    assert b.bufs[0][o - 6 : o] == opts[:6]
    assert parse_opts(b.bufs[0][o - 6 : o])["mss"] == 1460
