"""Eviction's cheap tests agree with the full ones.

``findings.no_finding`` proves from counters that no finding rule holds, so
that eviction need not run every rule on every plain connection; it may say
"maybe" (False) for a connection without a finding, never True for one with a
finding. ``fold.split`` must pick the connections the plain definition
picks (over, no RST event, its own round-trip time, no finding). Checked on
every connection of every sample and public capture and of a generated one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CORPUS, bench_capture, sample_captures

from pcapreset.engine import run as engine
from pcapreset.engine.fold import _mode, split
from pcapreset.errors import PcapResetError
from pcapreset.interpret.context import conn_rtt
from pcapreset.interpret.findings import conn_findings, no_finding

CAPTURES = sample_captures() + (sorted(CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else [])
_SEEN = {"fast": 0, "found": 0}


def _conns(path: Path) -> list:
    try:
        return engine.run([str(path)]).conns
    except PcapResetError as e:
        pytest.skip(f"unreadable: {e}")


def _check(conns: list) -> None:
    for c in conns:
        found = conn_findings(c)
        if no_finding(c):
            assert found == [], (c.id, found)
            _SEEN["fast"] += 1
        if found:
            _SEEN["found"] += 1
    # split (horizon +inf: every connection is over) = the plain definition
    want = [
        c for c in conns if not c.rst_events and conn_rtt(c) is not None and not conn_findings(c)
    ]
    keep, out, frozen = split(list(conns), float("inf"))
    assert keep == [] and out == want
    assert frozen == [c for c in conns if c.rst_events]
    # nothing is over before the capture starts
    keep, out, frozen = split(list(conns), float("-inf"))
    assert keep == list(conns) and out == [] and frozen == []


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_finding_agrees_with_the_rules(path):
    _check(_conns(path))


def test_no_finding_on_a_generated_capture(tmp_path_factory):
    path = bench_capture(tmp_path_factory, 600, 7)
    conns = _conns(path)
    _check(conns)
    # not vacuous: most connections take the fast path
    assert sum(no_finding(c) for c in conns) > len(conns) // 2


def test_not_vacuous():
    """Run after the captures above: both sides of the test were exercised."""
    if not CAPTURES:
        pytest.skip("no captures")
    if not _SEEN["fast"]:
        for p in CAPTURES[:20]:
            try:
                _check(engine.run([str(p)]).conns)
            except PcapResetError:
                continue
    assert _SEEN["fast"] > 0
    found = sum(bool(conn_findings(c)) for p in sample_captures() for c in _conns(p))
    assert found > 0  # the samples have connections with findings (no fast path there)


@pytest.mark.parametrize(
    "counts", [{64: 3}, {64: 1, 63: 1}, {63: 1, 64: 2, 62: 2}, {1: 5, 2: 5, 3: 4}, {7: 0}]
)
def test_mode_is_max_by_count(counts):
    assert _mode(counts) == max(counts, key=counts.__getitem__)
