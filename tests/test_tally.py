"""The live context tally, fed batch by batch, is the context computed at once.

interpret.tally.ContextTally keeps what a live verdict reads of the
per-capture context (SYN times, the server's RSTs and refused connects, the
round-trip time per server) from the rows the rollup folded since its last
call plus the connections held; after every batch of every sample capture
(cut into 0.1 s of capture time, evicting or not) it must equal
build_context over the same connections (and, kept to the SYN windows of
some connections, give the same counts in those windows).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_captures, time_slices

from pcapreset.capture.sources import CaptureReader
from pcapreset.engine import rollup as rollup_mod
from pcapreset.engine import run as engine
from pcapreset.interpret.context import build_context
from pcapreset.interpret.evidence import _count_within
from pcapreset.interpret.tally import ContextTally
from pcapreset.interpret.thresholds import INSTANT_S


def _fields(ctx, servers) -> tuple:
    def arrays(d):
        return {k: np.sort(np.asarray(v, np.float64)).tolist() for k, v in d.items() if len(v)}

    return (
        arrays(ctx.syn_times),
        arrays(ctx.server_rst_times),
        arrays(ctx.refused_times),
        {s: ctx.rtt.get(s) for s in servers},
    )


@pytest.mark.parametrize(
    ("evict", "block"), [(True, None), (True, 4), (False, None)], ids=["evict", "block4", "keep"]
)
@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tally_fed_in_batches_is_the_context_at_once(path, evict, block, monkeypatch):
    """``block``: the rollup's rows spill in blocks of 4 (ContextTally reads
    them back from any row on)."""
    if block is not None:
        monkeypatch.setattr(rollup_mod, "ROLLUP_BLOCK", block)
    tally = ContextTally()
    rows = []
    checked = []

    def on_batch(ft, dec, rollup):
        live = tally.update(ft.conns, rollup)
        whole = build_context(ft.conns, rollup)
        servers = set(whole.rtt) | {c.server for c in ft.conns}
        assert _fields(live, servers) == _fields(whole, servers)
        # restricted to the SYN windows of the connections held: the same counts
        around: dict[int, list[float]] = {}
        for c in ft.conns:
            if c.syn_ts is not None:
                around.setdefault(c.server, []).append(c.syn_ts)
        near = tally.update(ft.conns, rollup, around)
        for c in ft.conns:
            if c.syn_ts is not None:
                n = _count_within(whole.syn_times[c.server], c.syn_ts, INSTANT_S, INSTANT_S)
                assert _count_within(near.syn_times[c.server], c.syn_ts, INSTANT_S, INSTANT_S) == n
        checked.append(sum(len(v) for v in whole.syn_times.values()))
        rows.append(0 if rollup is None else len(rollup))

    reader = CaptureReader(str(path))
    try:
        engine.run_batches(
            time_slices(reader.batches(), 0.1), [reader.info], on_batch=on_batch, evict=evict
        )
    finally:
        reader.close()
    assert checked and checked[-1] > 0
    if evict:
        assert all(n == tally._rows for n in rows[-1:])


def test_tally_reads_rolled_up_rows():
    """Not vacuous: some sample capture folds connections into the rollup
    while it is fed (with rows over several blocks of 4)."""
    assert any(_rows_folded(p) > 8 for p in sample_captures())


def _rows_folded(path) -> int:
    reader = CaptureReader(str(path))
    try:
        res = engine.run_batches(time_slices(reader.batches(), 0.1), [reader.info], evict=True)
    finally:
        reader.close()
    return 0 if res.rollup is None else len(res.rollup)


def test_runs_hold_every_value_and_find_those_within_windows():
    """_Runs, added to in pieces, holds every value (sorted runs, few of them)
    and gives exactly the values inside any union of windows."""
    from pcapreset.interpret.tally import _Runs

    rng = np.random.default_rng(21)
    runs, every = _Runs(), []
    for _ in range(200):
        part = rng.uniform(0, 100, int(rng.integers(0, 50)))
        runs.add(part)
        every += part.tolist()
    assert len(runs.runs) <= 2 * np.log2(len(every)) + 2
    assert sorted(np.concatenate(runs.within(None)).tolist()) == sorted(every)
    for _ in range(20):
        lo = rng.uniform(-5, 100, int(rng.integers(1, 6)))
        spans = np.column_stack([lo, lo + rng.uniform(0, 3, len(lo))])
        got = sorted(np.concatenate(runs.within(spans)).tolist())
        want = sorted(x for x in every if any(a <= x <= b for a, b in spans))
        assert got == want
