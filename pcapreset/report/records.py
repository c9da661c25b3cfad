"""records: a report's reset records, in time order, and what is counted of them.

Per record: its time, client, server, (cause, sender) and where it is, 33
bytes, so that counting verdicts and sizing the text table need not read the
records. The records of packed connections go to a :class:`PackedRecords`
store (the engine's keeps them encoded, on disk past 1 MiB, and makes them
again each time they are read); the others are kept as they are (few: the
packing threshold bounds them).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Protocol, overload

import numpy as np

from ..interpret.resets import ResetRecord, record_app


class PackedRecords(Protocol):
    """Where the records of packed connections are kept."""

    def put(self, r: ResetRecord, j: int) -> int:
        """Keep ``r``, a record of the packed connection ``j`` (``r`` is used
        up); its index here."""
        ...

    def __getitem__(self, i: int) -> ResetRecord: ...


class Records(Sequence[ResetRecord]):
    """A report's reset records, in time order once :meth:`done`."""

    def __init__(self, packed: PackedRecords | None = None) -> None:
        self.packed = packed
        self._whole: list[ResetRecord] = []
        self._ts = array("d")
        self._client = array("q")
        self._server = array("q")
        #: >= 0: index in ``packed``; < 0: -1 - index in ``_whole``
        self._where = array("q")
        self._pair = array("H")
        self._pairs: list[tuple[str, str]] = []
        self._pair_ids: dict[tuple[str, str], int] = {}
        #: cause -> resets of it on connections that carry HTTP (or WebSocket)
        self.http_causes: Counter[str] = Counter()
        #: positions in time order (None: in the order added)
        self._order: array[int] | None = None

    def add(self, r: ResetRecord, j: int | None = None) -> None:
        """Add a record whose connection is done (no more facts or packets);
        ``j``: the connection is packed, at that index."""
        if j is not None:
            assert self.packed is not None
            self._where.append(self.packed.put(r, j))
        else:
            self._where.append(-1 - len(self._whole))
            self._whole.append(r)
        self._ts.append(r.event.ts)
        self._client.append(r.conn.client)
        self._server.append(r.conn.server)
        pair = (r.verdict.cause, r.verdict.sender)
        pid = self._pair_ids.get(pair)
        if pid is None:
            pid = self._pair_ids[pair] = len(self._pairs)
            self._pairs.append(pair)
        self._pair.append(pid)
        if record_app(r) in ("http", "fastcgi", "uwsgi", "websocket"):  # nginx upstream protocols
            self.http_causes[r.verdict.cause] += 1
        self._order = None

    def done(self) -> None:
        """Sort by time (stably: equal times keep the order they came in)."""
        ts = np.frombuffer(self._ts, np.float64) if self._ts else np.zeros(0)
        self._order = array("q", np.argsort(ts, kind="stable").astype(np.int64).tobytes())

    def _positions(self) -> Sequence[int]:
        return range(len(self._ts)) if self._order is None else self._order

    def __len__(self) -> int:
        return len(self._ts)

    def _get(self, k: int) -> ResetRecord:
        w = self._where[k]
        if w < 0:
            return self._whole[-1 - w]
        assert self.packed is not None
        return self.packed[w]

    @overload
    def __getitem__(self, i: int) -> ResetRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[ResetRecord]: ...
    def __getitem__(self, i: int | slice) -> ResetRecord | list[ResetRecord]:
        pos = self._positions()
        if isinstance(i, slice):
            return [self._get(k) for k in pos[i]]
        return self._get(pos[i])

    def __iter__(self) -> Iterator[ResetRecord]:
        get = self._get
        return (get(k) for k in self._positions())

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(cause, sender) of each record, in order."""
        pairs, pair = self._pairs, self._pair
        return (pairs[pair[k]] for k in self._positions())

    def clients(self) -> list[int]:
        return [self._client[k] for k in self._positions()]

    def servers(self) -> list[int]:
        return [self._server[k] for k in self._positions()]
