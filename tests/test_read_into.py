"""CaptureReader.alloc: a capture read into buffers the caller hands out
(the CLI's reader child reads straight into its shared-memory ring) yields
exactly the frames and warnings of an ordinary read, for pcap and pcapng,
plain and gzip files, any chunk size, damaged and truncated files included."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from conftest import CORPUS, MALFORMED, sample_captures

from pcapreset.capture.sources import CaptureReader
from pcapreset.errors import PcapResetError

MALFORMED_PCAPS = (
    sorted(
        p
        for p in MALFORMED.iterdir()
        if p.is_file() and p.suffix in (".pcap", ".cap", ".pcapng", ".ntar")
    )
    if MALFORMED.is_dir()
    else []
)
PUBLIC_PCAPNGS = sorted(CORPUS.glob("*.pcapng")) if CORPUS.is_dir() else []


class Pool:
    """Hands out views of a few reused buffers, like the ring's slots."""

    def __init__(self, size: int, n: int = 2) -> None:
        self.bufs = [bytearray(size) for _ in range(n)]
        self.next = 0
        self.calls = 0

    def alloc(self, size: int) -> memoryview:
        self.calls += 1
        b = self.bufs[self.next]
        self.next = (self.next + 1) % len(self.bufs)
        assert size <= len(b)
        b[:] = b"\xaa" * len(b)  # stale bytes must never be read
        return memoryview(b)


def frames(path: Path, chunk: int, pool: Pool | None) -> tuple[list, dict]:
    try:
        r = CaptureReader(str(path), chunk=chunk)
    except PcapResetError as e:
        return [str(e)], {}
    if pool is not None:
        r.alloc = pool.alloc
    out = []
    for fb in r.batches():
        # copy out now: the next chunk reuses the buffer
        out.append(
            [
                (int(fn), float(t), int(w), bytes(fb.buf[o : o + c]))
                for o, c, w, t, fn in zip(
                    fb.off.tolist(),
                    fb.caplen.tolist(),
                    fb.wirelen.tolist(),
                    fb.ts.tolist(),
                    fb.frame_no.tolist(),
                    strict=True,
                )
            ]  # fmt: skip
        )
    return out, dict(r.info.warnings)


def _kind(p: Path) -> str | None:
    try:
        r = CaptureReader(str(p))
    except PcapResetError:
        return None
    r.close()
    return r.kind


def _cases(tmp_path: Path) -> list[Path]:
    caps = sample_captures()[:6] + PUBLIC_PCAPNGS[:4]
    out = []
    for p in caps:
        gz = tmp_path / (p.parent.name + "-" + p.name + ".gz")
        with open(p, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        out += [p, gz]
    return out


@pytest.mark.parametrize("chunk", [333, 4096, 1 << 20])
def test_read_into_equals_read(tmp_path, chunk):
    cases = _cases(tmp_path) + MALFORMED_PCAPS
    assert cases
    for p in cases:
        pool = Pool(chunk + (2 << 20))
        assert frames(p, chunk, pool) == frames(p, chunk, None), p
        if _kind(p) is not None and p.stat().st_size > 24:
            assert pool.calls > 0, p  # (not vacuous: the buffers were used)
    kinds = {_kind(p) for p in cases}
    assert {"pcap", "pcapng"} <= kinds, kinds
