"""Damage, floods and hostile inputs (issue 20): every case generates its input
on the fly, small, and checks what a user relies on: every packet analysed or
counted in a warning, memory bounded, no traceback, strict JSON, no escape
bytes on the terminal, no process left behind."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
from conftest import ether, http_conn, ng_epb, ng_idb, ng_shb, pcap_bytes, write

from pcapreset.capture.sources import CHUNK, CaptureReader
from pcapreset.engine import evictor
from pcapreset.engine import run as engine

T0 = 1_767_225_600.0


def conns_records(n: int, t0: float = T0, port0: int = 20000) -> list[tuple[float, bytes]]:
    """Ethernet frames of ``n`` HTTP exchanges ended by a RST, 10 ms apart."""
    out: list[tuple[float, bytes]] = []
    for k in range(n):
        out += [(t, ether(f)) for t, f in http_conn(cport=port0 + k, t0=t0 + 0.01 * k)]
    return out


def record_offsets(records: list[tuple[float, bytes]], rec: int = 16) -> list[int]:
    offs, p = [], 24
    for _t, d in records:
        offs.append(p)
        p += rec + len(d)
    return offs


def read_all(path: Path, chunk: int = CHUNK) -> tuple[list[float], CaptureReader]:
    r = CaptureReader(str(path), chunk=chunk)
    ts: list[float] = []
    for b in r.batches():
        ts += b.ts.tolist()
    return ts, r


# ---------------------------------------------------- 1. resync after damage
@pytest.mark.parametrize("chunk", [CHUNK, 8192, 1000])
def test_zeroed_block_costs_only_the_packets_in_it(tmp_path, chunk):
    recs = conns_records(400)  # 2,800 packets, ~250 KB
    data = bytearray(pcap_bytes(recs))
    blk = (len(data) // 2) & ~4095
    data[blk : blk + 4096] = bytes(4096)
    offs = record_offsets(recs)
    lost = [i for i, o in enumerate(offs) if blk <= o < blk + 4096]
    ts, r = read_all(write(tmp_path / "z.pcap", bytes(data)), chunk)
    assert len(ts) == len(recs) - len(lost)
    gone = set(lost)
    assert ts == pytest.approx([t for i, (t, _d) in enumerate(recs) if i not in gone])
    count, msg = r.info.warnings["damaged_bytes"]
    # from the first zeroed header to the first record after the block
    start = next(o for o in offs[lost[0] - 1 :] if o >= blk)
    start = blk if offs[lost[0] - 1] + 16 + len(recs[lost[0] - 1][1]) == offs[lost[0]] else start
    assert count == offs[lost[-1] + 1] - offs[lost[0]]
    assert f"at offset {offs[lost[0]]} (after frame {lost[0]})" in msg


def test_zeroed_block_in_the_analysis(tmp_path):
    recs = conns_records(300)
    data = bytearray(pcap_bytes(recs))
    blk = (len(data) // 2) & ~4095
    data[blk : blk + 4096] = bytes(4096)
    res = engine.run([str(write(tmp_path / "z.pcap", bytes(data)))])
    lost = sum(1 for o in record_offsets(recs) if blk <= o < blk + 4096)
    assert res.packets == len(recs) - lost
    assert res.first_ts == pytest.approx(T0) and res.last_ts == pytest.approx(recs[-1][0])
    assert any(w["kind"] == "damaged_bytes" for w in res.warnings)


@pytest.mark.parametrize("chunk", [CHUNK, 700])
def test_concatenated_captures_are_both_read(tmp_path, chunk):
    a = conns_records(50)
    b = [(t + 3600 * 24 * 30, d[14:]) for t, d in conns_records(40, port0=30000)]  # raw IP
    data = pcap_bytes(a) + pcap_bytes(b, linktype=101, endian=">", ns=True)
    ts, r = read_all(write(tmp_path / "ab.pcap", data), chunk)
    assert ts == pytest.approx([t for t, _ in a] + [t for t, _ in b])
    assert r.info.linktypes == [1, 101]
    assert r.info.warnings["concatenated"][0] == 1
    assert "damaged_bytes" not in r.info.warnings


def test_concatenated_after_a_cut_record(tmp_path):
    a = conns_records(30)
    b = conns_records(30, t0=T0 + 86400 * 400, port0=31000)
    cut = pcap_bytes(a)[:-30]  # the last record of a cut short
    ts, r = read_all(write(tmp_path / "ab.pcap", cut + pcap_bytes(b)))
    assert ts == pytest.approx([t for t, _ in a[:-1]] + [t for t, _ in b])
    assert r.info.warnings["damaged_bytes"][0] == 16 + len(a[-1][1]) - 30
    assert r.info.warnings["concatenated"][0] == 1


def test_damaged_header_near_the_end_does_not_hide_the_rest(tmp_path):
    """A record header whose caplen runs past the end of the file, with whole
    records after it: only that record is lost."""
    recs = conns_records(20)
    data = bytearray(pcap_bytes(recs))
    offs = record_offsets(recs)
    k = len(recs) - 5
    struct.pack_into("<I", data, offs[k] + 8, 5000)  # caplen 5000: past the end
    ts, r = read_all(write(tmp_path / "d.pcap", bytes(data)))
    assert len(ts) == len(recs) - 1
    assert r.info.warnings["damaged_bytes"][0] == offs[k + 1] - offs[k]


def test_pcapng_false_block_running_past_the_end(tmp_path):
    """case 7: damage near the end of a pcapng file that reads as a known block
    type whose length runs past the end must not hide the blocks after it."""
    blocks = [ng_epb(0, 1000 + i, bytes([i]) * 60) for i in range(12)]
    false = struct.pack("<II", 6, 4096) + b"\x00\x11\x22\x33"  # (a MAC read as a block)
    data = ng_shb() + ng_idb(1) + b"".join(blocks[:8]) + false + b"".join(blocks[8:])
    ts, r = read_all(write(tmp_path / "f.pcapng", data))
    assert len(ts) == 12
    assert r.info.warnings["damaged_bytes"][0] == len(false)
    assert "truncated_record" not in r.info.warnings


def test_pcapng_cut_last_block_is_still_truncation(tmp_path):
    blocks = [ng_epb(0, 1000 + i, bytes([i]) * 60) for i in range(6)]
    data = ng_shb() + ng_idb(1) + b"".join(blocks)
    ts, r = read_all(write(tmp_path / "c.pcapng", data[:-20]))
    assert len(ts) == 5
    assert r.info.warnings["truncated_record"][0] == 1


# ------------------------------------------------ 4. damaged compressed files
def _gz_cases(raw: bytes) -> dict[str, bytes]:
    z = gzip.compress(raw, compresslevel=6)
    crc = bytearray(z)
    crc[-8] ^= 0xFF  # the CRC32 of the (intact) data
    return {
        "trailing junk": z + b"this is not gzip data\n" * 3,
        "bad crc": bytes(crc),
        "trailing zeros": z + bytes(512),
    }


@pytest.mark.parametrize("case", ["trailing junk", "bad crc", "trailing zeros"])
def test_gzip_damage_after_the_data_keeps_every_packet(tmp_path, case):
    recs = conns_records(200)
    raw = pcap_bytes(recs)
    p = write(tmp_path / "d.pcap.gz", _gz_cases(raw)[case])
    ts, r = read_all(p)
    assert len(ts) == len(recs)  # zcat writes them all, and so many are read
    if case == "trailing zeros":  # (padding: gzip and zcat ignore it silently too)
        assert not r.info.warnings
        return
    count, msg = r.info.warnings["read_error"]
    assert count == 1 and f"after {len(raw)} bytes" in msg, msg


@pytest.mark.parametrize("comp", ["gzip", "bz2", "xz"])
def test_compressed_cut_short_keeps_all_but_the_tail(tmp_path, comp):
    import bz2
    import lzma

    recs = conns_records(300)
    raw = pcap_bytes(recs)
    # (bzip2 level 1: 100 kB blocks, so whole blocks come before the cut)
    z = {"gzip": gzip.compress, "bz2": lambda d: bz2.compress(d, 1), "xz": lzma.compress}[comp](raw)
    ts, r = read_all(write(tmp_path / "c.pcap.z", z[: len(z) * 9 // 10]))
    assert len(recs) // 2 < len(ts) < len(recs)
    assert ts == pytest.approx([t for t, _ in recs[: len(ts)]])
    assert "read_error" in r.info.warnings


# ------------------------------------------------------- 2. bounded memory
def syn_flood(n: int, rate: float = 20000.0, seed: int = 1) -> list[tuple[float, bytes]]:
    """``n`` SYNs nobody answers, from random (spoofed) sources to 10.1.0.3:3000."""
    import random

    from conftest import ipv4, tcp

    rnd = random.Random(seed)
    out = []
    for i in range(n):
        src = f"10.{rnd.randrange(2, 250)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        seg = tcp(rnd.randrange(1024, 65535), 3000, rnd.getrandbits(32), 0, 0x02)
        out.append((T0 + i / rate, ether(ipv4(src, "10.1.0.3", seg))))
    return out


def test_syn_flood_tracks_a_bounded_number_of_attempts(tmp_path, monkeypatch):
    """A scaled-down flood (caps scaled down with it): the attempts tracked at
    any time stay below the cap plus one fed piece, whatever the flood's
    length, and every SYN is still counted as a connection."""
    cap, piece = 256, 128
    monkeypatch.setattr(evictor, "ATTEMPT_CAP", cap)
    monkeypatch.setattr(evictor, "FEED_MAX", piece)
    n = 5000
    p = write(tmp_path / "flood.pcap", pcap_bytes(syn_flood(n)))
    peak = [0]
    after = evictor.Evictor.after

    def watching(self, ts):
        after(self, ts)
        peak[0] = max(peak[0], len(self.ft.active))

    monkeypatch.setattr(evictor.Evictor, "after", watching)
    res = engine.run([str(p)], evict=True)
    assert 0 < peak[0] <= 2 * cap + piece
    assert res.rollup is not None and res.rollup.attempts >= n - 2 * cap - piece
    assert len(res.conns) + res.rollup.count == n
    kinds = {w["kind"]: w for w in res.warnings}
    assert kinds["attempts_summarised"]["count"] == res.rollup.attempts
    from pcapreset.report.build import build

    assert build(res).to_json()["flows"] == n


def test_syn_flood_memory_per_attempt_is_bounded(tmp_path, monkeypatch):
    """The peak Python heap of a 4x longer flood grows by far less than the
    ~3 KB a tracked attempt costs (the caps scaled down: the input buffer and
    decoded columns still grow with the file, up to a 4 MB chunk)."""
    import tracemalloc

    monkeypatch.setattr(evictor, "ATTEMPT_CAP", 256)
    monkeypatch.setattr(evictor, "FEED_MAX", 128)
    sizes = []
    for n in (2000, 8000):
        p = write(tmp_path / f"f{n}.pcap", pcap_bytes(syn_flood(n, rate=200000.0)))
        tracemalloc.start()
        res = engine.run([str(p)], evict=True)
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert res.rollup is not None and len(res.conns) + res.rollup.count == n
        sizes.append(peak)
    per_syn = (sizes[1] - sizes[0]) / 6000
    assert per_syn < 600, per_syn  # bytes of peak heap per extra SYN


def test_clock_going_back_keeps_eviction_on(generated, tmp_path):
    """One packet an hour out of order: the run keeps evicting (it used to
    start again without eviction, 67 -> 578 MB on a 5M-packet capture) and
    says what the late packet may have done."""
    data = generated.read_bytes()
    pos, offs = 24, []
    while pos + 16 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    k = len(offs) // 2
    while data[offs[k] + 16 + 23] != 6:  # a TCP packet (Ethernet + IPv4 protocol field)
        k += 1
    rec = bytearray(data[offs[k] : offs[k + 1]])
    struct.pack_into("<I", rec, 0, struct.unpack_from("<I", rec, 0)[0] - 3600)
    p = write(tmp_path / "late.pcap", data[: offs[-50]] + bytes(rec) + data[offs[-50] :])
    res = engine.run([str(p)], evict=True)
    assert res.rollup is not None and res.rollup.count > 0  # still evicting
    assert res.rollup.reordered and res.packets == len(offs) + 1
    late = [w for w in res.warnings if w["kind"] == "late_packets"]
    # its connection was folded long before: it starts one of its own, and says so
    assert res.rollup.late == 1 and [w["count"] for w in late] == [1]


# ----------------------------------------------------------- 3. tracebacks
def cli(*args: str):
    """Run the CLI in-process; returns click's Result (a traceback would be
    ``result.exception`` other than SystemExit)."""
    from click.testing import CliRunner

    from pcapreset.cli import main

    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert "Traceback" not in res.output
    return res


def one_line_error(res, code: int = 1) -> str:
    assert res.exit_code == code, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def huge_ts_pcapng(tmp_path: Path) -> Path:
    """A pcapng whose packets carry timestamps beyond time_t: whole seconds
    (if_tsresol 10^0), ~2^64 of them."""
    recs = conns_records(3)
    blocks = [ng_epb(0, (1 << 64) - 100 + i, d) for i, (_t, d) in enumerate(recs)]
    idb = ng_idb(1, tsresol=0)
    return write(tmp_path / "future.pcapng", ng_shb() + idb + b"".join(blocks))


def test_timestamp_beyond_time_t_text_report(tmp_path):
    p = huge_ts_pcapng(tmp_path)
    res = cli("analyze", "-q", str(p))
    assert res.exit_code == 0 and "packets" in res.output
    res = cli("analyze", "-q", "-v", str(p))
    assert res.exit_code == 0
    res = cli("analyze", "-q", "--format", "json", str(p))
    assert json.loads(res.output)["capture"]["packets"] == 21


def test_timestamp_beyond_time_t_export(tmp_path):
    pytest.importorskip("pyarrow")
    p = huge_ts_pcapng(tmp_path)
    res = cli("analyze", "-q", str(p), "--export", str(tmp_path / "tables"))
    assert res.exit_code == 0
    assert any((tmp_path / "tables").glob("*.parquet"))


@pytest.mark.parametrize("zone", ["+99:99", "+24:00", "-12:60", "A" * 5000, "a\x00b", "../etc"])
def test_bad_nginx_tz_is_a_one_line_error(tmp_path, zone):
    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(2)))
    log = tmp_path / "error.log"
    log.write_text("")
    line = one_line_error(cli("analyze", "-q", str(p), "--nginx-log", str(log), "--nginx-tz", zone))
    assert "--nginx-tz" in line and len(line) < 200


# -------------------------------------------------- 5. no process left behind
_STUCK_PARENT = """
import multiprocessing as mp, sys, time
from pcapreset.engine import pipeline
pipeline.SLOTS = 1  # (one slot: the child blocks on its second chunk)
def stuck(spec, view):  # the parent never drains the ring: the child blocks on it
    print(" ".join(str(p.pid) for p in mp.active_children()), flush=True)
    time.sleep(600)
