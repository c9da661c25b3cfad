"""Readers (pcapreset.capture.sources) on small synthetic files: one file-format fact per test."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ether,
    http_conn,
    ipv4,
    ng_block,
    ng_epb,
    ng_idb,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_bytes,
    sll,
    sll2,
    tcp,
    write,
)

from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CHUNK, CaptureReader
from pcapreset.capture.timeline import _decoded, merge_by_time
from pcapreset.engine import run as engine
from pcapreset.errors import CaptureError, PcapResetError
from pcapreset.track.flows import FlowTracker

T0 = 1_700_000_000


def frames(path: Path, chunk: int = CHUNK) -> tuple[list[tuple], CaptureReader]:
    """(ts, linktype, bytes, wirelen, frame_no) of every frame, and the reader."""
    r = CaptureReader(str(path), chunk=chunk)
    out = []
    for b in r.batches():
        for i in range(len(b.off)):
            o, c = int(b.off[i]), int(b.caplen[i])
            out.append(
                (
                    float(b.ts[i]),
                    int(b.linktype[i]),
                    bytes(b.buf[o : o + c]),
                    int(b.wirelen[i]),
                    int(b.frame_no[i]),
                )
            )
    return out, r


def payloads(n: int, start: int = 0) -> list[bytes]:
    """Frames of varied sizes (0..~300 bytes), each distinguishable."""
    return [bytes([(start + i) % 251]) * ((i * 37) % 301) for i in range(n)]


# ------------------------------------------------------------------- pcap
@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("ns", [False, True])
def test_pcap_us_ns_both_byte_orders(tmp_path, endian, ns):
    recs = [
        (T0 + 0.000001, b"a" * 60),
        (T0 + 1.5, b"b" * 14, 1514),  # snaplen-cut: wire length kept
        (T0 + 2.999999, b""),
    ]
    if ns:
        recs.append((T0 + 3.000000001, b"c" * 7))
    p = write(tmp_path / "x.pcap", pcap_bytes(recs, endian=endian, ns=ns, linktype=113))
    got, r = frames(p)
    assert r.info.file_format == ("pcap-ns" if ns else "pcap")
    assert r.info.linktypes == [113]
    assert [g[2] for g in got] == [rec[1] for rec in recs]
    assert [g[3] for g in got] == [rec[2] if len(rec) > 2 else len(rec[1]) for rec in recs]
    assert [g[1] for g in got] == [113] * len(recs)
    assert [g[4] for g in got] == list(range(1, len(recs) + 1))
    tol = 2e-7  # float64 at 1.7e9 s resolves ~2.4e-7 s
    for g, rec in zip(got, recs, strict=True):
        assert abs(g[0] - rec[0]) < tol
    if ns:  # the ns fraction really is read as ns (1 ns after 3 s, not 1 µs)
        assert got[3][0] - T0 == pytest.approx(3.000000001, abs=3e-7)
        assert got[3][0] < T0 + 3.0000005
    assert r.info.frames == len(recs)
    assert r.info.warnings == {}


@pytest.mark.parametrize("endian", ["<", ">"])
def test_modified_pcap(tmp_path, endian):
    recs = [(T0 + i * 0.25, d) for i, d in enumerate(payloads(9))]
    p = write(tmp_path / "m.pcap", pcap_bytes(recs, endian=endian, modified=True))
    for chunk in (CHUNK, 64):
        got, r = frames(p, chunk)
        assert [g[2] for g in got] == [d for _, d in recs]
        assert [round(g[0] - T0, 6) for g in got] == [i * 0.25 for i in range(9)]


def test_pcap_fcs_bits_strip_the_fcs(tmp_path):
    """F bit + FCS length in 16-bit words: 2 words = a 4-byte FCS is not frame data."""
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", tcp()))
    p = write(tmp_path / "f.pcap", pcap_bytes([(T0, frame + b"\xde\xad\xbe\xef")], fcs_words=2))
    got, _ = frames(p)
    assert got[0][2] == frame
    assert got[0][3] == len(frame)


# ----------------------------------------------------------------- pcapng
def _multi_iface_pcapng() -> tuple[bytes, list[tuple[float, int, bytes]]]:
    """Two sections (LE then BE), five interfaces, EPB + SPB + obsolete PB."""
    d = payloads(8, 10)
    le = (
        ng_shb("<")
        + ng_idb(1, "<")  # if 0: Ethernet, default µs
        + ng_idb(113, "<", tsresol=9)  # if 1: SLL, ns
        + ng_idb(101, "<", tsresol=0x80 | 10)  # if 2: raw, 2^-10 s ticks
        + ng_idb(228, "<", tsoffset=1000)  # if 3: IPv4, +1000 s offset
        + ng_block(5, b"\0" * 8, "<")  # an interface statistics block: skipped
        + ng_epb(0, T0 * 1_000_000 + 250_000, d[0], "<")
        + ng_epb(1, T0 * 1_000_000_000 + 123_456_789, d[1], "<")
        + ng_epb(2, T0 * 1024 + 512, d[2], "<")
        + ng_epb(3, T0 * 1_000_000 + 1, d[3], "<")
        + ng_spb(d[4], "<")  # SPB: interface 0, timestamp of the previous packet
        + ng_pb(1, T0 * 1_000_000_000 + 5, d[5], "<")
    )
    be = (
        ng_shb(">")
        + ng_idb(276, ">", tsresol=3)  # if 0 of section 2: SLL2, ms
        + ng_epb(0, (T0 + 10) * 1000 + 7, d[6], ">")
        + ng_epb(0, (T0 + 11) * 1000, d[7], ">")
    )
    want = [
        (T0 + 0.25, 1, d[0]),
        (T0 + 0.123456789, 113, d[1]),
        (T0 + 0.5, 101, d[2]),
        (T0 + 1000 + 0.000001, 228, d[3]),
        (T0 + 1000 + 0.000001, 1, d[4]),
        (T0 + 0.000000005, 113, d[5]),
        (T0 + 10.007, 276, d[6]),
        (T0 + 11.0, 276, d[7]),
    ]
    return le + be, want


@pytest.mark.parametrize("chunk", [CHUNK, 64, 200])
def test_pcapng_interfaces_blocks_sections(tmp_path, chunk):
    data, want = _multi_iface_pcapng()
    p = write(tmp_path / "x.pcapng", data)
    got, r = frames(p, chunk)
    assert r.info.file_format == "pcapng"
    assert [(g[1], g[2]) for g in got] == [(w[1], w[2]) for w in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g[0] - w[0]) < 3e-7, (g, w)
    assert r.info.linktypes == [1, 113, 101, 228, 276]
    assert r.info.warnings == {}


def test_pcapng_spb_first_then_epb(tmp_path):
    """An SPB before any timestamped packet gets ts 0.0 (it has none), never garbage."""
    data = ng_shb() + ng_idb(1) + ng_spb(b"x" * 3) + ng_epb(0, T0 * 1_000_000, b"y" * 5)
    for chunk in (CHUNK, 32):
        got, r = frames(write(tmp_path / "s.pcapng", data), chunk)
        assert [(g[0], g[2]) for g in got] == [(0.0, b"xxx"), (float(T0), b"yyyyy")]


def test_pcapng_spb_at_very_end_of_file(tmp_path):
    """A short SPB that ends the buffer must not make the 28-byte header gather overrun."""
    data = ng_shb() + ng_idb(1) + ng_epb(0, T0 * 1_000_000, b"e" * 9) + ng_spb(b"")
    got, _ = frames(write(tmp_path / "s.pcapng", data))
    assert [(g[0], g[2]) for g in got] == [(float(T0), b"e" * 9), (float(T0), b"")]


def test_pcapng_absurd_tsresol_does_not_break(tmp_path):
    data = ng_shb() + ng_idb(1, tsresol=0x80 | 127) + ng_epb(0, 5, b"z")
    got, _ = frames(write(tmp_path / "r.pcapng", data))
    assert got[0][2] == b"z" and got[0][0] >= 0.0


def test_pcapng_undefined_interface_is_counted(tmp_path):
    data = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"a" * 20) + ng_epb(3, 2, b"b" * 20)
    got, r = frames(write(tmp_path / "u.pcapng", data))
    assert [g[2] for g in got] == [b"a" * 20]
    assert r.info.frames == 1
    assert r.info.warnings["undefined_interface"][0] == 1


# ------------------------------------------------------------ compression
@pytest.mark.parametrize(
    "name,comp", [("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress)]
)
def test_compressed(tmp_path, name, comp):
    recs = [(T0 + i, d) for i, d in enumerate(payloads(20))]
    raw = pcap_bytes(recs, ns=True)
    p = write(tmp_path / "c.pcap.z", comp(raw))
    got, r = frames(p, 100)
    assert r.info.compression == name
    assert [g[2] for g in got] == [d for _, d in recs]
    data, want = _multi_iface_pcapng()
    got, r = frames(write(tmp_path / "c.pcapng.z", comp(data)))
    assert [g[2] for g in got] == [w[2] for w in want]


def test_gzip_cut_short_keeps_what_was_read(tmp_path):
    recs = [(T0 + i, d) for i, d in enumerate(payloads(200))]
    z = gzip.compress(pcap_bytes(recs), compresslevel=1)
    p = write(tmp_path / "cut.pcap.gz", z[: len(z) * 2 // 3])
    got, r = frames(p, 512)
    assert 0 < len(got) < 200
    assert [g[2] for g in got] == [d for _, d in recs[: len(got)]]
    assert "read_error" in r.info.warnings or "truncated_record" in r.info.warnings


# ---------------------------------------------------------------- damage
@pytest.mark.parametrize("chunk", [CHUNK, 64, 333])
def test_pcap_cut_in_the_middle_of_a_record(tmp_path, chunk):
    recs = [(T0 + i, d) for i, d in enumerate(payloads(6, 1)) if d] + [(T0 + 9, b"L" * 100)]
    data = pcap_bytes(recs)
    p = write(tmp_path / "t.pcap", data[:-40])
    got, r = frames(p, chunk)
    assert [g[2] for g in got] == [d for _, d in recs[:-1]]
    count, msg = r.info.warnings["truncated_record"]
    assert count == 1 and "76 bytes" in msg  # 16-byte header + 60 of 100 data bytes


def test_pcapng_cut_in_the_middle_of_a_block(tmp_path):
    data = ng_shb() + ng_idb(1) + ng_epb(0, 1, b"a" * 40) + ng_epb(0, 2, b"b" * 40)
    got, r = frames(write(tmp_path / "t.pcapng", data[:-10]))
    assert [g[2] for g in got] == [b"a" * 40]
    assert r.info.warnings["truncated_record"][0] == 1


@pytest.mark.parametrize("chunk", [CHUNK, 64, 100, 1000])
@pytest.mark.parametrize("garbage", [b"\xff" * 37, b"\xff" * 500, "random:5", "random:700"])
def test_pcap_garbage_in_the_middle_resyncs(tmp_path, chunk, garbage):
    """Damage is found when the next record header is implausible (caplen over the snaplen).

    Limitation (pcap has no block trailers or sync markers): garbage whose bytes
    happen to form a plausible header -- e.g. one stray byte that shifts a header
    so its caplen reads as 47 KB -- is read as one bogus record instead.
    """
    if isinstance(garbage, str):
        garbage = random.Random(len(garbage)).randbytes(int(garbage.split(":")[1]))
    recs = [(T0 + i * 0.1, d) for i, d in enumerate(payloads(12, 3))]
    head = pcap_bytes(recs[:5])
    tail = pcap_bytes(recs[5:])[24:]
    p = write(tmp_path / "g.pcap", head + garbage + tail)
    got, r = frames(p, chunk)
    assert [g[2] for g in got] == [d for _, d in recs]  # every record after the damage too
    count, _ = r.info.warnings["damaged_bytes"]
    assert count == len(garbage)


def test_pcap_garbage_at_the_end(tmp_path):
    recs = [(T0 + i, d) for i, d in enumerate(payloads(4, 3))]
    p = write(tmp_path / "g.pcap", pcap_bytes(recs) + b"\xff" * 50)
    got, r = frames(p, 64)
    assert len(got) == 4
    assert r.info.warnings["damaged_bytes"][0] == 50


@pytest.mark.parametrize("chunk", [CHUNK, 64])
def test_pcapng_garbage_in_the_middle_resyncs(tmp_path, chunk):
    blocks = [ng_epb(0, i, bytes([i]) * (i * 7)) for i in range(10)]
    data = ng_shb() + ng_idb(1) + b"".join(blocks[:4]) + b"\xee" * 24 + b"".join(blocks[4:])
    got, r = frames(write(tmp_path / "g.pcapng", data), chunk)
    assert [g[2] for g in got] == [bytes([i]) * (i * 7) for i in range(10)]
    assert r.info.warnings["damaged_bytes"][0] == 24


# ------------------------------------------------------- not a capture at all
@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "empty"),
        (b"\xd4\xc3\xb2", "not a pcap"),
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 40, "zstd"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (gzip.compress(b""), "empty"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00" + b"\0" * 16, "damaged"),
    ],
)
def test_not_a_capture_is_one_line_error(tmp_path, content, words):
    p = write(tmp_path / "bad.pcap", content)
    with pytest.raises(CaptureError) as ei:
        r = CaptureReader(str(p))
        list(r.batches())
    msg = str(ei.value)
    assert words in msg and "\n" not in msg and str(p) in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CaptureError, match="cannot open"):
        CaptureReader(str(tmp_path / "nope.pcap"))
    with pytest.raises(CaptureError, match="directory"):
        CaptureReader(str(tmp_path))


def test_header_only_pcap_is_an_empty_capture(tmp_path):
    p = write(tmp_path / "h.pcap", pcap_bytes([]))
    res = engine.run([str(p)])
    assert res.packets == 0 and res.conns == [] and res.warnings == []


# ------------------------------------------------------ unsupported link types
def test_pcap_unsupported_linktype_is_an_error(tmp_path):
    p = write(tmp_path / "a.pcap", pcap_bytes([(T0, b"x" * 30)], linktype=147))
    with pytest.raises(CaptureError, match=r"unsupported link type .*147"):
        engine.run([str(p)])


def test_pcapng_some_unsupported_interfaces_warn(tmp_path):
    pk = ether(ipv4("10.0.0.1", "10.0.0.2", tcp(flags=0x02)))
    data = (
        ng_shb()
        + ng_idb(1)
        + ng_idb(147)
        + ng_epb(0, 1, pk)
        + ng_epb(1, 2, b"q" * 30)
        + ng_epb(1, 3, b"q" * 30)
    )
    res = engine.run([str(write(tmp_path / "m.pcapng", data))])
    assert res.decode.tcp == 1
    w = {x["kind"]: x for x in res.warnings}
    assert w["unsupported_linktype"]["count"] == 2
    assert "147" in w["unsupported_linktype"]["message"]


def test_pcapng_all_unsupported_is_an_error(tmp_path):
    data = ng_shb() + ng_idb(147) + ng_epb(0, 1, b"q" * 30)
    with pytest.raises(CaptureError, match="unsupported link type"):
        engine.run([str(write(tmp_path / "u.pcapng", data))])


# ------------------------------------------------------- chunk boundaries
@pytest.mark.parametrize("chunk", [16, 17, 64, 100, 4096])
def test_records_straddling_chunks(tmp_path, chunk):
    """Every record boundary lands at a different place in the chunk; big records span many."""
    recs = [(T0 + i * 0.001, d) for i, d in enumerate(payloads(60) + [b"J" * 3000, b"k"])]
    for kind, data in (
        ("pcap", pcap_bytes(recs)),
        ("pcapng", ng_shb() + ng_idb(1) + b"".join(ng_epb(0, int(t * 1e6), d) for t, d in recs)),
    ):
        p = write(tmp_path / f"s.{kind}", data)
        small, r1 = frames(p, chunk)
        big, r2 = frames(p)
        assert small == big
        assert [g[2] for g in small] == [d for _, d in recs]
        assert r1.info.warnings == {} and r2.info.warnings == {}


def test_default_chunk_boundary_is_crossed(tmp_path):
    """Real 4 MiB CHUNK: ~6 MB of 1500-byte records crosses it (and the carry works)."""
    rec = b"\xab" * 1500
    recs = [(T0 + i * 1e-4, rec) for i in range(4200)]
    p = write(tmp_path / "big.pcap", pcap_bytes(recs))
    r = CaptureReader(str(p))
    batches = list(r.batches())
    assert len(batches) >= 2
    assert sum(len(b.off) for b in batches) == 4200
    fn = np.concatenate([b.frame_no for b in batches])
    assert (fn == np.arange(1, 4201)).all()


# ---------------------------------------------------------- several files
def _tcp_pcap(path: Path, pkts: list[tuple[float, bytes]]) -> str:
    return str(write(path, pcap_bytes([(t, ether(p)) for t, p in pkts])))


def test_merge_overlapping_files_into_one_timeline(tmp_path):
    a = http_conn(cport=40001, t0=T0)
    b = http_conn(cport=40002, t0=T0 + 0.0005)  # interleaves with a
    fa, fb = _tcp_pcap(tmp_path / "a.pcap", a), _tcp_pcap(tmp_path / "b.pcap", b)
    dec = Decoder()
    streams = [_decoded(CaptureReader(f, file_index=i, chunk=64), dec) for i, f in
               enumerate((fa, fb))]  # fmt: skip
    merged = list(merge_by_time(streams))
    ts = np.concatenate([m.ts for m in merged])
    assert len(ts) == len(a) + len(b)
    assert (np.diff(ts) >= 0).all()
    res = engine.run([fa, fb])
    assert len(res.conns) == 2
    assert sorted(c.packets for c in res.conns) == [len(a), len(b)]
    assert [len(c.rst_events) for c in res.conns] == [1, 1]


def test_connection_spanning_two_rotated_files(tmp_path):
    pk = http_conn()
    f1 = _tcp_pcap(tmp_path / "rot1.pcap", pk[:4])
    f2 = _tcp_pcap(tmp_path / "rot2.pcap", pk[4:])
    for order in ((f1, f2), (f2, f1)):  # file order on the command line does not matter
        res = engine.run(list(order))
        assert len(res.conns) == 1
        c = res.conns[0]
        assert c.packets == len(pk)
        assert c.role_rule == "syn"
        assert c.requests == 1 and len(c.rst_events) == 1


def test_merge_streams_is_time_ordered_within_overlap():
    """merge_by_time on decoded batches whose time ranges overlap batch by batch."""
    from pcapreset.capture.tcp import TcpBatch

    def batch(ts: list[float]) -> TcpBatch:
        z = np.arange(len(ts), dtype=np.int64)
        return TcpBatch(np.array(ts), z, z, z, z, z, z, z, z, z, z, z, z, z * 0, z, bufs=[b""])

    s1 = iter([batch([1, 3, 5]), batch([7, 9])])
    s2 = iter([batch([2, 4]), batch([6, 8, 10])])
    out = np.concatenate([b.ts for b in merge_by_time([s1, s2])])
    assert out.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_reader_errors_are_pcapreset_errors(tmp_path):
    p = write(tmp_path / "t.txt", b"hello world\n")
    with pytest.raises(PcapResetError):
        engine.run([str(p)])
    ft = FlowTracker()
    assert ft.finish() == []


def test_sll_and_sll2_in_pcap(tmp_path):
    pk = ipv4("10.0.0.1", "10.0.0.2", tcp(flags=0x02))
    for lt, frame in ((113, sll(pk)), (276, sll2(pk))):
        p = write(tmp_path / f"{lt}.pcap", pcap_bytes([(T0, frame)], linktype=lt))
        res = engine.run([str(p)])
        assert res.decode.tcp == 1 and res.decode.linktypes == {lt: 1}
