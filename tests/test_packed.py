"""Packed reset connections (issue #8, flat memory): once engine.Evictor holds
more than PACK_AFTER slimmed reset connections it packs them (pcapreset.engine.packed)
and the report unpacks each one once; the report must not change.

With PACK_AFTER = 0 (every slimmed reset connection with its own round-trip
time is packed) and SPILL_AFTER = 0 (the packed connections and their
records all in spill files), every sample and public capture gives the same JSON and text
as without eviction; a generated capture really packs, in one process,
pipelined, sharded and through the live path, and its nginx log matching is
the same; a packed connection unpacks to what was packed; Packed.merge equals
one Packed. No timing is asserted.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest
from conftest import CORPUS, same_report, sample_captures, stream_live_batches

from pcapreset import analyze
from pcapreset.engine import evictor, spill
from pcapreset.engine import run as engine
from pcapreset.engine.packed import ConnStub, Packed, full_conn, packable, unpack
from pcapreset.engine.result import order_conns
from pcapreset.engine.rollup import Rollup
from pcapreset.errors import PcapResetError
from pcapreset.interpret.context import build_context, conn_rtt
from pcapreset.interpret.evidence import rst_facts
from pcapreset.report.build import build
from pcapreset.track.conn import freeze_conn
from pcapreset.track.connstate import conn_state

ROOT = Path(__file__).resolve().parents[1]

CAPTURES = sample_captures() + (sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else [])


@pytest.fixture
def pack_all(monkeypatch):
    monkeypatch.setattr(evictor, "PACK_AFTER", 0)
    monkeypatch.setattr(spill, "SPILL_AFTER", 0)


def _packed(rep) -> int:
    r = rep.result.rollup
    return 0 if r is None else len(r.packed)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_report_identical_with_packing(path, pack_all):
    try:
        keep = analyze(path, evict=False)
    except PcapResetError:
        return  # refused input (test_evict checks both refuse it alike)
    same_report(analyze(path, evict=True), keep)


def _all_packed(path):
    """(the report of ``path`` with every reset connection that has its own
    round-trip time packed, as if the capture had gone on, the report with
    nothing packed), or None for a refused capture."""
    try:
        res = engine.run([str(path)])
    except PcapResetError:
        return None
    want = build(res)
    res = engine.run([str(path)])
    rollup = Rollup()
    shared: dict = {}
    packing = [c for c in res.conns if c.rst_events and packable(c)]
    for c in packing:
        freeze_conn(c, shared)
    rollup.packed.add(packing)
    gone = {id(c) for c in packing}
    res.conns = order_conns([c for c in res.conns if id(c) not in gone], rollup)
    res.rollup = rollup
    return build(res), want, len(packing)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_report_identical_when_every_reset_is_packed(path):
    got = _all_packed(path)
    if got is not None:
        rep, want, _n = got
        same_report(rep, want)


def test_captures_with_resets_pack():
    """The test above is not vacuous."""
    n = [got[2] for p in sample_captures() if (got := _all_packed(p)) is not None]
    assert sum(1 for k in n if k) >= 25


def test_sample_captures_pack(pack_all):
    """The test above is not vacuous: the lab's captures do pack."""
    packed = [p for p in sample_captures() if _packed(analyze(p, evict=True))]
    assert len(packed) >= 8


# ------------------------------------------------------------ generated capture
@pytest.fixture(scope="module")
def full(generated):
    return analyze(generated, evict=False)


def test_generated_capture_packs_and_reports_thesame_report(generated, full, pack_all):
    ev = analyze(generated, evict=True)
    n = _packed(ev)
    resets = sum(1 for c in full.result.conns if c.rst_events)
    assert 0 < n <= resets
    assert ev.to_json()["flows"] == len(full.result.conns)
    same_report(ev, full)
    stubs = [r for r in ev.resets if isinstance(r.conn, ConnStub)]
    assert len({r.conn.id for r in stubs}) == n  # every packed one: stubs, not Conns
    # the packed connections and their records were read back from files
    assert ev.result.rollup.packed.blobs.spilled == n
    assert ev.resets.packed._spill.spilled == len(stubs)
    assert all(r.event.conn is r.conn for r in stubs)
    ids = {(c.start, c.client, c.server): c.id for c in full.result.conns}
    assert all(ids[(r.conn.start, r.conn.client, r.conn.server)] == r.conn.id for r in stubs)
    with pytest.raises(PcapResetError, match="evict=False"):
        ev.conn_rows()