pipeline._unpack = stuck
pipeline.run_pipelined([sys.argv[1]], None)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # (a zombie: ended)
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_parent_leaves_no_reader_child(tmp_path, sig):
    import os
    import signal
    import subprocess
    import sys
    import time

    one = pcap_bytes(conns_records(1500))  # ~1 MB; 6 of them: two 4 MB chunks
    p = write(tmp_path / "c.pcap", one + one[24:] * 5)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUCK_PARENT, str(p)], stdout=subprocess.PIPE, text=True, env=env
    )
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline().split()[0])
        time.sleep(0.3)  # (the child fills the ring and blocks)
        assert not _gone(child)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), f"reader child {child} outlived its parent"
    finally:
        proc.kill()
        proc.wait()
        if child and not _gone(child):
            os.kill(child, signal.SIGKILL)  # (the test failed: leave nothing behind)


# --------------------------------------------------------- 6. strict JSON
def http_records(resp: bytes, n: int = 3, server: str = "10.0.0.2") -> list[tuple[float, bytes]]:
    """``n`` keep-alive exchanges whose response is ``resp``, each ended by a
    bare RST from the server."""
    from conftest import ipv4, tcp

    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    out: list[tuple[float, bytes]] = []
    for k in range(n):
        cp, c, s, t0 = 41000 + k, 1000, 5000, T0 + k
        pk = [
            ("10.0.0.1", server, cp, 3000, c, 0, 0x02, b""),
            (server, "10.0.0.1", 3000, cp, s, c + 1, 0x12, b""),
            ("10.0.0.1", server, cp, 3000, c + 1, s + 1, 0x10, b""),
            ("10.0.0.1", server, cp, 3000, c + 1, s + 1, 0x18, req),
            (server, "10.0.0.1", 3000, cp, s + 1, c + 1 + len(req), 0x18, resp),
            ("10.0.0.1", server, cp, 3000, c + 1 + len(req), s + 1 + len(resp), 0x10, b""),
            (server, "10.0.0.1", 3000, cp, s + 1 + len(resp), 0, 0x04, b""),
        ]
        out += [
            (t0 + 0.001 * i, ether(ipv4(a, b, tcp(p, q, sq, ak, fl, payload=pl))))
            for i, (a, b, p, q, sq, ak, fl, pl) in enumerate(pk)
        ]
    return out


