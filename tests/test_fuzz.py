"""Property: reader + decoder + flow tracker raise nothing but PcapResetError, on any bytes.

CI=true loads the "ci" hypothesis profile (10,000 examples per test, see
conftest.py); locally the "dev" profile runs a few hundred.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from conftest import http_conn, ng_idb, ng_shb, pcap_bytes, sample_captures
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapreset.api import analyze
from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CHUNK
from pcapreset.capture.timeline import _decoded, merge_by_time, open_readers
from pcapreset.engine import run as engine
from pcapreset.engine.tracking import Tracking
from pcapreset.errors import PcapResetError

_DIR = Path(tempfile.mkdtemp(prefix="pcapreset-fuzz-"))
_LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]
chunks = st.sampled_from([CHUNK, 64, 333])
#: a 4 KB capture read 64 bytes at a time is ~60 tiny batches: 10x slower per example
real_chunks = st.sampled_from([CHUNK, 1024, 333])
#: the whole-library property is slower (evidence, rules, report): a fifth of the examples
FULL_EXAMPLES = max(50, settings.default.max_examples // 5)


def pipeline(data: bytes, chunk: int = CHUNK) -> int:
    """The whole offline engine up to connections; returns the number of TCP packets."""
    path = _DIR / f"f{os.getpid()}.bin"
    path.write_bytes(data)
    try:
        readers = open_readers([str(path)])
        for r in readers:
            r.chunk = chunk
        dec = Decoder()
        tr = Tracking(3000, evict=False)
        for b in merge_by_time([_decoded(r, dec) for r in readers]):
            assert len(b.ts) == len(b.src) == len(b.plen)
            assert (b.pcap >= 0).all() and (b.pcap <= b.plen).all()
            assert (b.optlen >= 0).all() and (b.optlen <= 40).all()
            buf_len = np.array([len(b.bufs[i]) for i in b.bufidx.tolist()], dtype=np.int64)
            assert (b.poff + b.pcap <= buf_len).all()
            assert (b.poff - b.optlen >= 0).all()
            tr.feed(b)
        res = engine.finish(tr, dec, [r.info for r in readers], None)
    except PcapResetError:
        return -1
    st_ = res.decode
    accounted = st_.tcp + st_.non_ip + st_.non_tcp + st_.ip_fragments
    accounted += sum(st_.undecodable.values()) + sum(st_.unsupported.values())
    assert accounted == st_.frames
    assert sum(i.frames for i in res.sources) == st_.frames
    return st_.tcp


def _small_real_capture() -> bytes:
    """The first ~40 records of a real lab capture (or a synthetic exchange if none yet)."""
    caps = sample_captures()
    if not caps:
        from conftest import ether

        return pcap_bytes([(t, ether(p)) for t, p in http_conn()])
    pref = [p for p in caps if p.parent.name.startswith("keepalive_race")]
    data = (pref or caps)[0].read_bytes()
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    for _ in range(40):
        if pos + 16 > len(data):
            break
        pos += 16 + struct.unpack_from(e + "I", data, pos + 8)[0]
    return data[:pos]


REAL = _small_real_capture()


def _pcap_header(lt: int, ns: bool, big: bool) -> bytes:
    return pcap_bytes([], linktype=lt, ns=ns, endian=">" if big else "<")


@given(st.binary(max_size=2000), chunks)
def test_arbitrary_bytes(data, chunk):
    pipeline(data, chunk)


@given(st.sampled_from(_LINKTYPES), st.booleans(), st.booleans(), st.binary(max_size=3000),
       chunks)  # fmt: skip
def test_bytes_after_a_pcap_header(lt, ns, big, data, chunk):
    pipeline(_pcap_header(lt, ns, big) + data, chunk)


@given(st.lists(st.sampled_from(_LINKTYPES), min_size=1, max_size=3), st.booleans(),
       st.binary(max_size=3000), chunks)  # fmt: skip
def test_bytes_after_pcapng_shb_idb(lts, big, data, chunk):
    e = ">" if big else "<"
    head = ng_shb(e) + b"".join(ng_idb(lt, e) for lt in lts)
    pipeline(head + data, chunk)


@given(
    st.lists(st.tuples(st.integers(0, len(REAL) * 8 - 1)), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(24, len(REAL) - 1), st.binary(min_size=1, max_size=4)),
             max_size=3),
    real_chunks,
)  # fmt: skip
def test_mutated_real_capture(flips, overwrites, chunk):
    b = bytearray(REAL)
    for (bit,) in flips:
        b[bit // 8] ^= 1 << (bit % 8)
    for at, chunk_bytes in overwrites:
        b[at : at + len(chunk_bytes)] = chunk_bytes
    pipeline(bytes(b), chunk)


@settings(max_examples=FULL_EXAMPLES)
@given(st.lists(st.integers(24 * 8, len(REAL) * 8 - 1), min_size=1, max_size=6))
def test_mutated_real_capture_full_report(bits):
    """The whole library (evidence, rules, report) on bit-flipped real packets."""
    b = bytearray(REAL)
    for bit in bits:
        b[bit // 8] ^= 1 << (bit % 8)
    path = _DIR / f"r{os.getpid()}.pcap"
    path.write_bytes(bytes(b))
    try:
        rep = analyze(str(path))
    except PcapResetError:
        return
    rep.to_json()


def test_the_seed_capture_is_real_tcp():
    """The mutation seed is not vacuous: unmutated, it decodes to TCP packets."""
    assert pipeline(REAL) >= 8
