"""Eviction (issue #8): connections that are over are folded into a Rollup and
dropped while the capture is read; the report must not change.

Every sample and public capture gives the same JSON and text with and without
eviction; a generated capture with many closed connections really evicts most
of them (one process, pipelined, two shards, live-style batches) and still
gives the same report, connection ids included; Rollup.merge equals one Rollup
over everything; a capture whose clock goes backwards behind an evicted
connection is analysed again without eviction. No timing is asserted.
"""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest
from conftest import CORPUS, rollup_fields, same_report, sample_captures, stream_live_batches
from hypothesis import given
from hypothesis import strategies as st

from pcapreset import analyze
from pcapreset.capture.sources import CaptureReader
from pcapreset.engine import run as engine
from pcapreset.engine.pipeline import run_pipelined
from pcapreset.engine.result import order_conns
from pcapreset.engine.rollup import Rollup
from pcapreset.errors import PcapResetError
from pcapreset.interpret.context import build_context, conn_rtt
from pcapreset.interpret.findings import conn_findings
from pcapreset.interpret.vantage import Votes, conn_order
from pcapreset.report.build import build

CAPTURES = sample_captures() + (sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else [])


def _both(path, **kw):
    """(report with eviction, report without), or None when the capture is refused
    (then both must refuse it with the same message)."""
    try:
        keep = analyze(path, evict=False, **kw)
    except PcapResetError as e:
        with pytest.raises(PcapResetError) as again:
            analyze(path, evict=True, **kw)
        assert str(again.value) == str(e)
        return None
    return analyze(path, evict=True, **kw), keep


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_report_identical_with_eviction(path):
    both = _both(path)
    if both is not None:
        same_report(*both)


# ------------------------------------------------------------ generated capture
def _kept_rows_match(evicted, full) -> None:
    """Each kept connection has the id (and row) it has when nothing is evicted."""
    rows = {r["conn_id"]: r for r in full.conn_rows()}
    causes = evicted.last_reset_causes()
    for c in evicted.result.conns:
        assert evicted.conn_row(c, causes.get(c.id)) == rows[c.id]


def test_generated_capture_evicts_and_reports_thesame_report(generated):
    ev, full = _both(generated)
    rollup = ev.result.rollup
    assert rollup is not None and rollup.count > 0
    flows = ev.to_json()["flows"]
    assert flows == len(full.result.conns) == 600
    assert len(ev.result.conns) + rollup.count == flows
    assert len(ev.result.conns) < flows // 2
    same_report(ev, full)
    _kept_rows_match(ev, full)
    with pytest.raises(PcapResetError, match="evict=False"):
        ev.conn_rows()


@pytest.mark.parametrize("jobs", [2, 3])
def test_generated_capture_sharded(generated, jobs):
    ev, full = _both(generated, jobs=jobs)
    assert ev.result.rollup is not None and ev.result.rollup.count > 0
    same_report(ev, full)
    _kept_rows_match(ev, full)


def test_generated_capture_pipelined(generated, child_share):
    one = engine.run([str(generated)])
    res = run_pipelined([str(generated)], None, evict=True)
    assert res.rollup is not None and res.rollup.count > 0
    same_report(build(res), build(one))
    via_run = engine.run([str(generated)], pipelined=True, evict=True)
    same_report(build(via_run), build(one))


def test_live_batches_evict_and_stream_thesame_report(generated):
    """run_batches (the live path) evicts too; the verdict stream's context
    (over the kept connections plus the rollup) gives the same verdicts."""
    out = {evict: stream_live_batches(generated, evict) for evict in (False, True)}
    (res0, s0), (res1, s1) = out[False], out[True]
    assert res1.rollup is not None and res1.rollup.count > 0
    assert s1 and s1 == s0
    same_report(build(res1), build(res0))


def _norm(ctx) -> tuple:
    """A Context with its per-server sample lists sorted (their order is not used)."""
    lists = (ctx.syn_times, ctx.server_rst_times, ctx.refused_times, ctx.idle_closes,
             ctx.race_gaps)  # fmt: skip
    return (
        ctx.vantage,
        [{k: sorted(v) for k, v in d.items()} for d in lists],
        list(ctx.idle_closes),  # the order of the servers is (ties in idle_summary)
        list(ctx.idle_timeout.items()),
        ctx.idle_timeout_basis,
        ctx.rtt,
        ctx.host_hops,
    )


def test_stream_context_is_the_full_context(generated, monkeypatch):
    """Mid-capture, build_context(tracker.conns, rollup) is the context over
    every connection so far (the live verdict stream relies on it)."""
    folded = []
    add_many = Rollup.add_many

    def recording_add_many(self, conns, *args):
        folded.extend(conns)
        add_many(self, conns, *args)

    monkeypatch.setattr(Rollup, "add_many", recording_add_many)
    checked = 0

    def on_batch(ft, _dec, rollup):
        nonlocal checked
        if rollup is None or not rollup.count:
            return
        assert not {id(c) for c in ft.conns} & {id(c) for c in folded}
        everything = sorted([*ft.conns, *folded], key=conn_order)
        assert _norm(build_context(list(ft.conns), rollup)) == _norm(build_context(everything))
        checked += 1

    reader = CaptureReader(str(generated))
    try:
        engine.run_batches(reader.batches(), [reader.info], on_batch=on_batch)
    finally:
        reader.close()
    assert checked and folded