def strict_json(text: str):
    def bad(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_keepalive_timeout_nan_gives_strict_json(tmp_path, value):
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=" + value.encode() + b"\r\n\r\nok"
    )
    p = write(tmp_path / "nan.pcap", pcap_bytes(http_records(resp)))
    out = cli("analyze", "-q", "--format", "json", str(p)).output
    rep = strict_json(out)
    assert rep["flows"] == 3
    for line in cli("analyze", "-q", "--format", "jsonl", str(p)).output.splitlines():
        strict_json(line)
    strict_json(cli("conns", "-q", "--format", "json", str(p)).output)


def test_json_writers_never_write_nan():
    import io

    from pcapreset.report import jsonout

    data = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], float("nan"): 1}
    buf = io.StringIO()
    jsonout.dump(data, buf)
    assert strict_json(buf.getvalue()) == {"a": None, "b": [None, None, 1.5], "NaN": 1}
    assert strict_json(jsonout.dumps(data)) == {"a": None, "b": [None, None, 1.5], "NaN": 1}


# ------------------------------------------------------ 8. nginx input limits
ERR_LINE = (
    "2026/01/01 00:00:01 [error] 7#7: *1 recv() failed (104: Connection reset by peer) while "
    'reading response header from upstream, client: 10.0.0.9, server: _, request: "GET / '
    'HTTP/1.1", upstream: "http://10.0.0.2:3000/", host: "x"\n'
)


