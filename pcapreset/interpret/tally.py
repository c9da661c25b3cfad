"""tally: what a live verdict reads of the per-capture context, kept up to date
batch by batch, and which of a reset's facts later packets can still change.

A reset's facts read the capture as a whole (:mod:`pcapreset.interpret.context`):
SYN times, the server's RSTs and refused connects near it in time, the
capture's round-trip time, each host's baseline, each server's idle timeout.
:class:`ContextTally` keeps the first three as :func:`build_context` computes
them over the same connections, without reading every connection again at
each batch: the rows the engine's rollup folded since the last call, the
packed connections when there are new ones, and of the connections held one
by one only their SYN time and their RST events.

:func:`unsure_facts` names the facts of one reset that the rest of the
capture can still change once its connection is over; with
:func:`pcapreset.interpret.rules.decided` a live verdict is emitted only when
no outcome of those can change it (:mod:`pcapreset.report.stream`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from ..track.conn import Conn, RstEvent
from .context import Context, ContextSamples, Summarised, median
from .hosts import ODD_TTL_MAX
from .readings import conn_rtt, short_idle_fin
from .thresholds import INSTANT_S, RESTART_WINDOW_S
from .vantage import Vantage

#: the rollup's columns (engine.rollup): round-trip time, SYN time, server
_RTT, _SYN, _SERVER = 1, 2, 1


def _seq(a: np.ndarray) -> Sequence[float]:
    """A sorted float64 array where the context holds times (bisect reads it)."""
    return a  # type: ignore[return-value]


def _sorted(a: array) -> Sequence[float]:
    return _seq(np.sort(np.frombuffer(a, np.float64)))


class _Medians(dict):
    """server -> median round-trip time over ``parts`` (arrays) and the held
    connections ``conns``, worked out when first asked for: the capture's
    round-trip time is read only for connections without one of their own."""

    def __init__(self, parts: dict[int, list[np.ndarray]], conns: list[Conn]) -> None:
        super().__init__()
        self._parts = parts
        self._conns = conns

    def get(self, srv, default=None):  # type: ignore[override]
        if srv not in self:
            held = [r for c in self._conns if c.server == srv and (r := conn_rtt(c)) is not None]
            parts = [*self._parts.get(srv, ()), np.asarray(held, np.float64)]
            if not sum(len(p) for p in parts):
                return default
            self[srv] = median(np.concatenate(parts))
        return self[srv]


class _Runs:
    """Sorted runs of floats (times), merged as they come so that there are
    O(log n) of them: adding costs O(log n) per value over the capture, and
    the values within a window are found without copying the others."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        runs = self.runs
        runs.append(np.sort(values))
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            b = runs.pop()
            runs[-1] = np.sort(np.concatenate([runs[-1], b]), kind="stable")

    def within(self, spans: np.ndarray | None) -> list[np.ndarray]:
        """The values inside the windows ``spans`` ((n, 2): from, to; None:
        every value), run by run."""
        if spans is None:
            return list(self.runs)
        out = []
        for r in self.runs:
            lo = np.searchsorted(r, spans[:, 0], "left")
            hi = np.searchsorted(r, spans[:, 1], "right")
            keep = np.zeros(len(r) + 1, np.int64)
            np.add.at(keep, lo, 1)
            np.add.at(keep, hi, -1)
            out.append(r[np.cumsum(keep[:-1]) > 0])
        return out