def test_packing_threshold(generated, full, monkeypatch):
    """Below PACK_AFTER nothing is packed; above it, the oldest beyond the
    first PACK_AFTER are: the same ones, in the same order, as the first
    of those packed with a threshold of 0, and the report is the same."""
    monkeypatch.setattr(evictor, "PACK_AFTER", 10_000)
    assert _packed(analyze(generated, evict=True)) == 0
    monkeypatch.setattr(evictor, "PACK_AFTER", 0)
    every = list(analyze(generated, evict=True).result.rollup.packed.ids)
    for after in (5, 17):
        monkeypatch.setattr(evictor, "PACK_AFTER", after)
        ev = analyze(generated, evict=True)
        assert len(every) > after and _packed(ev) == len(every) - after
        assert list(ev.result.rollup.packed.ids) == every[: len(every) - after]
        same_report(ev, full)


@pytest.mark.parametrize("jobs", [2, 3])
def test_generated_capture_sharded(generated, full, jobs, pack_all):
    ev = analyze(generated, evict=True, jobs=jobs)
    assert _packed(ev) > 0
    same_report(ev, full)


def test_generated_capture_pipelined(generated, full, pack_all, child_share):
    res = engine.run([str(generated)], pipelined=True, evict=True)
    assert res.rollup is not None and len(res.rollup.packed) > 0
    same_report(build(res), full)


def test_live_batches_pack_and_stream_thesame_report(generated, pack_all):
    out = {evict: stream_live_batches(generated, evict) for evict in (False, True)}
    (res0, s0), (res1, s1) = out[False], out[True]
    assert res1.rollup is not None and len(res1.rollup.packed) > 0
    assert s1 and s1 == s0
    same_report(build(res1), build(res0))


def test_nginx_log_matching_thesame_report(pack_all):
    """Matching nginx's error.log reads the packed connections again (full_conn)."""
    d = ROOT / "sample_pcaps" / "keepalive_race_node"
    logs = sorted(d.glob("*error.log"))
    assert logs
    kw = {"nginx_log": [str(p) for p in logs], "nginx_tz": "UTC"}
    ev = analyze(d / "nginx.pcap", evict=True, **kw)
    assert _packed(ev) > 0
    same_report(ev, analyze(d / "nginx.pcap", evict=False, **kw))
    assert (
        ev.to_json()["nginx_log"]
        == analyze(d / "nginx.pcap", evict=False, **kw).to_json()["nginx_log"]
    )


# ------------------------------------------------------------------ Packed
def _packable(path):
    res = engine.run([str(path)])
    ok = [c for c in res.conns if c.rst_events and packable(c)]
    shared: dict = {}
    for c in ok:
        freeze_conn(c, shared)
    return res, ok


def _dump(c) -> tuple:
    """Every value the report reads of a connection."""
    evs = [
        (
            {k: getattr(ev, k) for k in ev.__slots__ if k not in ("conn", "exchange", "packets")},
            [p.as_dict() for p in ev.packets],
            None if ev.exchange is None else c.exchanges.index(ev.exchange),
        )
        for ev in c.rst_events
    ]
    return (conn_state(c), c.history, c.start, c.end, c.role_rule, c.resp_headers, evs)


def test_unpack_is_what_was_packed(generated):
    res, ok = _packable(generated)
    assert len(ok) > 10
    ctx = build_context(res.conns)
    for c in ok:
        back = unpack(pickle.dumps(c, pickle.HIGHEST_PROTOCOL))
        assert back is not c
        assert _dump(back) == _dump(c)
        assert all(ev.conn is back for ev in back.rst_events)
        assert [rst_facts(back, ev, ctx) for ev in back.rst_events] == [
            rst_facts(c, ev, ctx) for ev in c.rst_events
        ]
        p = Packed()
        p.blobs.append(pickle.dumps(c))
        stub = ConnStub(c, p, 0)
        again = full_conn(stub)
        assert _dump(again) == _dump(c)
        assert again.id == c.id and all(ev.conn is None for ev in again.rst_events)
        assert full_conn(c) is c


def test_packed_merge_equals_one_packed(generated):
    res, ok = _packable(generated)
    whole, a, b = Packed(), Packed(), Packed()
    rng = random.Random(3)
    whole.add(ok)
    for c in ok:
        (a if rng.random() < 0.5 else b).add([c])
    a.merge(b)
    assert len(a) == len(whole) == len(ok)

    def fields(p: Packed) -> dict:
        order = p.order().tolist()
        return {
            "keys": [(p.starts[j], p.clients[j], p.servers[j]) for j in order],
            "conns": [_dump(unpack(p.blobs[j])) for j in order],
            "votes": [v.v for v in (p.pairs, p.conly, p.sonly, p.backends, p.timeouts)],
            "hosts": {h: v.v for h, v in p.hosts.items()},
            "rtts": {k: sorted(v) for k, v in p.rtts.items()},
            "samples": {
                name: {k: sorted(v) for k, v in getattr(p.samples, name).items()}
                for name in ("syn", "server_rst", "refused", "idle", "race")
            },
            "idle_first": p.samples.idle_first,
        }

    assert fields(a) == fields(whole)


