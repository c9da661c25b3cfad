"""The Rollup's rows in blocks (issue #8, flat memory): a full block of
``rollup.ROLLUP_BLOCK`` rows goes to a spill.Spill (a temporary file past its
limit) and everything the report reads is worked out a block at a time.

With blocks of 1-3 rows, every one written out to the file at once
(``spill.SPILL_AFTER = 0``), every sample and public capture and the generated
one give the same report as with the normal blocks, in one process, pipelined
and sharded, with and without packing. On random rows with many equal keys,
the ranks and the tables equal a reference that joins every row and sorts
them (what the Rollup did before the blocks), merged and pickled too,
compiled and from source. No timing is asserted.
"""

from __future__ import annotations

import pickle
import random
from array import array
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CORPUS, rollup_fields, same_report, sample_captures

from pcapreset import _build, analyze
from pcapreset.engine import evictor, rollup, spill
from pcapreset.engine import run as engine
from pcapreset.engine.pipeline import run_pipelined
from pcapreset.errors import PcapResetError
from pcapreset.interpret.context import conn_rtt
from pcapreset.interpret.findings import conn_findings
from pcapreset.report.build import build

CAPTURES = sample_captures() + (sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else [])
_PLAIN: list = []


def plain_rollup():
    """pcapreset/rollup.py run from source (uncompiled), loaded once."""
    if not _PLAIN:
        _PLAIN.append(_build.load_source("pcapreset.engine._rollup_spill_source", "engine.rollup"))
    return _PLAIN[0]


@pytest.fixture(params=[1, 3])
def tiny_blocks(request, monkeypatch):
    """Rollups of ``request.param`` rows a block, every block in the file."""
    monkeypatch.setattr(rollup, "ROLLUP_BLOCK", request.param)
    monkeypatch.setattr(spill, "SPILL_AFTER", 0)
    assert rollup.Rollup().block == request.param  # (the compiled module sees it too)
    return request.param


def _spilled(rep) -> int:
    """Blocks of the report's Rollup in its spill file."""
    r = rep.result.rollup
    return 0 if r is None else r._blocks.spilled


# ------------------------------------------------------------ whole reports
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_report_identical_with_tiny_blocks(path, monkeypatch):
    try:
        normal = analyze(path, evict=True)
    except PcapResetError:
        return  # refused input (test_evict checks it is refused alike)
    monkeypatch.setattr(rollup, "ROLLUP_BLOCK", 2)
    monkeypatch.setattr(spill, "SPILL_AFTER", 0)
    same_report(analyze(path, evict=True), normal)


def test_captures_spill_blocks(monkeypatch):
    """The test above is not vacuous: some captures fill several blocks (the
    two keepalive_race_gunicorn samples; ten public ones when present)."""
    monkeypatch.setattr(rollup, "ROLLUP_BLOCK", 2)
    monkeypatch.setattr(spill, "SPILL_AFTER", 0)
    spilled = []
    for p in CAPTURES:
        try:
            if _spilled(analyze(p, evict=True)) >= 2:
                spilled.append(p)
        except PcapResetError:
            pass
    assert sum(1 for p in spilled if p.parent.name == "keepalive_race_gunicorn") == 2
    assert len(spilled) >= (8 if CORPUS.is_dir() else 2)


@pytest.fixture(scope="module")
def normal(generated):
    """The generated capture's report with the normal blocks (one block)."""
    rep = analyze(generated, evict=True)
    r = rep.result.rollup
    assert r is not None and 100 < r.count < r.block and not r._blocks
    return rep


@pytest.mark.parametrize("pack_after", [None, 0])
def test_generated_capture_one_process(generated, normal, tiny_blocks, pack_after, monkeypatch):
    if pack_after is not None:
        monkeypatch.setattr(evictor, "PACK_AFTER", pack_after)
    rep = analyze(generated, evict=True)
    r = rep.result.rollup
    assert r is not None and r.count == normal.result.rollup.count
    assert r._blocks.spilled == len(r._blocks) == r.count // tiny_blocks
    assert len(r._f) == tiny_blocks  # no more rows in memory than a block
    if pack_after is not None:
        assert len(r.packed) > 0
    same_report(rep, normal)


@pytest.mark.parametrize("jobs", [2, 3])
def test_generated_capture_sharded(generated, normal, tiny_blocks, jobs):
    rep = analyze(generated, evict=True, jobs=jobs)
    assert _spilled(rep) > 0
    same_report(rep, normal)


