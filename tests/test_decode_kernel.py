"""decode_kernel (the compiled per-frame loop) agrees with decode's numpy code.

The kernel settles plain IPv4 frames and leaves everything else to numpy; on
every sample, public and malformed capture, and on arbitrary mutated frames
of every link type, the decoded rows and every counter must be the same as
the numpy code alone gives. Both the compiled kernel (when built) and its
plain-Python source are checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import CORPUS, MALFORMED, ether, ipv4, null, sample_captures, sll, sll2, tcp
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapreset import _build
from pcapreset.capture import decode, decode_kernel
from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CaptureReader, FrameBatch
from pcapreset.capture.tcp import _COLS, AddressBook
from pcapreset.errors import PcapResetError

CORPUS_FILES = sorted(p for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
MALFORMED_FILES = (
    sorted(p for p in MALFORMED.iterdir() if p.is_file()) if MALFORMED.is_dir() else []
)
_PLAIN_KERNEL = _build.load_source(
    "pcapreset.capture._decode_kernel_source", "capture.decode_kernel"
)
KERNELS = [pytest.param(_PLAIN_KERNEL, id="plain")]
if decode_kernel.COMPILED:
    KERNELS.append(pytest.param(decode_kernel, id="compiled"))


def decoded(batches: list[FrameBatch], kernel: bool) -> tuple[dict, dict]:
    """All rows (columns concatenated, payload bytes instead of offsets) and the counters."""
    dec = Decoder(AddressBook(), kernel=kernel)
    rows: dict[str, list] = {c: [] for c in _COLS}
    rows["payload"] = []
    for fb in batches:
        b = dec.decode(fb)
        for c in _COLS:
            rows[c] += getattr(b, c).tolist()
        for bi, p, n in zip(b.bufidx.tolist(), b.poff.tolist(), b.pcap.tolist(), strict=True):
            rows["payload"].append(bytes(b.bufs[bi][p : p + n]))
    return rows, dataclasses.asdict(dec.stats)


def agree(batches: list[FrameBatch], kernel_mod, monkeypatch) -> tuple[dict, dict]:
    monkeypatch.setattr(decode, "decode_kernel", kernel_mod)
    fast = decoded(batches, kernel=True)
    slow = decoded(batches, kernel=False)
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]
    return fast


def batches_of(path) -> list[FrameBatch]:
    try:
        r = CaptureReader(str(path))
    except PcapResetError as e:
        pytest.skip(f"not a capture: {e}")
    return list(r.batches())


@pytest.mark.parametrize("kernel_mod", KERNELS)
@pytest.mark.parametrize(
    "path",
    [*sample_captures(), *CORPUS_FILES, *MALFORMED_FILES],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_kernel_equals_numpy_on_captures(path, kernel_mod, monkeypatch):
    agree(batches_of(path), kernel_mod, monkeypatch)


def test_kernel_settles_plain_ipv4(monkeypatch):
    """Not vacuous: on a real Ethernet/IPv4 capture the numpy code sees no frame."""
    path = next(p for p in sample_captures() if p.parent.name == "keepalive_race_node")
    seen = []
    numpy_decode = Decoder._decode_numpy

    def spy(self, fb):
        seen.append(len(fb.off))
        return numpy_decode(self, fb)

    monkeypatch.setattr(Decoder, "_decode_numpy", spy)
    rows, stats = agree(batches_of(path), _PLAIN_KERNEL, monkeypatch)
    assert stats["tcp"] > 50 and len(rows["ts"]) == stats["tcp"]
    # the comparison decoded every frame with numpy once (kernel=False) ...
    assert sum(seen) == stats["frames"]


# ------------------------------------------------------------ arbitrary frames
def _frame(lt: int, ip: bytes) -> bytes:
    if lt == 1:
        return ether(ip)
    if lt == 113:
        return sll(ip)
    if lt == 276:
        return sll2(ip)
    if lt in (0, 108):
        return null(ip, endian="<" if lt == 0 else ">")
    return ip


@st.composite
def frames(draw) -> tuple[int, bytes, int]:
    lt = draw(st.sampled_from([1, 113, 276, 12, 14, 101, 228, 229, 0, 108, 147]))
    flags = draw(st.integers(0, 0x1FF))
    payload = draw(st.binary(max_size=40))
    opts = draw(st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x01" * 12]))
    seg = tcp(seq=draw(st.integers(0, 2**32 - 1)), flags=flags, opts=opts, payload=payload)
    ip = ipv4(
        "10.0.0.1",
        "10.0.0.2",
        seg,
        proto=draw(st.sampled_from([6, 6, 6, 17])),
        ipid=draw(st.integers(0, 65535)),
        frag_off=draw(st.sampled_from([0, 0, 0, 8])),
        total_len=draw(st.one_of(st.none(), st.integers(0, 200))),
    )
    raw = bytearray(_frame(lt, ip))
    for _ in range(draw(st.integers(0, 3))):  # damage anywhere in the headers
        if raw:
            at = draw(st.integers(0, min(len(raw), 80) - 1))
            raw[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    extra = draw(st.integers(0, 100))
    return lt, bytes(raw[:cut]), cut + extra


@pytest.mark.parametrize("kernel_mod", KERNELS)
@settings(max_examples=min(2000, settings.default.max_examples))
@given(st.lists(frames(), min_size=1, max_size=12))
def test_kernel_equals_numpy_on_arbitrary_frames(kernel_mod, fr):
    # each frame after a 16-byte record header, as in a pcap chunk
    buf = b"".join(b"\xee" * 16 + f for _lt, f, _w in fr)
    lens = [len(f) for _lt, f, _w in fr]
    off = (np.cumsum([0, *lens[:-1]]) + 16 * np.arange(1, len(fr) + 1)).astype(np.int64)
    n = len(fr)
    fb = FrameBatch(
        buf=buf,
        off=off,
        caplen=np.array(lens, dtype=np.int64),
        wirelen=np.array([w for _lt, _f, w in fr], dtype=np.int64),
        ts=np.arange(n, dtype=np.float64),
        linktype=np.array([lt for lt, _f, _w in fr], dtype=np.int32),
        frame_no=np.arange(1, n + 1, dtype=np.int64),
        file_index=0,
    )
    with pytest.MonkeyPatch.context() as mp:
        agree([fb], kernel_mod, mp)


def test_frames_outside_the_buffer_never_reach_the_kernel(monkeypatch):
    """The compiled kernel reads without index checks: decode hands it only
    batches whose frames all lie inside the buffer."""
    from pcapreset.capture.decode import _inside

    def fb(off: list[int], cap: list[int], size: int) -> FrameBatch:
        n = len(off)
        return FrameBatch(
            buf=b"\x00" * size,
            off=np.array(off, dtype=np.int64),
            caplen=np.array(cap, dtype=np.int64),
            wirelen=np.array(cap, dtype=np.int64),
            ts=np.zeros(n),
            linktype=np.ones(n, dtype=np.int32),
            frame_no=np.arange(1, n + 1, dtype=np.int64),
            file_index=0,
        )

    assert _inside(fb([16, 100], [60, 60], 160))
    assert not _inside(fb([16, 100], [60, 61], 160))
    assert not _inside(fb([-1], [10], 160))
    assert not _inside(fb([16], [-5], 160))
    called = []
    monkeypatch.setattr(Decoder, "_decode_kernel", lambda self, b: called.append(b))
    Decoder(AddressBook(), kernel=True).decode(fb([16, 100], [60, 61], 160))
    assert called == []