class ContextTally:
    """The SYN times, server RST times, refused connects and round-trip times
    of :func:`build_context`, over the connections held plus those summarised
    in ``rollup``, updated by :meth:`update` after each batch."""

    def __init__(self) -> None:
        self._rows = 0  # rollup rows taken
        #: per server: the rolled-up SYN times and round-trip times
        self._syn: dict[int, _Runs] = {}
        self._rtt: dict[int, list[np.ndarray]] = {}
        self._packed_n = -1
        self._packed: ContextSamples = ContextSamples()
        self._packed_rtt: dict[int, array] = {}
        self.median_servers: set[int] = set()

    def _take_rollup(self, rollup: Summarised) -> None:
        new_syn: dict[int, list[np.ndarray]] = {}
        for f, i in rollup.rows_from(self._rows):
            self._rows += len(f)
            srv, syn, rtt = i[:, _SERVER], f[:, _SYN], f[:, _RTT]
            for s in np.unique(srv).tolist():
                mine = srv == s
                t, r = syn[mine], rtt[mine]
                new_syn.setdefault(s, []).append(t[~np.isnan(t)])
                self._rtt.setdefault(s, []).append(r[~np.isnan(r)].copy())
        for s, parts in new_syn.items():
            runs = self._syn.get(s)
            if runs is None:
                runs = self._syn[s] = _Runs()
            runs.add(np.concatenate(parts))
        packed = rollup.packed
        if len(packed) != self._packed_n:
            self._packed_n = len(packed)
            self._packed = ContextSamples()
            self._packed.merge(packed.samples)
            self._packed_rtt = packed.rtts

    def update(
        self,
        conns: list[Conn],
        rollup: Summarised | None = None,
        syn_around: dict[int, list[float]] | None = None,
    ) -> Context:
        """The context as :func:`build_context` ``(conns, rollup)`` computes
        its ``syn_times``, ``server_rst_times``, ``refused_times`` and
        ``rtt`` (the other fields are empty: :func:`unsure_facts` names the
        facts that read them). ``syn_around``: per server, the SYN times of
        the connections whose facts will be read; ``syn_times`` then holds
        only the times within INSTANT_S of those (all that the facts count)."""
        if rollup is not None:
            self._take_rollup(rollup)
        held_srv: list[int] = []
        held_syn: list[float] = []
        reset: list[Conn] = []
        for c in conns:
            t = c.syn_ts
            if t is not None:
                held_srv.append(c.server)
                held_syn.append(t)
            if c.rst_events:
                reset.append(c)
        rtts: dict[int, list[np.ndarray]] = {s: list(v) for s, v in self._rtt.items()}
        for s, a in self._packed_rtt.items():
            rtts.setdefault(s, []).append(np.frombuffer(a, np.float64))
        ctx = Context(vantage=Vantage("unknown", None, None, "live"), rtt=_Medians(rtts, conns))
        # SYN times: rolled up, packed, held
        spans = {
            s: np.column_stack([np.asarray(t) - INSTANT_S, np.asarray(t) + INSTANT_S])
            for s, t in (syn_around or {}).items()
        }
        syn: dict[int, list[np.ndarray]] = {}
        for s, runs in self._syn.items():
            if syn_around is None or s in spans:
                syn[s] = runs.within(spans.get(s))
        for s, a in self._packed.syn.items():
            syn.setdefault(s, []).append(np.frombuffer(a, np.float64))
        if held_srv:
            srv_a, syn_a = np.asarray(held_srv, np.int64), np.asarray(held_syn, np.float64)
            for s in np.unique(srv_a).tolist():
                syn.setdefault(s, []).append(syn_a[srv_a == s])
        ctx.syn_times = {s: _seq(np.sort(np.concatenate(p), kind="stable")) for s, p in syn.items()}
        # the server's RSTs: packed, held (the rolled-up connections have none)
        rst = ContextSamples()
        rst.merge(self._packed)
        #: servers whose RST times read the capture's round-trip time (a
        #: connection without its own, with a RST event that may be a follow-up)
        self.median_servers = set()
        for c in reset:
            r = conn_rtt(c)
            if r is None and len(c.rst_events) > 1:
                self.median_servers.add(c.server)
            rst.add_resets(c, r if r is not None else ctx.rtt.get(c.server, 0.0))
        ctx.server_rst_times = {
            s: _seq(np.sort(np.frombuffer(a))) for s, a in rst.server_rst.items()
        }
        ctx.refused_times = {s: _seq(np.sort(np.frombuffer(a))) for s, a in rst.refused.items()}
        return ctx


#: facts that read a host's baseline over the whole capture (evidence._forgery_facts)
_TTL_FACTS = ("ttl_consistent", "ttl_mismatch", "ttl_family_differs", "ttl_mismatch_host")
_IPID_FACTS = ("rst_shape_mismatch", "ipid_counter_skips_rst")


def unsure_facts(conn: Conn, ev: RstEvent, clock: float) -> frozenset[str] | None:
    """The facts of ``ev`` that packets after ``clock`` (capture time) can
    still make hold or not, once ``conn`` is over (no packet changes it any
    more); None when its facts read the capture's round-trip time (the
    connection has none of its own), which only the whole capture gives.

    The capture-wide ones: the server's idle timeout (a median), the host's
    TTLs and IP ID behaviour, the server's closes before a restart (counted
    on connections that are reset later, however much later); the windows
    of time around the reset until the capture clock is past them.
    """
    if conn_rtt(conn) is None and not ContextSamples.rtt_free(conn):
        return None
    out: set[str] = set()
    if not ev.from_client and ev.idle_before_s is not None:
        out.add("idle_matches_server_timeout")
    p0 = ev.packets[0]
    sender = conn.c if ev.from_client else conn.s
    if p0.ttl not in sender.ttls and (sender.ttls or p0.ttl > ODD_TTL_MAX):
        out.update(_TTL_FACTS)
    if p0.ipid > 0:
        out.update(_IPID_FACTS)
    if not ev.from_client and ev.sender_fin_before and short_idle_fin(conn):
        out.add("restart_closes")
    if conn.syn_ts is not None and clock < conn.syn_ts + INSTANT_S:
        out.add("concurrent_connects")
    if clock < ev.ts + INSTANT_S:
        out.add("mass_reset")
    if clock < ev.ts + RESTART_WINDOW_S:
        out.add("refused_after")
    return frozenset(out)
