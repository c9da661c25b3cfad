"""The live verdict stream gives the final report's resets, event for event.

Every sample capture is fed as live batches (engine.run_batches, the path of
``analyze --iface``) through a VerdictStream; what it streamed must be the
resets of the report built at the end: as many, each with the same verdict
(follow-up RSTs and the kernel's RST after a forged one belong to the reset
before them, live as offline: interpret.resets).
"""

from __future__ import annotations

import pytest
from conftest import sample_captures, stream_live_batches

from pcapreset.report.build import build


@pytest.mark.parametrize("evict", [True, False], ids=["evict", "keep"])
@pytest.mark.parametrize("path", sample_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_streamed_verdicts_are_the_reports(path, evict):
    res, streamed = stream_live_batches(path, evict)
    rep = build(res)
    final = [rep.reset_json(r) for r in rep.resets]
    assert len(streamed) == len(final)
    # the verdict of each event; its evidence sentences may count what had
    # been seen when it was streamed ("5 connections reset ... within 100 ms"
    # where the whole capture has 6)
    assert sorted(map(verdict, streamed)) == sorted(map(verdict, final))


def verdict(r: dict) -> tuple:
    return tuple(r[k] for k in ("ts", "client", "server", "sender", "cause", "confidence", "rule",
                                "phase"))  # fmt: skip


def test_follow_ups_are_not_streamed():
    """Not vacuous: some sample capture has more RST events than resets."""
    events = resets = 0
    for path in sample_captures():
        res, streamed = stream_live_batches(path, True)
        events += sum(len(c.rst_events) for c in res.conns)
        resets += len(streamed)
    assert events > resets > 0
