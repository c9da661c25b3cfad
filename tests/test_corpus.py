"""Every public capture and every malformed file through `pcapreset analyze --format json`.

../shared/corpus/public/ (326 real captures) and its malformed/ folder (see its
MANIFEST.tsv): no traceback, no hang, a one-line error for files that are not a
capture / empty / unknown link type, warnings with counts for damage, JSON valid
against the shipped schema, and the packet accounting adds up:

    capture.packets == tcp_packets + other_packets
                       + counts of the undecodable / unsupported_linktype / ip_fragments warnings

``capture.packets`` counts the frames handed to the decoder. Records the *reader*
had to drop before that (pcapng packets naming an interface with no description
block: ``undefined_interface``; packet blocks with an impossible length:
``damaged_blocks``) are not frames of a known link type; they have their own
warnings with counts, and ``capture.files[].packets`` sums to ``capture.packets``.
"""

from __future__ import annotations

import json
import signal
import struct
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import CORPUS, MALFORMED

from pcapreset.cli import QUIET_WARNINGS, main

SUPPORTED = {0, 1, 10, 12, 14, 101, 108, 113, 228, 229, 276}  # SPEC.md "Input" + FDDI
ACCOUNTED = ("undecodable", "unsupported_linktype", "ip_fragments")
READER_DROPS = ("undefined_interface", "damaged_blocks")

PUBLIC = sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
BROKEN = sorted(p for p in MALFORMED.glob("*") if p.suffix != ".tsv") if MALFORMED.is_dir() else []
SCHEMA = json.loads(resources.files("pcapreset.report").joinpath("report.schema.json").read_text())
needs_corpus = pytest.mark.skipif(not PUBLIC, reason=f"public corpus not found at {CORPUS}")


class Hang(Exception):
    pass


@pytest.fixture
def bounded():
    """Fail (instead of hanging the suite) if one file takes more than 30 s."""

    def alarm(_sig, _frm):
        raise Hang("analyze did not finish within 30 s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def expected_error(path: Path) -> str | None:
    """Why this file should be refused (from its bytes, not from pcapreset), or None."""
    head = path.read_bytes()[:24]
    if not head:
        return "empty"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    le = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\x34\xcd\xb2\xa1")
    magics = {m: "<" for m in le} | {m[::-1]: ">" for m in le}
    if head[:4] in magics:
        lt = struct.unpack(magics[head[:4]] + "I", head[20:24])[0] & 0x03FFFFFF
        return None if lt in SUPPORTED else "unsupported link type"
    if head[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng"  # decided by the interfaces inside: checked from the JSON side
    return "not a pcap"


def check_file(path: Path) -> dict | None:
    res = run("analyze", "--format", "json", str(path))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"traceback: {res.exception!r}") from res.exception
    want = expected_error(path)
    if res.exit_code != 0:
        err = res.stderr.splitlines()
        assert len(err) == 1, res.stderr
        assert err[0].startswith("Error: ") and str(path) in err[0]
        assert res.stdout == ""
        assert want is not None, f"refused a readable capture: {err[0]}"
        if want == "pcapng":
            assert "unsupported link type" in err[0]
        else:
            assert want in err[0]
        return None
    assert want in (None, "pcapng"), f"accepted a file that should be refused ({want})"
    rep = json.loads(res.stdout)
    jsonschema.validate(rep, SCHEMA)
    cap = rep["capture"]
    counts: dict[str, int] = {}
    for w in cap["warnings"]:
        assert w["count"] > 0 and str(w["count"]) in w["message"]
        counts[w["kind"]] = counts.get(w["kind"], 0) + w["count"]
    accounted = cap["tcp_packets"] + cap["other_packets"] + sum(counts.get(k, 0) for k in ACCOUNTED)
    assert cap["packets"] == accounted, (cap["packets"], accounted, counts)
    assert sum(f["packets"] for f in cap["files"]) == cap["packets"]
    # warnings go to stderr too, one line each, with their counts
    shown = [w for w in cap["warnings"] if w["kind"] not in QUIET_WARNINGS]
    err = [ln for ln in res.stderr.splitlines() if ln]
    assert len(err) == len(shown)
    for ln, w in zip(err, shown, strict=True):
        assert ln == f"pcapreset: warning: {w['message']}"
    return rep


@needs_corpus
@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: p.name)
def test_public_capture(path, bounded):
    rep = check_file(path)
    if rep is not None:
        assert rep["capture"]["packets"] > 0


@pytest.mark.skipif(not BROKEN, reason=f"malformed corpus not found at {MALFORMED}")
@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_malformed_file(path, bounded):
    check_file(path)


@needs_corpus
def test_corpus_is_mostly_readable():
    """Not vacuous: the bulk of the public corpus is analysed, with TCP and resets."""
    ok = tcp = rst = 0
    for p in PUBLIC:
        res = run("analyze", "--format", "json", "-q", str(p))
        if res.exit_code == 0:
            rep = json.loads(res.stdout)
            ok += 1
            tcp += rep["capture"]["tcp_packets"]
            rst += len(rep["resets"])
    assert ok >= 0.95 * len(PUBLIC)
    assert tcp > 10_000 and rst > 300


# ------------------------------------------- real captures damaged on purpose
def _real_pcap() -> Path:
    for name in ("zeek__http__get.trace.pcap", "chrissanders__ppa1e__http-client-refuse.pcap"):
        if (CORPUS / name).is_file():
            return CORPUS / name
    cands = [p for p in PUBLIC if p.suffix == ".pcap" and expected_error(p) is None]
    return max(cands, key=lambda p: p.stat().st_size)


def _records(data: bytes) -> list[int]:
    """Record start offsets of a little/big-endian µs pcap (for cutting at known places)."""
    e = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    pos, out = 24, []
    while pos + 16 <= len(data):
        out.append(pos)
        pos += 16 + struct.unpack_from(e + "I", data, pos + 8)[0]
    return out


@needs_corpus
def test_real_capture_cut_mid_record(tmp_path, bounded):
    src = _real_pcap()
    data = src.read_bytes()
    recs = _records(data)
    assert len(recs) > 10
    cut = recs[len(recs) // 2] + 20  # 4 bytes into the data of the middle record
    p = tmp_path / "cut.pcap"
    p.write_bytes(data[:cut])
    rep = check_file(p)
    assert rep is not None
    w = {x["kind"]: x for x in rep["capture"]["warnings"]}
    assert w["truncated_record"]["count"] == 1
    assert rep["capture"]["files"][0]["packets"] == len(recs) // 2


@needs_corpus
def test_real_capture_with_garbage_in_the_middle(tmp_path, bounded):
    src = _real_pcap()
    data = src.read_bytes()
    recs = _records(data)
    mid = recs[len(recs) // 2]
    p = tmp_path / "garbage.pcap"
    p.write_bytes(data[:mid] + b"\xff" * 333 + data[mid:])
    rep = check_file(p)
    assert rep is not None
    w = {x["kind"]: x for x in rep["capture"]["warnings"]}
    assert w["damaged_bytes"]["count"] == 333
    assert rep["capture"]["files"][0]["packets"] == len(recs)  # every record still read
    clean = json.loads(run("analyze", "--format", "json", "-q", str(src)).stdout)
    assert rep["flows"] == clean["flows"]
    assert len(rep["resets"]) == len(clean["resets"])
