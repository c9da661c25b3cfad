"""stream: the verdicts of a live capture, each as soon as nothing can change it.

:class:`VerdictStream` turns the FlowTracker's new RstEvents into the
verdicts the final report gives them, each as soon as no packet still to
come can change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..interpret.context import build_context
from ..interpret.resets import ResetRecord, conn_resets
from ..interpret.rules import decided
from ..interpret.tally import ContextTally, unsure_facts
from ..textsafe import utc
from .model import Report
from .records import Records
from .result import EngineResult


class VerdictStream:
    """Emits each reset's verdict once it is final (capture clock), else at the end.

    ``emit`` receives the reset as the JSON report writes it
    (:meth:`pcapreset.report.model.Report.reset_json`), one per reset as the
    report counts them (:func:`pcapreset.interpret.resets.conn_resets`: RST
    events that belong to the reset before them are not emitted), with the
    report's verdict: a reset waits until

    - its connection is over (past Zeek's close delay by ``over_slack_s``,
      the engine's slack for packets a little out of order,
      ``engine.evictor.EVICT_SLACK_S``: no packet changes it any more; ~6 s
      after a RST), and ``delay_s`` has passed since it, and
    - no fact the rest of the capture can still change
      (:func:`pcapreset.interpret.tally.unsure_facts`: the capture-wide idle
      timeout and host baselines, windows of time not yet past) can change
      its verdict (:func:`pcapreset.interpret.rules.decided`).

    Its evidence then lists only the facts that are sure. Resets whose
    verdict stays open are emitted by :meth:`flush`, at the end of the
    capture, over the context of the whole capture (the report's).

    The context a verdict reads is kept up to date batch by batch
    (:class:`pcapreset.interpret.tally.ContextTally`), at most every
    ``min_rebuild_s`` of capture time while resets wait.
    """

    def __init__(
        self,
        emit: Callable[[dict], None],
        delay_s: float = 0.5,
        min_rebuild_s: float = 1.0,
        over_slack_s: float = 1.0,
    ) -> None:
        self.emit = emit
        self.over_slack_s = over_slack_s
        self.delay_s = delay_s
        self.min_rebuild_s = min_rebuild_s
        self.pending: list = []
        #: resets whose verdict stays open until the end (not looked at again)
        self.later: list = []
        self.emitted = 0
        #: resets emitted by flush (their verdict needed the whole capture)
        self.at_end = 0
        self.clock = float("-inf")  # the latest packet time tracked
        self.tally = ContextTally()
        self._last: tuple | None = None
        self._ctx_at = float("-inf")  # capture clock of the last look

    def on_rst(self, ev) -> None:
        # the connection too: once it is over and packed (pcapreset.engine.packed)
        # its events no longer point back at it
        self.pending.append((ev, ev.conn))

    def flush(self) -> None:
        """Emit every reset still waiting (at the end of the capture), over
        the context of the whole capture."""
        if self._last is None or not (self.pending or self.later):
            return
        ft, dec, rollup = self._last
        ctx = build_context(ft.conns, rollup)
        due, self.pending, self.later = self.pending + self.later, [], []
        before = self.emitted
        self._emit(due, ft, dec, ctx, None)
        self.at_end += self.emitted - before

    def tick(self, ft, dec, rollup=None) -> None:
        """``engine.run_batches``'s on_batch: emit the resets that are final."""
        self._last = (ft, dec, rollup)
        if ft.last_ts is not None and ft.last_ts > self.clock:
            self.clock = ft.last_ts
        if not self.pending or self.clock - self._ctx_at < self.min_rebuild_s:
            return
        over = self.clock - self.over_slack_s
        ready = [
            (e, c)
            for e, c in self.pending
            if e.ts + self.delay_s <= self.clock and c.expires_at <= over and c.zk.delete_at <= over
        ]
        if not ready:
            return
        self._ctx_at = self.clock
        around: dict[int, list[float]] = {}
        for _e, c in ready:
            if c.syn_ts is not None:
                around.setdefault(c.server, []).append(c.syn_ts)
        ctx = self.tally.update(ft.conns, rollup, around)
        done = self._emit(ready, ft, dec, ctx, self.clock)
        self.pending = [(e, c) for e, c in self.pending if id(e) not in done]

    def _emit(self, due: list, ft, dec, ctx, clock: float | None) -> set[int]:
        """Emit the resets of ``due`` whose verdict is final (all of them when
        ``clock`` is None: the end of the capture); the id() of the events
        done with (emitted, or follow-ups of a reset)."""
        res = EngineResult(
            sources=[], decode=dec.stats, conns=ft.conns, book=dec.book, port=ft.port
        )
        rep = Report(res, ctx, Records(), [])
        # each due event's connection grouped as the report groups it (all
        # its events): an event that starts a reset is emitted, a follow-up
        # or an aftermath belongs to the reset before it (by their first RST
        # packet: an event whose RSTs came from several sources gives several
        # resets, each starting at one of its packets)
        starts: dict[int, dict[int, ResetRecord | None] | None] = {}
        done: set[int] = set()
        for ev, conn in sorted(due, key=lambda d: d[0].ts):
            if id(conn) not in starts:
                starts[id(conn)] = self._final(conn, ctx, clock)
            mine = starts[id(conn)]
            records = [] if mine is None else [mine[id(p)] for p in ev.packets if id(p) in mine]
            if mine is None or any(r is _LATER for r in records):
                self.later.append((ev, conn))  # open until the end
                done.add(id(ev))
                continue
            if any(r is None for r in records):
                continue  # a verdict still open: wait
            done.add(id(ev))
            for r in records:
                self.emit(rep.reset_json(r))  # type: ignore[arg-type]
                self.emitted += 1
        return done

    def _final(self, conn, ctx, clock: float | None) -> dict[int, ResetRecord | None] | None:
        """The connection's resets by their first packet: each the record
        with its final verdict, or None while it is open (and every one after
        it: an aftermath reads the verdict before it), ``_LATER`` when it
        stays open once every window of time is past (looked at again only
        at the end). None when the capture's round-trip time decides its
        facts (known at the end)."""
        records = conn_resets(conn, ctx)
        if clock is None:
            return {id(r.event.packets[0]): r for r in records}
        out: dict[int, ResetRecord | None] = {}
        is_open = False
        for r in records:
            key = id(r.event.packets[0])
            unsure = unsure_facts(conn, r.event, clock)
            if unsure is None:
                return None
            if conn.server in self.tally.median_servers:
                unsure |= {"mass_reset", "refused_after"}
            v = None if is_open else decided(r.facts, unsure)
            if v is None:
                for_good = is_open or decided(r.facts, self._never_sure(conn, r.event)) is None
                is_open = True
                out[key] = _LATER if for_good else None
                continue
            facts = {k: f for k, f in r.facts.items() if k not in unsure}
            out[key] = ResetRecord(r.conn, r.event, v, facts, r.rst_packets)
        return out

    def _never_sure(self, conn, ev) -> frozenset[str]:
        """The facts of ``ev`` that stay unsure once every window of time is past."""
        unsure = unsure_facts(conn, ev, float("inf")) or frozenset()
        if conn.server in self.tally.median_servers:
            unsure |= {"mass_reset", "refused_after"}
        return unsure


#: a reset whose verdict stays open until the end of the capture
_LATER: Any = object()


def reset_line(r: dict) -> str:
    """One text line per streamed verdict."""
    t = utc("%H:%M:%S", r["ts"]) + f".{int(r['ts'] % 1 * 1000):03d}"
    idle = "" if r["idle_before_s"] is None else f" {r['idle_before_s']:.2f}s"
    line = f"{t} {r['client']} > {r['server']} {r['sender']} {r['cause']} {r['phase']}{idle}"
    if len(line) > 80:  # long (IPv6) endpoints: drop the server, the report names it
        line = f"{t} {r['client']} {r['sender']} {r['cause']} {r['phase']}{idle}"
    return line[:80]