def test_error_log_line_without_end_is_skipped_in_bounded_memory(tmp_path):
    import tracemalloc

    from pcapreset.nginx import parse as nginxlog

    log = tmp_path / "error.log"
    with open(log, "w") as f:
        f.write(ERR_LINE)
        f.write("x" * (8 << 20) + "\n")  # 8 MB, one line
        f.write(ERR_LINE)
    tracemalloc.start()
    logs = nginxlog.read_logs([log])
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 << 20, peak  # (a line is never held whole)
    assert [e.line for e in logs.errors] == [1, 3] and logs.long_lines == 1


def test_error_log_device_is_a_one_line_error(tmp_path):
    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(2)))
    line = one_line_error(cli("analyze", "-q", str(p), "--nginx-log", "/dev/zero"))
    assert "not a log file" in line


def test_nginx_conf_include_of_a_fifo_does_not_hang(tmp_path):
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo.conf")
    (tmp_path / "nginx.conf").write_text(
        "http { include fifo.conf; upstream b { server 10.0.0.2:3000; keepalive 8; } }\n"
    )
    code = (
        "import sys; from pcapreset.nginx.conf import read_conf; "
        "print(read_conf(sys.argv[1]).warnings)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.returncode == 0 and "not a regular file" in out.stdout, out


def test_nginx_conf_include_glob_is_bounded(tmp_path):
    from pcapreset.nginx import conf as nginxconf

    for d in range(30):
        sub = tmp_path / "conf.d" / f"d{d}"
        sub.mkdir(parents=True)
        for k in range(20):
            (sub / f"{k}.conf").write_text("proxy_read_timeout 60s;\n")
    (tmp_path / "nginx.conf").write_text("http { include conf.d/*/*.conf; }\n")
    conf = nginxconf.read_conf(tmp_path / "nginx.conf")
    assert len(conf.files) == nginxconf._MAX_FILES  # the main file and 255 of 600
    assert any("matches more than" in w for w in conf.warnings)


# ------------------------------------------------- 9. no terminal injection
ESC = "\x1b]0;owned\x07\x1b[2J\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\\x9b31m"


def _no_escapes(text: str) -> None:
    bad = [c for c in text if c in "\x1b\x07\x9b\x9d" or (ord(c) < 32 and c not in "\n")]
    assert not bad, repr(text)


def test_text_output_escapes_control_characters(tmp_path):
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: " + ESC.encode("latin-1") + b"\r\n"
        b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok"
    )
    p = write(tmp_path / "esc.pcap", pcap_bytes(http_records(resp)))
    log = tmp_path / "error.log"
    bad_line = ERR_LINE.replace("http://10.0.0.2:3000/", "http://10.0.0.2:3000/" + ESC)
    log.write_text(bad_line.replace("2026/01/01 00:00:01", "2026/01/01 00:00:00") + bad_line)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "http { upstream b" + ESC + " { server 10.0.0.2:3000; keepalive 8; }\n"
        "server { location / { proxy_pass http://b"
        + ESC
        + "; proxy_read_timeout 5"
        + ESC
        + "; } } }\n"
    )
    args = ["--nginx-log", str(log), "--nginx-conf", str(conf), "--nginx-tz", "UTC"]
    for extra in ([], ["-v"]):
        res = cli("analyze", str(p), *args, *extra)
        assert res.exit_code == 0, res.output
        assert "nginx log" in res.output and "nginx.conf" in res.output
        _no_escapes(res.output)
    _no_escapes(cli("conns", str(p)).output)


