"""packed: reset connections kept for the report in one bytes object each.

A connection with a reset is kept to the end of the capture: each of its
resets is classified against the capture-wide context (median round-trip
times, idle timeouts, resets of other connections around it), which is known
only then. Kept whole, even slimmed (:func:`pcapreset.flows.freeze_conn`), one
costs ~3.5 KB in ~60 small Python objects, and the allocator keeps free
blocks between them: a long capture's resets were most of its memory.

``engine.Evictor`` packs here the slimmed ones it holds beyond
``engine.PACK_AFTER``, the oldest first. A packed connection is one pickled
``bytes`` (~1.1 KB) in a :class:`~pcapreset.spill.Spill` (on disk past 1 MiB:
16 bytes in memory), its order key, and what
:func:`pcapreset.interpret.context.build_context` takes from it, counted at once: only
connections with their own round-trip time (or none that the context would
read, :meth:`ContextSamples.rtt_free`) are packed, so nothing they add to the
context depends on the rest of the capture. The
report unpacks each one once, in report order, to classify its resets
(:func:`pcapreset.report.build`), and keeps their records in
:meth:`Packed.records` (:class:`EncodedRecords`: each encoded, with a
:class:`ConnStub`, its index here to unpack it again).
"""

from __future__ import annotations

import marshal
import pickle
from array import array
from collections.abc import Iterator

import numpy as np

from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.context import ContextSamples, conn_rtt
from ..interpret.fact import Fact
from ..interpret.hosts import HostBase, add_host_bases, merge_host_bases
from ..interpret.resets import ResetRecord
from ..interpret.rules import Verdict
from ..interpret.vantage import Votes, host_hop_votes, vantage_votes
from ..track.conn import Conn, RstEvent
from .spill import Spill


class Packed:
    """Packed connections and their part of the report's context."""

    def __init__(self) -> None:
        #: the pickled connections, in the order they were packed
        self.blobs = Spill()
        self.starts = array("d")
        self.clients = array("q")
        self.servers = array("q")
        #: report ids (engine.order_conns), in the order of ``blobs``
        self.ids = array("q")
        #: the votes of infer_vantage, _host_hops and the backend's name and
        #: advertised timeout (Rollup.votes adds them to its own)
        self.pairs, self.conly, self.sonly = Votes(), Votes(), Votes()
        self.hosts: dict[int, Votes] = {}
        self.backends, self.timeouts = Votes(), Votes()
        #: server endpoint -> handshake round-trip times (s)
        self.rtts: dict[int, array] = {}
        self.samples = ContextSamples()
        #: the host baselines (interpret.hosts) of the packed connections
        self.host_bases: dict[int, HostBase] = {}

    def __len__(self) -> int:
        return len(self.blobs)

    def add(self, conns: list[Conn]) -> None:
        """Pack connections that are over (closed, past Zeek's close delay,
        out of the tracker's tables) and :func:`packable`. They are used up:
        their RST events no longer point back at them."""
        for c in conns:
            rtt = conn_rtt(c)
            if rtt is None and not ContextSamples.rtt_free(c):
                raise ValueError("a connection whose context needs the capture's round-trip time")
            self.blobs.append(pickle.dumps(c, pickle.HIGHEST_PROTOCOL))
            self.starts.append(c.start)
            self.clients.append(c.client)
            self.servers.append(c.server)
            vantage_votes(c, self.pairs, self.conly, self.sonly)
            host_hop_votes(c, self.hosts)
            key = (c.start, c.client, c.server, 0)
            name = backend_from_headers(c.resp_headers)
            if name:
                self.backends.add(name, key)
            t = advertised_timeout(c.resp_headers)
            if t is not None:
                self.timeouts.add(t, key)
            if rtt is not None:
                r = self.rtts.get(c.server)
                if r is None:
                    r = self.rtts[c.server] = array("d")
                r.append(rtt)
            self.samples.add(c, 0.0 if rtt is None else rtt)  # (0.0: not read)
            add_host_bases([c], self.host_bases)
            # the evictor's letting go frees it, GC paused or not
            _let_go(c)

    def merge(self, other: Packed) -> None:
        """Add another process's packed connections (shards, the reader child)."""
        self.blobs.extend(other.blobs)
        self.starts += other.starts
        self.clients += other.clients
        self.servers += other.servers
        other.votes_into(
            self.pairs, self.conly, self.sonly, self.hosts, self.backends, self.timeouts
        )
        for srv, arr in other.rtts.items():
            self.rtts.setdefault(srv, array("d")).extend(arr)
        self.samples.merge(other.samples)
        merge_host_bases(self.host_bases, other.host_bases)

    def votes_into(
        self, pairs: Votes, conly: Votes, sonly: Votes, hosts: dict[int, Votes], backends: Votes,
        timeouts: Votes,
    ) -> None:  # fmt: skip
        """Add these connections' votes to others (Rollup.votes' order)."""
        for mine, theirs in (
            (pairs, self.pairs),
            (conly, self.conly),
            (sonly, self.sonly),
            (backends, self.backends),
            (timeouts, self.timeouts),
        ):
            mine.merge(theirs)
        for host, v in self.hosts.items():
            hosts.setdefault(host, Votes()).merge(v)

    def order(self) -> np.ndarray:
        """Indexes of ``blobs`` in report order (start, client, server)."""
        return np.lexsort(
            (
                np.frombuffer(self.servers, np.int64),
                np.frombuffer(self.clients, np.int64),
                np.frombuffer(self.starts, np.float64),
            )
        )

    def records(self) -> EncodedRecords:
        """A store for the reset records of these connections (the report's)."""
        return EncodedRecords(self)

    def conns(self) -> Iterator[tuple[Conn, int]]:
        """The packed connections, unpacked one at a time, in report order,
        each with its report id, and its index here (as :meth:`full`: freed
        once the caller lets go of it, even with the cyclic GC paused)."""
        ids = self.ids
        for j in self.order().tolist():
            yield self.full(j, ids[j]), j

    def full(self, j: int, conn_id: int) -> Conn:
        """Packed connection ``j``, unpacked again, with its report id (its
        events do not point back at it: freed when the caller lets go)."""
        c = unpack(self.blobs[j])
        c.id = conn_id
        _let_go(c)
        return c