# ------------------------------------------------------------------- Rollup
def _evictable(path):
    """All connections of ``path`` (nothing evicted) and those eviction may fold."""
    res = engine.run([str(path)])
    ok = [c for c in res.conns if not c.rst_events and conn_rtt(c) and not conn_findings(c)]
    return res, ok


def test_rollup_merge_equals_one_rollup(generated):
    res, ok = _evictable(generated)
    assert len(ok) > 100
    whole, a, b = Rollup(), Rollup(), Rollup()
    rng = random.Random(1)
    for c in ok:
        whole.add(c)
        (a if rng.random() < 0.5 else b).add(c)
    b.reordered = True
    a.merge(b)
    whole.reordered = True
    assert rollup_fields(a, sorted) == rollup_fields(whole, sorted)
    empty = Rollup()
    empty.merge(whole)
    assert rollup_fields(empty, sorted) == rollup_fields(whole, sorted)


def test_rollup_plus_kept_is_the_whole_context(generated):
    """Any split of the foldable connections gives the context over all of them,
    and the ids order_conns gives the kept ones are their ranks among all."""
    res, ok = _evictable(generated)
    want = build_context(res.conns)
    ids = {id(c): c.id for c in res.conns}
    for seed in range(3):
        rng = random.Random(seed)
        rollup = Rollup()
        gone = {id(c) for c in ok if rng.random() < 0.8}
        for c in ok:
            if id(c) in gone:
                rollup.add(c)
        kept = [c for c in res.conns if id(c) not in gone]
        rng.shuffle(kept)
        assert _norm(build_context(kept, rollup)) == _norm(want)
        order_conns(kept, rollup)
        assert [c.id for c in kept] == sorted(ids[id(c)] for c in kept)
        assert all(c.id == ids[id(c)] for c in kept)


def test_rollup_refuses_a_connection_the_report_needs(generated):
    res = engine.run([str(generated)])
    with pytest.raises(ValueError):
        Rollup().add(next(c for c in res.conns if c.rst_events))


@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=40),
)
def test_votes_best_is_most_common_in_report_order(votes):
    """Votes.best() is Counter.most_common(1) over the voters in report order,
    whichever voters came first and however they are split and merged."""
    keyed = [(value, (float(i), 0, 0, 0), early) for i, (value, early) in enumerate(votes)]
    want = Counter(v for v, _k, _e in keyed).most_common(1)[0]
    early, late = Votes(), Votes()
    for value, key, e in reversed(keyed):  # any arrival order
        (early if e else late).add(value, key)
    merged = early.copy()
    merged.merge(late)
    assert merged.best() == want
    assert merged.total() == len(votes)


# ------------------------------------------------ a clock that goes backwards
def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record of a little-endian µs pcap."""
    pos, out = 24, []
    while pos + 16 <= len(data):
        n = struct.unpack_from("<I", data, pos + 8)[0]
        out.append((pos, 16 + n))
        pos += 16 + n
    return out


def test_straggler_behind_an_evicted_connection(generated, tmp_path):
    """A copy of an early packet (nginx's ACK) late in the file, with its old
    timestamp: without eviction it joins its old connection; once that
    connection is evicted it starts a new one. Eviction stays on (a capture
    whose clock goes back must not cost the memory bound): the report counts
    the extra connection and says why in a warning."""
    data = generated.read_bytes()
    recs = _records(data)

    def ack_to_backend(i: int) -> bool:
        o = recs[i][0] + 16  # Ethernet + IPv4 (20 bytes) + TCP
        return data[o + 23] == 6 and data[o + 36 : o + 38] == b"\x0b\xb8" and data[o + 47] == 0x10

    src = next(i for i in range(200, len(recs)) if ack_to_backend(i))
    off, n = recs[src]
    cut = recs[-50][0]
    p = tmp_path / "straggler.pcap"
    p.write_bytes(data[:cut] + data[off : off + n] + data[cut:])
    ev, full = _both(p)
    assert ev.result.rollup is not None and ev.result.rollup.reordered
    assert ev.to_json()["flows"] == full.to_json()["flows"] + 1
    late = [w for w in ev.to_json()["capture"]["warnings"] if w["kind"] == "late_packets"]
    assert len(late) == 1 and late[0]["count"] == 1
    assert "late packet of a summarised connection" in late[0]["message"]


def test_conn_order_is_order_conns_key(generated):
    res = engine.run([str(generated)])
    assert [c.id for c in sorted(res.conns, key=conn_order)] == list(range(len(res.conns)))