def test_error_message_escapes_control_characters(tmp_path):
    p = tmp_path / ("bad" + ESC.replace("/", "_") + ".pcap")
    p.write_bytes(b"GET / HTTP/1.1\r\n\r\n")
    _no_escapes(one_line_error(cli("analyze", "-q", str(p))))


# ---------------------------------------- 10. outputs follow no planted link
def _planted(d: Path, name: str) -> Path:
    """``d/name``: a symbolic link to a file of the user's, which must survive."""
    victim = d.parent / f"victim-{name}"
    victim.write_text("precious\n")
    d.mkdir(exist_ok=True)
    (d / name).symlink_to(victim)
    return victim


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_does_not_follow_a_planted_symlink(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(3)))
    out = tmp_path / "tables"
    victim = _planted(out, f"resets.{fmt}")
    res = cli("analyze", "-q", str(p), "--export", str(out), "--export-format", fmt)
    assert res.exit_code == 1  # (after the report: the tables come last)
    assert res.output.splitlines()[-1].startswith("Error: ") and "symbolic link" in res.output
    assert victim.read_text() == "precious\n"


def test_plot_does_not_follow_a_planted_symlink(tmp_path):
    pytest.importorskip("matplotlib")
    from pcapreset.notebook.files import PLOT_FILES

    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(3)))
    out = tmp_path / "plots"
    victim = _planted(out, PLOT_FILES[0])
    res = cli("analyze", "-q", str(p), "--plot", str(out))
    assert res.exit_code == 1
    assert res.output.splitlines()[-1].startswith("Error: ") and "symbolic link" in res.output
    assert victim.read_text() == "precious\n"