def _let_go(c: Conn) -> None:
    """Its RST events no longer point back at ``c``: with no other cycle, it
    is freed by reference counting alone (the CLI pauses the cyclic GC)."""
    for ev in c.rst_events:
        ev.conn = None  # type: ignore[assignment]


def packable(c: Conn) -> bool:
    """What the connection adds to the report's context is known now: it has
    its own round-trip time, or the context does not read one for it."""
    return conn_rtt(c) is not None or ContextSamples.rtt_free(c)


def unpack(blob: bytes) -> Conn:
    c = pickle.loads(blob)
    assert isinstance(c, Conn)
    return c


class ConnStub:
    """What a reset record keeps of a packed connection: the fields the report
    prints, and where it is packed (:meth:`full`) for anything else."""

    __slots__ = ("id", "client", "server", "role_rule", "start", "end", "packed", "j")

    def __init__(self, c: Conn, packed: Packed, j: int) -> None:
        self.id = c.id
        self.client = c.client
        self.server = c.server
        self.role_rule = c.role_rule
        self.start = c.start
        self.end = c.end
        self.packed = packed
        self.j = j

    def fields(self) -> tuple:
        return (self.id, self.client, self.server, self.role_rule, self.start, self.end, self.j)

    @classmethod
    def of(cls, fields: tuple, packed: Packed) -> ConnStub:
        """A stub from :meth:`fields`."""
        s = cls.__new__(cls)
        s.id, s.client, s.server, s.role_rule, s.start, s.end, s.j = fields
        s.packed = packed
        return s

    def full(self) -> Conn:
        """The whole connection, unpacked again (not kept)."""
        return self.packed.full(self.j, self.id)


class ExchangeRef:
    """What a reset record's event keeps of its exchange: the request target."""

    __slots__ = ("target",)

    def __init__(self, target: str | None) -> None:
        self.target = target


class EventStub:
    """What a reset record keeps of a packed connection's RST event: what the
    report prints and nginx log matching reads (no packets: the record
    counts them, ``ResetRecord.rst_packets``)."""

    __slots__ = ("conn", "ts", "from_client", "phase", "idle_before_s", "requests_before",
                 "exchange")  # fmt: skip

    def __init__(self, ev: RstEvent, conn: ConnStub) -> None:
        self.conn = conn
        self.ts: float = ev.ts
        self.from_client: bool = ev.from_client
        self.phase: str = ev.phase
        self.idle_before_s: float | None = ev.idle_before_s
        self.requests_before: int = ev.requests_before
        x = ev.exchange
        self.exchange: ExchangeRef | None = None if x is None else ExchangeRef(x.target)

    def fields(self) -> tuple:
        x = self.exchange
        return (
            self.ts,
            self.from_client,
            self.phase,
            self.idle_before_s,
            self.requests_before,
            x is not None,
            None if x is None else x.target,
        )

    @classmethod
    def of(cls, fields: tuple, conn: ConnStub) -> EventStub:
        """A stub from :meth:`fields`."""
        s = cls.__new__(cls)
        s.conn = conn
        s.ts, s.from_client, s.phase, s.idle_before_s, s.requests_before, has_x, target = fields
        s.exchange = ExchangeRef(target) if has_x else None
        return s


def full_conn(c: Conn | ConnStub) -> Conn:
    """A reset record's connection, whole (a packed one unpacked again)."""
    return c.full() if isinstance(c, ConnStub) else c


class EncodedRecords:
    """The report's reset records of packed connections
    (:class:`pcapreset.report.records.PackedRecords`): each encoded
    (:func:`_encode`, its connection and event kept as a :class:`ConnStub` and
    an :class:`EventStub`) in a :class:`~pcapreset.engine.spill.Spill` (on disk
    past 1 MiB) and made again each time it is read."""

    def __init__(self, packed: Packed) -> None:
        self.packed = packed
        self._spill = Spill()

    def put(self, r: ResetRecord, j: int) -> int:
        stub = ConnStub(r.conn, self.packed, j)
        r.conn = stub  # type: ignore[assignment]
        r.event = EventStub(r.event, stub)  # type: ignore[assignment, arg-type]
        return self._spill.append(_encode(r))

    def __getitem__(self, i: int) -> ResetRecord:
        return _decode(self._spill[i], self.packed)


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
