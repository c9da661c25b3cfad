"""The live verdict stream gives the final report's resets, event for event.

Every sample capture is fed as live batches (engine.run_batches, the path of
``analyze --iface``), cut into 0.1 s of capture time as a live capture yields
them, through a VerdictStream; what it streamed must be the resets of the
report built at the end: as many, each with the same verdict (follow-up RSTs
and the kernel's RST after a forged one belong to the reset before them, live
as offline: interpret.resets). A reset is streamed before the end only when
nothing still to come can change its verdict (interpret.tally.unsure_facts,
interpret.rules.decided).
"""

from __future__ import annotations

import pytest
from conftest import sample_captures, stream_live_batches

from pcapreset.engine.evictor import EVICT_SLACK_S
from pcapreset.interpret.rules import RULES, classify, decided
from pcapreset.report.build import build
from pcapreset.report.stream import VerdictStream


@pytest.mark.parametrize("evict", [True, False], ids=["evict", "keep"])
@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_streamed_verdicts_are_the_reports(path, evict):
    stream = VerdictStream(print, delay_s=0.5, min_rebuild_s=0.0, over_slack_s=EVICT_SLACK_S)
    res, streamed = stream_live_batches(path, evict, slice_s=0.1, stream=stream)
    rep = build(res)
    final = [rep.reset_json(r) for r in rep.resets]
    assert len(streamed) == len(final) == stream.emitted
    # the verdict of each event; its evidence lists the sure facts only when
    # it was streamed before the end
    assert sorted(map(verdict, streamed)) == sorted(map(verdict, final))


def verdict(r: dict) -> tuple:
    return tuple(r[k] for k in ("ts", "client", "server", "sender", "cause", "confidence", "rule",
                                "phase"))  # fmt: skip


def test_verdicts_streamed_before_the_end():
    """Not vacuous: some resets are final and streamed while the capture runs,
    some wait for the end (their verdict reads the whole capture)."""
    live = at_end = 0
    for path in sample_captures():
        stream = VerdictStream(print, delay_s=0.5, min_rebuild_s=0.0, over_slack_s=EVICT_SLACK_S)
        stream_live_batches(path, True, slice_s=0.1, stream=stream)
        live += stream.emitted - stream.at_end
        at_end += stream.at_end
    assert live > 0 and at_end > 0


def test_follow_ups_are_not_streamed():
    """Not vacuous: some sample capture has more RST events than resets."""
    events = resets = 0
    for path in sample_captures():
        res, streamed = stream_live_batches(path, True)
        events += sum(len(c.rst_events) for c in res.conns)
        resets += len(streamed)
    assert events > resets > 0


def test_decided_reads_the_rules_three_valued():
    """On every sample reset: with nothing unsure, the verdict of classify;
    with a fact its rule needs unsure, open; with a fact no row names unsure,
    the same verdict."""
    n = 0
    for path in sample_captures():
        res, _ = stream_live_batches(path, False)
        for r in build(res).resets:
            v = classify(r.facts)
            assert decided(r.facts, ()) == v
            assert decided(r.facts, {"no_row_names_this"}) == v
            rule = next((x for x in RULES if x.name == v.rule), None)
            if rule is not None and rule.needs:
                assert decided(r.facts, {rule.needs[-1]}) is None
                n += 1
    assert n > 0