def test_live_write_does_not_follow_a_planted_symlink(tmp_path):
    import os

    from pcapreset.capture.pcapwriter import PcapWriter
    from pcapreset.errors import CaptureSourceError

    victim = _planted(tmp_path / "out", "live.pcap")
    with pytest.raises(CaptureSourceError, match="symbolic link"):
        PcapWriter(str(tmp_path / "out" / "live.pcap"))
    assert victim.read_text() == "precious\n"
    os.mkfifo(tmp_path / "out" / "fifo.pcap")  # (no reader: would block forever)
    with pytest.raises(CaptureSourceError, match="FIFO"):
        PcapWriter(str(tmp_path / "out" / "fifo.pcap"))
    hard = tmp_path / "out" / "hard.pcap"
    os.link(victim, hard)
    with pytest.raises(CaptureSourceError, match="hard links"):
        PcapWriter(str(hard))
    assert victim.read_text() == "precious\n"
    plain = tmp_path / "out" / "mine.pcap"
    plain.write_bytes(b"old contents, longer than a pcap header" * 3)
    w = PcapWriter(str(plain))  # a file the user named: overwritten
    w.close()
    assert plain.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1" and plain.stat().st_size == 24


# ---------------------------------------------- 11. unreadable input: exit 1
@pytest.mark.parametrize("which", ["capture", "nginx-log", "nginx-conf"])
def test_unreadable_input_is_exit_status_1(tmp_path, which):
    """A file this user may not read is the readers' one-line error and exit
    status 1, as the README says, not click's usage error (status 2). (The
    tests run as root: the CLI runs without the capabilities that let root
    read any file.)"""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(2)))
    secret = write(tmp_path / "secret", pcap_bytes(conns_records(2)))
    secret.chmod(0)
    args = {
        "capture": [str(secret)],
        "nginx-log": [str(p), "--nginx-log", str(secret)],
        "nginx-conf": [str(p), "--nginx-conf", str(secret)],
    }[which]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    run = subprocess.run(
        [*drop, sys.executable, "-m", "pcapreset", "analyze", "-q", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Permission denied" in lines[0] and "Traceback" not in run.stderr


@pytest.mark.parametrize("opt", ["--nginx-log", "--nginx-conf"])
def test_directory_as_nginx_input_is_exit_status_1(tmp_path, opt):
    p = write(tmp_path / "c.pcap", pcap_bytes(conns_records(2)))
    one_line_error(cli("analyze", "-q", str(p), opt, str(tmp_path)))