def test_packed_context_is_the_whole_context(generated):
    """build_context over the others plus a Rollup holding the packed ones
    is the context over all of them."""
    res, ok = _packable(generated)
    want = build_context(res.conns)
    rollup = Rollup()
    rollup.packed.add(ok)
    gone = {id(c) for c in ok}
    kept = [c for c in res.conns if id(c) not in gone]
    got = build_context(kept, rollup)
    for name in ("vantage", "rtt", "host_hops", "idle_timeout", "idle_timeout_basis"):
        assert getattr(got, name) == getattr(want, name), name
    for name in ("syn_times", "server_rst_times", "refused_times", "idle_closes", "race_gaps"):
        a, b = getattr(got, name), getattr(want, name)
        assert {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}, name


def test_packable(generated):
    """Refused connects (no round trip of their own) are packed too; a
    connection caught mid-stream (no handshake, with data) is not."""
    res = engine.run([str(generated)])
    assert any(conn_rtt(c) is None for c in res.conns if c.rst_events and packable(c))
    assert all(packable(c) for c in res.conns)
    midstream = CORPUS / "zeek__tcp__missing-syn.pcap"
    if not midstream.exists():
        pytest.skip("public corpus not present")
    res = engine.run([str(midstream)])
    c = next(c for c in res.conns if not packable(c))
    assert conn_rtt(c) is None and c.exchanges
    with pytest.raises(ValueError):
        Packed().add([c])


def test_each_conn_lets_go_of_packed_connections(generated, pack_all):
    """Unpacking makes a connection and its events point at each other again;
    the next step of each_conn breaks that, so with the cyclic GC paused (the
    CLI) an unpacked connection is freed once its caller lets go of it."""
    res = engine.run([str(generated)], evict=True)
    seen = list(res.each_conn())
    packed = [c for c, j in seen if j is not None]
    assert len(packed) > 10
    assert all(ev.conn is None for c in packed for ev in c.rst_events)
    assert all(ev.conn is c for c, j in seen if j is None for ev in c.rst_events)


def test_records_encode_and_decode_to_the_same_json(generated, pack_all):
    """A packed connection's record is kept encoded (report._encode) and made
    again on each read; also when its verdict's evidence is not its facts
    in order (a fact replaced under the same name, as a second aftermath
    fold does)."""
    from pcapreset.engine.packed import _decode, _encode
    from pcapreset.interpret.fact import Fact

    rep = analyze(generated, evict=True)
    recs = [r for r in rep.resets if isinstance(r.conn, ConnStub)]
    assert len(recs) > 10
    packed = rep.result.rollup.packed
    for r in recs:
        back = _decode(_encode(r), packed)
        assert rep.reset_json(back) == rep.reset_json(r)
        assert list(back.facts) == list(r.facts)
        assert back.conn.fields() == r.conn.fields()
        assert back.event.fields() == r.event.fields()
        ids = {id(f) for f in back.verdict.evidence}
        assert all(id(f) in ids for f in back.verdict.matched)
    r = recs[0]
    name = next(iter(r.facts))
    old = r.facts[name]
    new = Fact(name, old.text + " (again)")
    r.facts[name] = new
    r.verdict.evidence.append(new)
    back = _decode(_encode(r), packed)
    assert [f.text for f in back.verdict.evidence] == [f.text for f in r.verdict.evidence]
    assert back.facts[name].text == new.text
    assert back.facts[name] is back.verdict.evidence[-1]
    assert rep.reset_json(back) == rep.reset_json(r)


def test_records_sequence_in_time_order(generated, pack_all):
    """Report.resets (report.Records) reads like a list of the records in time
    order: by index, negative index and slice, with their verdict pairs,
    clients and servers alongside."""
    rep = analyze(generated, evict=True)
    recs = rep.resets
    js = [rep.reset_json(r) for r in recs]
    n = len(recs)
    assert n > 10 and recs.packed._spill.spilled > 0  # some of them read back from a file
    assert [x["ts"] for x in js] == sorted(x["ts"] for x in js)
    assert [rep.reset_json(recs[i]) for i in range(n)] == js
    assert rep.reset_json(recs[-1]) == js[-1] and rep.reset_json(recs[-n]) == js[0]
    assert [rep.reset_json(r) for r in recs[2:7]] == js[2:7]
    assert [rep.reset_json(r) for r in recs[::-3]] == js[::-3]
    with pytest.raises(IndexError):
        recs[n]
    assert list(recs.pairs()) == [(x["cause"], x["sender"]) for x in js]
    assert [rep.ep(c) for c in recs.clients()] == [x["client"] for x in js]
    assert [rep.ep(s) for s in recs.servers()] == [x["server"] for x in js]
