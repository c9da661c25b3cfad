"""Reading/decoding in a forked child (pipeline.py) gives the same result as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bench_capture

from pcapreset.engine import run as engine
from pcapreset.engine.pipeline import run_pipelined
from pcapreset.errors import CaptureError
from pcapreset.report.build import build
from pcapreset.report.result import EngineResult

ROOT = Path(__file__).resolve().parents[1]


def _json(res: EngineResult) -> str:
    j = build(res).to_json()
    j.pop("tool", None)
    return json.dumps(j, sort_keys=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return bench_capture(tmp_path_factory, 300, 11)


def test_pipelined_equals_single_process(generated):
    one = engine.run([str(generated)])
    two = run_pipelined([str(generated)], None)
    assert len(two.conns) == len(one.conns) == 300
    assert _json(two) == _json(one)


@pytest.mark.parametrize("fmt", ["sll2", "pcapng", "pcap.gz"])
def test_pipelined_equals_single_process_in_each_format(tmp_path, fmt):
    """Each format is read into the ring's slots (a single file: pcapng as
    well as pcap) or copied there (gzip)."""
    import sys

    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    import benchgen

    path = tmp_path / f"gen.{fmt}"
    benchgen.write(str(path), fmt, n_conns=300, seed=11)
    one = engine.run([str(path)])
    two = run_pipelined([str(path)], None, evict=True)
    assert len(one.conns) == 300
    assert _json(two) == _json(one)


def test_pipelined_small_slots_and_several_files(generated, monkeypatch, tmp_path):
    # tiny slots force the "inline" path for every batch; two files merge by time
    import pcapreset.engine.pipeline as pl

    monkeypatch.setattr(pl, "SLOT_SIZE", 1024)
    caps = sorted(ROOT.glob("sample_pcaps/keepalive_race_*/backend.pcap"))[:2]
    if len(caps) < 2:
        pytest.skip("lab captures missing")
    paths = [str(generated)] + [str(c) for c in caps]
    assert _json(run_pipelined(paths, None)) == _json(engine.run(paths))


def test_pipelined_lab_captures_with_port():
    for cap in sorted(ROOT.glob("sample_pcaps/*/nginx.pcap"))[:5]:
        one = engine.run([str(cap)], port=3000)
        assert _json(run_pipelined([str(cap)], 3000)) == _json(one), cap


@pytest.mark.parametrize("who", ["child", "parent", "alternating"])
def test_heads_parsed_by_either_process_give_the_same_report(generated, monkeypatch, who):
    """The child sends a batch without its HTTP heads when the parent has
    time (pipeline._parent_is_idle); the parent then parses them. Forced
    each way, and alternating batch by batch, the report is the same."""
    import pcapreset.engine.pipeline as pl

    turn = iter(range(10**6))
    idle = {
        "child": lambda ring: False,
        "parent": lambda ring: True,
        "alternating": lambda ring: next(turn) % 2 == 1,
    }[who]
    monkeypatch.setattr(pl, "_parent_is_idle", idle)  # (the forked child's too)
    seen: list[bool] = []  # per batch: did it come with its heads?
    unpack = pl._unpack

    def counting(spec, view):
        bufs, b = unpack(spec, view)
        if b is not None:
            seen.append(b.heads is not None)
        return bufs, b

    monkeypatch.setattr(pl, "_unpack", counting)
    caps = [generated, *sorted(ROOT.glob("sample_pcaps/*/nginx.pcap"))[:3]]
    for cap in caps:
        seen.clear()
        assert _json(run_pipelined([str(cap)], None)) == _json(engine.run([str(cap)])), cap
        assert seen
        if who == "child":
            assert all(seen)
        elif who == "parent":
            assert not any(seen)
        elif len(seen) > 1:
            assert any(seen) and not all(seen)


def test_pipelined_bad_input_is_a_capture_error(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_text("not a capture at all\n")
    with pytest.raises(CaptureError):
        run_pipelined([str(bad)], None)


def test_damage_found_by_the_child_reaches_the_report(generated, tmp_path):
    data = generated.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])  # cut in the middle of a record
    one = engine.run([str(cut)])
    two = run_pipelined([str(cut)], None)
    assert [w["kind"] for w in two.warnings] == [w["kind"] for w in one.warnings]
    assert "truncated_record" in [w["kind"] for w in two.warnings]
    assert _json(two) == _json(one)


@pytest.mark.parametrize("share", [0, 1, 64, 255, 256])
def test_child_share_of_tracking_changes_nothing(generated, monkeypatch, share):
    """With eviction the reader child tracks the connections of its hash
    buckets; any share gives the single-process report (256: the child tracks
    everything, so an empty result from it would show)."""
    import pcapreset.engine.pipeline as pl

    monkeypatch.setattr(pl, "CHILD_BUCKETS", share)
    one = engine.run([str(generated)], evict=True)
    two = run_pipelined([str(generated)], None, evict=True)
    assert two.rollup is not None and one.rollup is not None
    assert len(two.conns) + two.rollup.count == 300
    assert _json(two) == _json(one)