def test_generated_capture_pipelined(generated, normal, tiny_blocks, monkeypatch, child_share):
    res = run_pipelined([str(generated)], None, evict=True)
    assert res.rollup is not None and res.rollup._blocks.spilled > 0
    same_report(build(res), normal)
    monkeypatch.setattr(evictor, "PACK_AFTER", 0)
    res = run_pipelined([str(generated)], None, evict=True)
    assert res.rollup is not None and len(res.rollup.packed) > 0
    same_report(build(res), normal)


# ------------------------------------------------ against a plain reference
def _rows(rng: random.Random, n: int, nsig: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random rows with many equal keys (and whole equal rows)."""
    f = np.empty((n, 4), np.float64)
    i = np.empty((n, 3), np.int64)
    for k in range(n):
        f[k] = (rng.choice((1.0, 1.5, 2.0, 2.5)), rng.random(), rng.random(), np.nan)
        if rng.random() < 0.4:
            f[k, 3] = rng.choice((0.5, 7.0, rng.random()))
        i[k] = (rng.randrange(3), rng.randrange(4), rng.randrange(nsig))
    return f, i


def _sig(k: int) -> tuple:
    """A vote signature (hops, hosts, backend name, timeout) of index ``k``."""
    return (k % 3 or None, k % 2 or None, k % 5, 7, f"b{k % 2}" if k % 4 else None, None)


def _by_server(srv: np.ndarray, vals: np.ndarray) -> list:
    out: dict[int, list] = {}
    for s, v in zip(srv.tolist(), vals.tolist(), strict=True):
        out.setdefault(s, []).append(v)
    return list(out.items())


def _reference(f: np.ndarray, i: np.ndarray, sigs: list[tuple]) -> dict:
    """The tables over every row joined, as the Rollup worked them out
    before its blocks (one lexsort of every row)."""
    start, cli, srv, sid = f[:, 0], i[:, 0], i[:, 1], i[:, 2]
    order = np.lexsort((srv, cli, start)).tolist()
    key = [(float(start[r]), int(cli[r]), int(srv[r])) for r in range(len(f))]
    first_sig: dict[int, tuple] = {}
    first_idle: dict[int, tuple] = {}
    for r in order:
        first_sig.setdefault(int(sid[r]), key[r])
        if not np.isnan(f[r, 3]):
            first_idle.setdefault(int(srv[r]), key[r])
    counts = np.bincount(sid, minlength=len(sigs)).tolist()
    gap = ~np.isnan(f[:, 3])
    idle = _by_server(srv[gap], f[gap, 3])
    return {
        "count": len(f),
        "keys": key,
        "sigs": [(s, [counts[k], first_sig[k]]) for k, s in enumerate(sigs) if counts[k]],
        "rtts": _by_server(srv, f[:, 1]),
        "syn": _by_server(srv, f[:, 2]),
        "idle": idle,
        "idle_first": [(s, first_idle[s]) for s, _v in idle],
        "servers": set(srv.tolist()),
    }


def _tables(r) -> dict:
    """The same tables of a Rollup (dicts as item lists: their order counts)."""

    def lists(d: dict[int, array]) -> list:
        return [(s, a.tolist()) for s, a in d.items()]

    return {
        "count": r.count,
        "keys": list(r.keys()),
        "sigs": list(r.sigs.items()),
        "rtts": lists(r.rtts),
        "syn": lists(r.syn_times),
        "idle": lists(r.idle_gaps),
        "idle_first": list(r.idle_first.items()),
        "servers": r.server_set,
    }


def _filled(mod, f, i, sigs, block, limit) -> object:
    r = mod.Rollup(block)
    r._blocks.limit = limit
    for s in sigs:
        r._sig_id(s)
    at = 0
    while at < len(f):  # in uneven batches, as eviction adds them
        n = min(len(f) - at, 1 + (at * 7) % 5)
        r._append(f[at : at + n], i[at : at + n])
        at += n
    return r


def _reference_ranks(kept: list, packed: list, evicted: list) -> tuple[list, list]:
    """Ranks by one lexsort of every key: kept, then packed, then evicted
    ones among equal keys (engine.order_conns before the blocks)."""
    keys = kept + packed + evicted
    flag = [0] * len(kept) + [1] * len(packed) + [2] * len(evicted)
    order = np.lexsort(
        (
            np.arange(len(keys)),
            np.array(flag),
            np.array([k[2] for k in keys]),
            np.array([k[1] for k in keys]),
            np.array([k[0] for k in keys], np.float64),
        )
    )
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    return rank[: len(kept)].tolist(), rank[len(kept) : len(kept) + len(packed)].tolist()


def _keys(rng: random.Random, n: int) -> list[tuple[float, int, int]]:
    starts = (1.0, 1.5, 2.0, 2.5, 3.0)
    return [(rng.choice(starts), rng.randrange(3), rng.randrange(4)) for _ in range(n)]


@pytest.mark.parametrize("compiled", [True, False], ids=["module", "source"])
@pytest.mark.parametrize("block", [1, 2, 3, 7, 8192])
@pytest.mark.parametrize("limit", [0, None])
def test_tables_and_ranks_equal_the_joined_reference(compiled, block, limit):
    mod = rollup if compiled else plain_rollup()
    for seed in range(8):
        rng = random.Random(seed * 31 + block)
        sigs = [_sig(k) for k in range(5)]
        n = rng.choice((0, 1, 2, 5, 40, 150))
        f, i = _rows(rng, n, len(sigs))
        r = _filled(mod, f, i, sigs, block, limit)
        want = _reference(f, i, sigs)
        assert _tables(r) == want
        assert len(r._blocks) == n // block and r._n == n % block
        if limit == 0:
            assert r._blocks.spilled == len(r._blocks)
        back = pickle.loads(pickle.dumps(r))
        assert _tables(back) == want and back.block == block

        # ranks of kept and packed connections among all
        kept = _keys(rng, rng.choice((0, 1, 6, 30)))
        packed = _keys(rng, rng.choice((0, 1, 6, 30)))
        for p in (r, back):
            for k in packed:
                p.packed.blobs.append(b"")
                p.packed.starts.append(k[0])
                p.packed.clients.append(k[1])
                p.packed.servers.append(k[2])
            want_kept, want_packed = _reference_ranks(kept, packed, want["keys"])
            conns = [SimpleNamespace(start=s, client=c, server=v) for s, c, v in kept]
            assert p.ranks(conns) == want_kept
            assert list(p.packed.ids) == want_packed


@pytest.mark.parametrize("blocks", [(1, 1), (2, 3), (3, 8192), (8192, 2)])
def test_merge_is_the_joined_rows(blocks):
    """Merging a Rollup (another signature order, another block size) adds its
    rows after ours, signatures remapped: the tables of the rows joined."""
    rng = random.Random(sum(blocks))
    sigs = [_sig(k) for k in range(6)]
    f1, i1 = _rows(rng, 50, 4)  # signatures 0-3
    f2, i2 = _rows(rng, 60, 6)
    theirs = [sigs[k] for k in (5, 2, 4, 0, 3, 1)]  # i2's signatures, in another order
    a = _filled(rollup, f1, i1, sigs[:4], blocks[0], 0)
    b = _filled(rollup, f2, i2, theirs, blocks[1], None)
    b.reordered = True
    a.merge(pickle.loads(pickle.dumps(b)))
    # ours, then theirs that are new, in their order
    joined = sigs[:4] + [sigs[5], sigs[4]]
    mine = i2.copy()
    mine[:, 2] = [joined.index(theirs[k]) for k in i2[:, 2]]
    want = _reference(np.concatenate([f1, f2]), np.concatenate([i1, mine]), joined)
    assert a.sig_list == joined
    assert _tables(a) == want and a.reordered
    assert len(a._f) == blocks[0]


def test_rollup_fields_of_generated_rollups_in_blocks(generated, tiny_blocks):
    """A Rollup in blocks of 1-3 rows holds what one in a single block holds,
    row order included (rollup_fields with ``list``)."""
    res = engine.run([str(generated)])
    ok = [c for c in res.conns if not c.rst_events and conn_rtt(c) and not conn_findings(c)]
    assert len(ok) > 100
    small, one = rollup.Rollup(), rollup.Rollup(1 << 16)
    for at in range(0, len(ok), 10):
        small.add_many(ok[at : at + 10])
        one.add_many(ok[at : at + 10])
    assert small._blocks.spilled == len(small._blocks) > 30
    assert not one._blocks
    assert rollup_fields(small, list) == rollup_fields(one, list)
