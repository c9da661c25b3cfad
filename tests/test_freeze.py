"""Slimmed connections (issue #8, flat memory): a connection with a reset is kept
for the report; once it is over, engine.Evictor slims it (flows.freeze_conn).

Every sample and public capture gives the same report, text and connection
rows when every connection is slimmed; the slim form really drops the state
machine's lists and shares equal containers; the evictor slims the kept
connections of a generated capture; the report's median is statistics.median.
No timing is asserted.
"""

from __future__ import annotations

import json
import statistics
import sys
from array import array

import pytest
from conftest import CORPUS, sample_captures
from hypothesis import given
from hypothesis import strategies as st

from pcapreset.engine import run as engine
from pcapreset.errors import PcapResetError
from pcapreset.interpret.context import median
from pcapreset.interpret.evidence import rst_facts
from pcapreset.report.build import build
from pcapreset.report.text import render_text
from pcapreset.track.conn import SHARED_MAX, freeze_conn
from pcapreset.track.connstate import conn_state

CAPTURES = sample_captures() + (sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else [])


def _frozen(c) -> bool:
    return getattr(c.zk, "prev", None) is None  # (unset slot, or None in a C struct)


def _report(res):
    rep = build(res)
    j = rep.to_json()
    return j, json.dumps(j), render_text(rep, verbose=True), rep.conn_rows()


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_slimmed_connections_report_the_same(path):
    try:
        whole = engine.run([str(path)])
    except PcapResetError:
        return  # refused input: nothing to slim
    before = _report(whole)
    shared: dict = {}
    for c in whole.conns:  # the capture is over: none of them can change
        freeze_conn(c, shared)
    assert all(_frozen(c) for c in whole.conns)
    assert _report(whole) == before


def test_frozen_form_drops_the_heavy_parts(generated):
    res = engine.run([str(generated)])
    conns = [c for c in res.conns if c.rst_events and c.exchanges]
    assert len(conns) >= 2
    state = [(conn_state(c), c.history, c.requests, c.zk.delete_at) for c in conns]
    shared: dict = {}
    for c in conns:
        freeze_conn(c, shared)
    for c, (cs, hist, reqs, delete_at) in zip(conns, state, strict=True):
        for name in ("prev", "closed", "last_syn", "last_fin", "last_rst", "flags_seen"):
            assert getattr(c.zk, name, None) is None  # the state machine's lists are gone
        assert c.zk.delete_at == delete_at
        assert len(c.hist) == 1 and c.history == hist
        assert (conn_state(c), c.requests) == (cs, reqs)
        for ex in c.exchanges:
            assert sys.intern(ex.target) is ex.target
    # equal containers are one object
    a, b = conns[0], conns[1]
    if a.c.ttls == b.c.ttls and list(a.c.ttls.items()) == list(b.c.ttls.items()):
        assert a.c.ttls is b.c.ttls
    if list(a.resp_headers.items()) == list(b.resp_headers.items()):
        assert a.resp_headers is b.resp_headers
    assert len(shared) <= SHARED_MAX


def test_sharing_is_bounded():
    from pcapreset.track.conn import _shared

    shared: dict = {}
    for i in range(SHARED_MAX + 10):
        _shared(shared, {i: 1})
    assert len(shared) == SHARED_MAX
    d = {SHARED_MAX + 20: 1}
    assert _shared(shared, d) is d  # no room: kept as it is
    e = {0: 1}
    assert _shared(shared, e) == e and _shared(shared, e) is not e


def test_evictor_slims_kept_resets(generated):
    res = engine.run([str(generated)], evict=True)
    assert res.rollup is not None and res.rollup.count > 0
    resets = [c for c in res.conns if c.rst_events]
    frozen = [c for c in resets if _frozen(c)]
    assert frozen, "the generated capture's early resets are over long before its end"
    # slimmed ones left the tracker's tables; the others are whole
    assert not any(_frozen(c) for c in res.conns if not c.rst_events)


def test_shared_facts_are_equal_facts(generated):
    res = engine.run([str(generated)])
    rep = build(res)
    texts = {}
    for r in rep.resets:
        for name, f in r.facts.items():
            assert f.name == name
            if (name, f.text) in texts:
                assert texts[(name, f.text)] is f  # one object per (name, text)
            texts.setdefault((name, f.text), f)
    c = rep.resets[0].conn
    again = rst_facts(c, rep.resets[0].event, rep.ctx)
    assert {k: v.text for k, v in again.items()} == {
        k: v.text for k, v in rep.resets[0].facts.items() if k != "aftermath_rst"
    }


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_median_is_statistics_median(xs):
    assert median(xs) == statistics.median(xs)
    assert median(array("d", xs)) == statistics.median(xs)
