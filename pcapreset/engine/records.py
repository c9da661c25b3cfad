"""records: a report's reset records, those of packed connections encoded."""

from __future__ import annotations

import marshal
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from ..interpret.fact import Fact
from ..interpret.resets import ResetRecord, record_app
from ..interpret.rules import Verdict
from .packed import ConnStub, EventStub, Packed
from .spill import Spill


class Records(Sequence[ResetRecord]):
    """A report's reset records, in time order once :meth:`done`.

    The records of packed connections (``ConnStub``) are encoded in a
    :class:`~pcapreset.spill.Spill` (on disk past 1 MiB) and made again each
    time they are read; the others are kept as they are (few: the packing
    threshold bounds them). Per record: its time, client, server, (cause,
    sender) and where it is, 33 bytes, so that counting verdicts and sizing
    the text table need not read the records.
    """

    def __init__(self, packed: Packed | None = None) -> None:
        self.packed = packed
        self._whole: list[ResetRecord] = []
        self._spill = Spill()
        self._ts = array("d")
        self._client = array("q")
        self._server = array("q")
        #: >= 0: index in the spill; < 0: -1 - index in ``_whole``
        self._where = array("q")
        self._pair = array("H")
        self._pairs: list[tuple[str, str]] = []
        self._pair_ids: dict[tuple[str, str], int] = {}
        #: cause -> resets of it on connections that carry HTTP (or WebSocket)
        self.http_causes: Counter[str] = Counter()
        #: positions in time order (None: in the order added)
        self._order: array[int] | None = None

    def add(self, r: ResetRecord) -> None:
        """Add a record whose connection is done (no more facts or packets)."""
        if isinstance(r.conn, ConnStub):
            self._where.append(self._spill.append(_encode(r)))
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
        if record_app(r) in ("http", "fastcgi", "uwsgi", "websocket"):  # nginx's upstream protocols
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
        return _decode(self._spill[w], self.packed)

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


def _encode(r: ResetRecord) -> bytes:
    """A packed connection's record as marshal bytes (:func:`_decode`).

    Its facts once each: those of ``r.facts`` in order, then any other the
    verdict lists; the verdict's lists as indexes into them (a fact can be
    both matched and evidence: the JSON tells them apart by identity), the
    evidence as None when it is the facts in order (the usual case).
    """
    v = r.verdict
    table = list(r.facts.values())
    at = {id(f): k for k, f in enumerate(table)}

    def ix(f: Fact) -> int:
        k = at.get(id(f))
        if k is None:
            k = at[id(f)] = len(table)
            table.append(f)
        return k

    n = len(table)
    ev = v.evidence
    same = len(ev) == n and all(a is b for a, b in zip(ev, table, strict=True))
    evidence = None if same else [ix(f) for f in ev]
    matched = [ix(f) for f in v.matched]
    return marshal.dumps(
        (
            r.conn.fields(),  # type: ignore[attr-defined]  # (a ConnStub here)
            r.event.fields(),  # type: ignore[attr-defined]  # (an EventStub)
            (v.cause, v.sender, v.confidence, v.rule, v.says, v.best_guess),
            [(f.name, f.text) for f in table],
            n,
            matched,
            evidence,
            r.rst_packets,
        )
    )


def _decode(b: bytes, packed: Packed) -> ResetRecord:
    cf, ef, vf, table, n, matched, evidence, rst_packets = marshal.loads(b)
    conn = ConnStub.of(cf, packed)
    fs = [Fact(name, text) for name, text in table]
    facts = fs[:n]
    cause, sender, confidence, rule, says, guess = vf
    verdict = Verdict(
        cause,
        sender,
        confidence,
        rule,
        says,
        [fs[k] for k in matched],
        facts if evidence is None else [fs[k] for k in evidence],
        guess,
    )
    return ResetRecord(
        conn,  # type: ignore[arg-type]  # (stubs that read like a Conn and its RstEvent)
        EventStub.of(ef, conn),  # type: ignore[arg-type]
        verdict,
        {f.name: f for f in facts},
        rst_packets,
    )
