"""stream: the verdicts of a live capture, each a short time after its reset.

:class:`VerdictStream` turns the FlowTracker's new RstEvents into verdicts a
short time after each reset (so that the packets right after it are in).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..interpret.context import build_context
from ..interpret.resets import ResetRecord, conn_resets
from ..textsafe import utc
from .model import Report
from .records import Records
from .result import EngineResult


class VerdictStream:
    """Classifies each new reset ``delay_s`` after it (capture clock) and emits it.

    ``emit`` receives the reset as the JSON report writes it
    (:meth:`pcapreset.report.model.Report.reset_json`), one per reset as the
    report counts them (:func:`pcapreset.interpret.resets.conn_resets`: RST
    events that belong to the reset before them are not emitted).
    Classification uses the connections seen so far; the final report
    classifies again over the whole capture and is the one to trust when
    they differ.

    The per-capture context (:func:`pcapreset.interpret.evidence.build_context`) is
    rebuilt over the connections the tracker still holds plus the summary of
    those already evicted (``rollup``, see :class:`pcapreset.engine.evictor.Evictor`):
    the connections themselves are not scanned again, but the summary's SYN
    times and round-trip times still grow with the capture, so it is rebuilt
    at most every ``max(min_rebuild_s, cpu_share_inv * cost)`` seconds (at
    most ~1/``cpu_share_inv`` of the time); resets due in between wait for
    the next rebuild instead of using a stale context.
    """

    def __init__(
        self,
        emit: Callable[[dict], None],
        delay_s: float = 0.5,
        min_rebuild_s: float = 0.25,
        cpu_share_inv: float = 5.0,
    ) -> None:
        self.emit = emit
        self.delay_s = delay_s
        self.min_rebuild_s = min_rebuild_s
        self.cpu_share_inv = cpu_share_inv
        self.pending: list = []
        self.emitted = 0
        self._last: tuple | None = None
        self._ctx_at = -1e18  # monotonic time of the last context build
        self._ctx_cost_s = 0.0

    def on_rst(self, ev) -> None:
        # the connection too: once it is over and packed (pcapreset.engine.packed)
        # its events no longer point back at it
        self.pending.append((ev, ev.conn))

    def flush(self) -> None:
        """Emit every reset still waiting (at the end of the capture)."""
        if self._last is not None:
            ft, dec, rollup = self._last
            self.tick(ft, dec, rollup, force=True)

    def tick(self, ft, dec, rollup=None, now: float | None = None, force: bool = False) -> None:
        """``engine.run_batches``'s on_batch: emit the resets that are due."""
        self._last = (ft, dec, rollup)
        if not self.pending:
            return
        now = time.time() if now is None else now
        due = [(e, c) for e, c in self.pending if force or e.ts + self.delay_s <= now]
        if not due:
            return
        gap = max(self.min_rebuild_s, self.cpu_share_inv * self._ctx_cost_s)
        if not force and time.monotonic() - self._ctx_at < gap:
            return
        self.pending = [
            (e, c) for e, c in self.pending if not (force or e.ts + self.delay_s <= now)
        ]
        t0 = time.monotonic()
        ctx = build_context(ft.conns, rollup)
        self._ctx_at = time.monotonic()
        self._ctx_cost_s = self._ctx_at - t0
        res = EngineResult(
            sources=[], decode=dec.stats, conns=ft.conns, book=dec.book, port=ft.port
        )
        rep = Report(res, ctx, Records(), [])
        # each due event's connection grouped as the report groups it (all
        # its events so far): an event that starts a reset is emitted, a
        # follow-up or an aftermath belongs to the reset before it
        # (by their first RST packet: an event whose RSTs came from several
        # sources gives several resets, each starting at one of its packets)
        starts: dict[int, dict[int, ResetRecord]] = {}
        for ev, conn in sorted(due, key=lambda d: d[0].ts):
            mine = starts.get(id(conn))
            if mine is None:
                mine = starts[id(conn)] = {
                    id(r.event.packets[0]): r for r in conn_resets(conn, ctx)
                }
            for p in ev.packets:
                r = mine.get(id(p))
                if r is not None:
                    self.emit(rep.reset_json(r))
                    self.emitted += 1


def reset_line(r: dict) -> str:
    """One text line per streamed verdict."""
    t = utc("%H:%M:%S", r["ts"]) + f".{int(r['ts'] % 1 * 1000):03d}"
    idle = "" if r["idle_before_s"] is None else f" {r['idle_before_s']:.2f}s"
    line = f"{t} {r['client']} > {r['server']} {r['sender']} {r['cause']} {r['phase']}{idle}"
    if len(line) > 80:  # long (IPv6) endpoints: drop the server, the report names it
        line = f"{t} {r['client']} {r['sender']} {r['cause']} {r['phase']}{idle}"
    return line[:80]
