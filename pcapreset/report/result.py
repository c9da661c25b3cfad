"""result: what a run over a capture gives the report.

:class:`EngineResult` holds the sources, the decoder's counts, the
connections kept (and, with eviction, the summary of the others); the reader's
and decoder's warnings, each with its count. The engine fills it
(:func:`pcapreset.engine.result.assemble`); what the report reads of the
connections the engine summarised or packed is the protocol :class:`Evicted`,
which the engine's rollup fills, as it fills
:class:`pcapreset.interpret.context.Summarised` for the context.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..capture.sources import SourceInfo
from ..capture.tcp import AddressBook, DecodeStats
from ..interpret.context import PackedSamples, Summarised
from ..interpret.vantage import Votes, conn_order
from ..track.conn import Conn
from .records import PackedRecords


class PackedConns(PackedSamples, Protocol):
    """Reset connections kept packed: the context's samples of them, the
    connections, unpacked one at a time in report order, each with its index,
    and where the records of their resets are kept."""

    def conns(self) -> Iterator[tuple[Conn, int]]: ...

    def records(self) -> PackedRecords: ...


class Evicted(Summarised, Protocol):
    """What the report reads of the connections no longer held one by one:
    how many were summarised, the servers they went to, the votes for the
    backend's name and advertised timeout (``sigs``: per connection signature,
    its count and first voter), and those packed."""

    @property
    def count(self) -> int: ...
    @property
    def server_set(self) -> set[int]: ...
    @property
    def backends(self) -> Votes: ...
    @property
    def timeouts(self) -> Votes: ...
    @property
    def sigs(self) -> dict[tuple, list]: ...
    @property
    def packed(self) -> PackedConns: ...


@dataclass
class EngineResult:
    sources: list[SourceInfo]
    decode: DecodeStats
    conns: list[Conn]
    book: AddressBook
    port: int | None
    packets: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    warnings: list[dict] = field(default_factory=list)
    live: dict | None = None  # kernel drop counts etc. for live captures
    #: connections summarised and dropped during the run (run(..., evict=True));
    #: ``conns`` then holds only the others, with the ids they have among all
    rollup: Evicted | None = None

    def endpoint(self, key: int) -> str:
        return self.book.endpoint(key)

    def each_conn(self) -> Iterator[tuple[Conn, int | None]]:
        """Every connection kept for the report, in report order, with where
        it is packed: those kept whole (``conns``, None) and the packed ones
        (:mod:`pcapreset.engine.packed`, their index), unpacked one at a time."""
        packed = self.rollup.packed if self.rollup is not None else None
        whole: Iterator[tuple[Conn, int | None]] = ((c, None) for c in self.conns)
        if not packed:
            return whole
        return heapq.merge(whole, packed.conns(), key=_pair_order)


def _pair_order(pair: tuple[Conn, int | None]) -> tuple[float, int, int]:
    return conn_order(pair[0])
