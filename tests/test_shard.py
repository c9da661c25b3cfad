"""--jobs N shards connection tracking across processes: same result as one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pcapreset import analyze
from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CaptureReader
from pcapreset.capture.tcp import AddressBook
from pcapreset.engine import run as engine
from pcapreset.engine.shard import shard_of
from pcapreset.errors import CaptureError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import benchgen  # noqa: E402


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, benchgen.Truth]:
    path = tmp_path_factory.mktemp("gen") / "gen.pcap"
    truth = benchgen.write(str(path), "pcap", n_conns=400, seed=7)
    return path, truth


def _stable(rep) -> str:
    j = rep.to_json()
    j.pop("tool", None)
    return json.dumps(j, sort_keys=True)


def test_generated_counts_match_truth(generated):
    path, truth = generated
    rep = analyze(path, jobs=1)
    j = rep.to_json()
    assert j["flows"] == truth.connections
    assert len(j["resets"]) == truth.rst_events
    assert j["capture"]["packets"] == truth.packets


@pytest.mark.parametrize("jobs", [2, 3])
def test_jobs_give_identical_report(generated, jobs):
    path, _truth = generated
    assert _stable(analyze(path, jobs=jobs)) == _stable(analyze(path, jobs=1))


def test_jobs_identical_on_lab_capture():
    caps = sorted(ROOT.glob("sample_pcaps/*/backend.pcap"))
    if not caps:
        pytest.skip("no lab captures in sample_pcaps/")
    for cap in caps[:4]:
        assert _stable(analyze(cap, jobs=2)) == _stable(analyze(cap, jobs=1)), cap


def test_shard_is_symmetric(generated):
    path, _truth = generated
    dec = Decoder(AddressBook())
    for fb in CaptureReader(str(path)).batches():
        b = dec.decode(fb)
        fwd = shard_of(b, 4)
        swapped = b.take(np.arange(len(b)))
        swapped.src, swapped.dst = b.dst, b.src
        assert (shard_of(swapped, 4) == fwd).all()
        assert set(np.unique(fwd)) <= {0, 1, 2, 3}
        break


def test_bad_input_fails_fast_with_jobs(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"hello world, not a capture")
    with pytest.raises(CaptureError):
        engine.run([str(bad)], jobs=2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 64, 256, 1000])
def test_shard_of_is_the_hash_modulo_n(generated, n):
    """Powers of two take a mask instead of the division: the same shards."""
    path, _truth = generated
    dec = Decoder(AddressBook())
    b = dec.decode(next(iter(CaptureReader(str(path)).batches())))
    lo = np.minimum(b.src, b.dst).astype(np.uint64)
    hi = np.maximum(b.src, b.dst).astype(np.uint64)
    h = (lo * np.uint64(0x9E3779B97F4A7C15)) ^ (hi * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= h >> np.uint64(29)
    assert (shard_of(b, n) == (h % np.uint64(n)).astype(np.int64)).all()
