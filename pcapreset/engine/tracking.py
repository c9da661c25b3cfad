"""tracking: a flow tracker for the capture's port and its evictor, fed batch by batch.

Every run (one process, the reader child and its parent, shard workers, a live
capture) wires the tracker and the evictor here, and feeds them here.
"""

from __future__ import annotations

from ..capture.tcp import TcpBatch
from ..track.conn import Conn
from ..track.flows import FlowTracker
from .evictor import Evictor
from .rollup import Rollup


class Tracking:
    """A :class:`FlowTracker` for ``port`` (its server port when the SYN was
    not captured) and, with ``evict``, the :class:`Evictor` that folds
    the connections that are over into a rollup after each batch."""

    __slots__ = ("ft", "ev")

    def __init__(self, port: int | None, evict: bool, tracker: FlowTracker | None = None) -> None:
        self.ft = tracker if tracker is not None else new_tracker(port)
        self.ev = Evictor(self.ft) if evict else None

    def feed(self, b: TcpBatch) -> None:
        """Track one batch, then evict what it finished (in pieces:
        :meth:`Evictor.feed`)."""
        if self.ev is not None:
            self.ev.feed(b)
        else:
            self.ft.feed(b)

    @property
    def rollup(self) -> Rollup | None:
        """The connections evicted so far (None without eviction)."""
        return None if self.ev is None else self.ev.rollup

    def compact(self) -> None:
        """Drop the evicted connections from ``ft.conns``."""
        if self.ev is not None:
            self.ev.compact()

    def finish(self) -> tuple[list[Conn], Rollup | None]:
        """The connections kept (the tracker finished) and the rollup of the others."""
        self.compact()
        return self.ft.finish(), self.rollup


def new_tracker(port: int | None) -> FlowTracker:
    """The flow tracker of a run: ``port`` decides roles when the SYN was not captured."""
    return FlowTracker(port=port, server_ports=[port] if port else [])
