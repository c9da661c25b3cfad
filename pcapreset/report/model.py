"""report: verdicts and findings -> the JSON contract and the text report.

:func:`build` runs evidence + rules over an :class:`EngineResult` and returns
a :class:`Report`; :meth:`Report.to_json` is the ``--format json`` contract of
SPEC.md; :func:`render_text` is the 80-column text report.
"""

from __future__ import annotations

import json
import marshal
import os
import textwrap
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO, overload

import numpy as np

from .. import __version__
from ..capture.decode import linktype_name
from ..engine.packed import ConnStub, EventStub, Packed
from ..engine.result import EngineResult
from ..engine.spill import Spill
from ..errors import PcapResetError
from ..interpret.advice import (
    NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S,
    advertised_timeout,
    backend_from_headers,
    recommend,
)
from ..interpret.events import split_by_source
from ..interpret.evidence import (
    Context,
    Fact,
    Votes,
    build_context,
    idle_summary,
    is_followup,
    is_refused,
    retry_burst,
    rst_facts,
    rtt_of,
)
from ..interpret.findings import conn_findings
from ..interpret.rules import CAUSES, HARMLESS, SENDERS, Verdict, classify
from ..track.connstate import conn_state
from ..track.flows import Conn, RstEvent
from . import jsonout

WIDTH = 80


@dataclass(slots=True)
class ResetRecord:
    #: the connection and the reset's event; stubs if the connection was
    #: packed (:mod:`pcapreset.packed`; :func:`~pcapreset.packed.full_conn`)
    conn: Conn | ConnStub
    event: RstEvent | EventStub
    verdict: Verdict
    facts: dict[str, Fact]
    #: its RST packets, with those of later events that only answered
    #: segments in flight (the same reset); 0: the event's own
    rst_packets: int = 0

    def __post_init__(self) -> None:
        if not self.rst_packets:
            self.rst_packets = len(self.event.packets)  # type: ignore[union-attr]


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
        if record_app(r) in ("http", "websocket"):
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
            r.conn.fields(),  # type: ignore[union-attr]
            r.event.fields(),  # type: ignore[union-attr]
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
        conn, EventStub.of(ef, conn), verdict, {f.name: f for f in facts}, rst_packets
    )


@dataclass
class Report:
    result: EngineResult
    ctx: Context
    resets: Records
    findings: list[dict]
    nginx_keepalive_s: float | None = None
    nginx_from_conf: bool = False
    extra: dict = field(default_factory=dict)  # e.g. nginx_log section

    # ------------------------------------------------------------ helpers
    def ep(self, key: int) -> str:
        return self.result.book.endpoint(key)

    def idle_timeouts(self) -> dict[str, float]:
        return {self.ep(k): round(v, 3) for k, v in self.ctx.idle_timeout.items()}

    def flows(self) -> int:
        """Connections in the capture, evicted ones (EngineResult.rollup) included."""
        rollup = self.result.rollup
        if rollup is None:
            return len(self.result.conns)
        return len(self.result.conns) + rollup.count + len(rollup.packed)

    def backend_name(self) -> str | None:
        """The backend the most connections' response headers name, if any."""
        rollup = self.result.rollup
        names = rollup.backends.copy() if rollup is not None else Votes()
        for c in self.result.conns:
            n = backend_from_headers(c.resp_headers)
            if n:
                names.add(n, (c.start, c.client, c.server, 0))
        best = names.best()
        return None if best is None else best[0]

    def backend_names(self) -> dict[int, str]:
        """Server host (addr id) -> the backend name most of its connections'
        response headers give (the evicted connections' too)."""
        votes: dict[int, Votes] = {}
        rollup = self.result.rollup
        if rollup is not None:
            for (_ch, _sh, _chost, shost, name, _t), (n, first) in rollup.sigs.items():
                if name:
                    votes.setdefault(shost, Votes()).add(name, (*first, 0), n)
            for c in _packed_conns(rollup):
                n = backend_from_headers(c.resp_headers)
                if n:
                    votes.setdefault(c.server >> 16, Votes()).add(
                        n, (c.start, c.client, c.server, 0)
                    )
        for c in self.result.conns:
            n = backend_from_headers(c.resp_headers)
            if n:
                votes.setdefault(c.server >> 16, Votes()).add(n, (c.start, c.client, c.server, 0))
        return {h: v.best()[0] for h, v in votes.items()}  # type: ignore[index]

    def http_seen(self) -> bool:
        """Whether the capture carries HTTP (then the advice speaks of nginx and
        backends; otherwise of clients and servers)."""
        if self.resets.http_causes or self.backend_name() is not None:
            return True
        return any(c.exchanges for c in self.result.conns)

    def servers_json(self, by_server: dict[int, Counter[str]], nk: float) -> list[dict]:
        """SPEC ``summary.servers``: one object per upstream server address."""
        servers = {c.server for c in self.result.conns}
        rollup = self.result.rollup
        if rollup is not None:
            servers |= rollup.server_set
        servers |= set(by_server)
        names = self.backend_names()
        out = []
        for srv in sorted(servers, key=lambda k: (-sum(by_server.get(k, {}).values()), self.ep(k))):
            counts = by_server.get(srv, Counter())
            to = self.ctx.idle_timeout.get(srv)
            out.append(
                {
                    "server": self.ep(srv),
                    "backend": names.get(srv >> 16),
                    "idle_timeout_s": None if to is None else round(to, 3),
                    "idle_timeout_basis": self.ctx.idle_timeout_basis.get(srv),
                    "nginx_keepalive_timeout_s": nk,
                    "resets": sum(counts.values()),
                    "by_cause": {c: counts[c] for c in CAUSES if counts.get(c)},
                }
            )
        return out

    def advertised_timeout(self) -> float | None:
        """The Keep-Alive: timeout=N most responses advertised, if any."""
        rollup = self.result.rollup
        vals = rollup.timeouts.copy() if rollup is not None else Votes()
        for c in self.result.conns:
            t = advertised_timeout(c.resp_headers)
            if t is not None:
                vals.add(t, (c.start, c.client, c.server, 0))
        best = vals.best()
        return None if best is None else best[0]

    # --------------------------------------------------------------- JSON
    def reset_json(self, r: ResetRecord) -> dict:
        ev, c, v = r.event, r.conn, r.verdict
        matched_ids = {id(f) for f in v.matched}
        return {
            "client": self.ep(c.client),
            "server": self.ep(c.server),
            "ts": round(ev.ts, 6),
            "sender": v.sender,
            "cause": v.cause,
            "confidence": v.confidence,
            "phase": ev.phase if ev.phase != "unknown" else "idle",
            "idle_before_s": None if ev.idle_before_s is None else round(ev.idle_before_s, 6),
            "requests_before": ev.requests_before,
            "evidence": [f.text for f in v.matched]
            + [f.text for f in v.evidence if id(f) not in matched_ids],
            "rule": v.rule,
            "explanation": v.says,
            "facts": sorted(r.facts),
            "rst_packets": r.rst_packets,
            "direction": "client" if ev.from_client else "server",
            "conn_id": c.id,
            "role_rule": c.role_rule,
            "app": record_app(r),
            "best_guess": v.best_guess,
            "harmless": v.cause in HARMLESS,
        }

    def summary(self) -> dict:
        by_cause: Counter[str] = Counter()
        by_sender: Counter[str] = Counter()
        by_server: dict[int, Counter[str]] = {}
        for (cause, sender), srv in zip(self.resets.pairs(), self.resets.servers(), strict=True):
            by_cause[cause] += 1
            by_sender[sender] += 1
            by_server.setdefault(srv, Counter())[cause] += 1
        idle = idle_summary(self.ctx)
        timeout = None if idle is None else idle.timeout_s
        backend = self.backend_name()
        nk = self.nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
        advertised = self.advertised_timeout()
        recs = self.recommendations(by_cause, timeout, advertised, backend, nk, by_server)
        return {
            "resets": len(self.resets),
            "by_cause": {c: by_cause.get(c, 0) for c in CAUSES if by_cause.get(c)},
            "by_sender": {s: by_sender.get(s, 0) for s in SENDERS if by_sender.get(s)},
            "server_idle_timeout_s": None if timeout is None else round(timeout, 3),
            "server_idle_timeout_min_s": None if idle is None else round(idle.min_s, 3),
            "server_idle_timeout_max_s": None if idle is None else round(idle.max_s, 3),
            "server_idle_timeout_spread_s": None
            if idle is None
            else round(idle.max_s - idle.min_s, 3),
            "server_idle_timeout_samples": 0 if idle is None else idle.samples,
            "server_idle_timeout_basis": None if idle is None else idle.basis,
            "raced_idle_gaps_s": [] if idle is None else [round(g, 3) for g in idle.race_gaps],
            "server_idle_timeouts": self.idle_timeouts(),
            "backend": backend,
            "backend_advertised_keepalive_s": advertised,
            "nginx_keepalive_timeout_s": nk,
            "nginx_keepalive_timeout_source": "nginx.conf" if self.nginx_from_conf else "default",
            "recommendations": recs,
            "harmless": {c: by_cause[c] for c in HARMLESS if by_cause.get(c)},
            "servers": self.servers_json(by_server, nk),
        }

    def _keepalive_per_server(
        self, by_server: dict[int, Counter[str]], nginx_keepalive_s: float, http: bool
    ) -> list[str] | None:
        """With several upstream servers of their own idle timeouts, the
        keep-alive advice once per server that raced (its timeout, its name);
        None with one server (the capture-wide advice says it)."""
        if len(self.ctx.idle_timeout) < 2 and len(by_server) < 2:
            return None
        names = self.backend_names()
        out = []
        raced = [srv for srv, counts in by_server.items() if counts.get("keepalive_race")]
        waiting = [
            srv
            for srv, to in self.ctx.idle_timeout.items()
            if srv not in raced and to < nginx_keepalive_s
        ]
        for srv in raced + waiting:
            out.append(
                f"server {self.ep(srv)}: "
                + recommend(
                    "keepalive_race" if srv in raced else "keepalive_risk",
                    idle_timeout_s=self.ctx.idle_timeout.get(srv),
                    backend=names.get(srv >> 16),
                    nginx_keepalive_s=nginx_keepalive_s,
                    nginx_from_conf=self.nginx_from_conf,
                    http=http,
                )
            )
        return out

    def recommendations(
        self,
        by_cause: Counter[str],
        idle_timeout_s: float | None,
        advertised_s: float | None,
        backend: str | None,
        nginx_keepalive_s: float,
        by_server: dict[int, Counter[str]] | None = None,
    ) -> list[str]:
        """One recommendation per reset cause and finding, plus the keep-alive
        risk; with several upstream servers, the keep-alive lines per server."""

        http = self.http_seen()

        def rec(cause: str, idle_s: float | None, from_header: bool = False) -> str:
            return recommend(
                cause,
                idle_timeout_s=idle_s,
                backend=backend,
                nginx_keepalive_s=nginx_keepalive_s,
                nginx_from_conf=self.nginx_from_conf,
                idle_from_header=from_header,
                http=http and (cause not in by_cause or cause in self.resets.http_causes),
            )

        recs: list[str] = []
        seen: set[str] = set()
        per_server = self._keepalive_per_server(by_server or {}, nginx_keepalive_s, http)
        for cause, _n in by_cause.most_common():
            if cause != "unknown" and cause not in seen:
                seen.add(cause)
                if cause == "keepalive_race" and per_server:
                    recs.extend(per_server)
                    continue
                recs.append(rec(cause, idle_timeout_s))
        for f in self.findings:
            if f["cause"] not in seen:
                seen.add(f["cause"])
                recs.append(rec(f["cause"], idle_timeout_s))
        risk, from_header = idle_timeout_s, False
        if idle_timeout_s is None and advertised_s is not None:
            risk, from_header = advertised_s, True  # no idle close seen: use what it announces
        if per_server is not None:
            if "keepalive_race" not in seen:
                recs.extend(per_server)  # several backends: each one's idle timeout
        elif risk is not None and risk < nginx_keepalive_s and "keepalive_race" not in seen:
            # the backend gives up on idle connections before nginx does: a race waiting
            recs.append(rec("keepalive_risk", risk, from_header))
        return recs

    def capture_json(self) -> dict:
        res = self.result
        files = [
            {
                "path": s.path,
                "format": s.file_format + (f"+{s.compression}" if s.compression else ""),
                "linktypes": [linktype_name(lt) for lt in s.linktypes],
                "packets": s.frames,
            }
            for s in res.sources
        ]
        lts = sorted({lt for s in res.sources for lt in s.linktypes})
        st = res.decode
        span = None
        if res.first_ts is not None and res.last_ts is not None:
            span = round(res.last_ts - res.first_ts, 6)
        out = {
            "files": files,
            "linktypes": [linktype_name(lt) for lt in lts],
            "packets": res.packets,
            "tcp_packets": st.tcp,
            "other_packets": st.non_ip + st.non_tcp,
            "first_ts": res.first_ts,
            "last_ts": res.last_ts,
            "span_s": span,
            "vantage": self.ctx.vantage.as_dict(),
            "warnings": res.warnings,
        }
        if res.live is not None:
            out["live"] = res.live
        return out

    def to_json(self, resets: bool = True) -> dict:
        """The report as JSON-ready values; ``resets=False`` leaves the
        resets' list empty (:func:`write_json` writes them one at a time)."""
        out = {
            "tool": {"name": "pcapreset", "version": __version__},
            "capture": self.capture_json(),
            "flows": self.flows(),
            "resets": [self.reset_json(r) for r in self.resets] if resets else [],
            "findings": self.findings,
            "summary": self.summary(),
        }
        # extra top-level sections (nginx_log, nginx_conf); "_" keys are text-only
        out.update({k: v for k, v in self.extra.items() if not k.startswith("_")})
        return out

    # --------------------------------------------------------------- conns
    def conn_row(self, c: Conn) -> dict:
        return {
            "id": c.id,
            "client": self.ep(c.client),
            "server": self.ep(c.server),
            "start": round(c.start, 6),
            "end": round(c.end, 6),
            "duration_s": round(c.end - c.start, 6),
            "client_bytes": c.c.bytes,
            "server_bytes": c.s.bytes,
            "client_packets": c.c.pkts,
            "server_packets": c.s.pkts,
            "packets": c.packets,
            "conn_state": conn_state(c),
            "history": c.history,
            "requests": c.requests,
            "resets": len(c.rst_events),
            "client_retrans": c.c.retrans,
            "server_retrans": c.s.retrans,
            "role_rule": c.role_rule,
        }

    def conn_rows(self) -> list[dict]:
        """One row per connection; needs them all (analyze(..., evict=False))."""
        require_all_conns(self.result)
        return [self.conn_row(c) for c in self.result.conns]


def _packed_conns(rollup: object) -> Iterator[Conn]:
    """The packed connections of a rollup, unpacked one at a time."""
    packed = getattr(rollup, "packed", None)
    if not packed:
        return iter(())
    return (c for c, _j in packed.conns())


def require_all_conns(result: EngineResult) -> None:
    """Connection tables need every connection: refuse a result with evicted ones."""
    rollup = result.rollup
    if rollup is not None and (rollup.count or rollup.packed):
        raise PcapResetError(
            f"{rollup.count + len(rollup.packed)} connections were summarised, not kept: "
            "analyse with evict=False for per-connection tables"
        )


def record_app(r: ResetRecord) -> str:
    """The reset's ``app`` (http | websocket | tls | other | none), from its facts."""
    for name in r.facts:
        if name.startswith("app_"):
            return name[4:]
    return "none"


#: a dead end answers the other side's next segment: at the latest its first
#: retransmission, which Linux sends after at most a few 200 ms-minimum RTOs
AFTERMATH_S = 3.0


def _aftermath(prev: ResetRecord, ev: RstEvent, facts: dict[str, Fact]) -> bool:
    """A kernel RST for a socket that a forged RST just killed.

    After a middlebox's RST closed one end (or both), the peer that never saw
    it keeps sending, and the dead end's kernel answers with a RST of its own
    with no socket behind it (bare, no TCP options: tcp_v4_send_reset), from
    the real host (its TTL fits). That RST is the forged reset's aftermath, not
    a second reset of the connection.
    """
    return (
        prev.verdict.cause == "middlebox"
        and "bare_rst" in facts
        and "no_options" in facts
        and "ttl_consistent" in facts
        and ev.ts - prev.event.ts <= AFTERMATH_S
    )


def _mark_aftermath(prev: ResetRecord, ev: RstEvent, facts: dict[str, Fact]) -> None:
    """The RST is the real host's kernel answering after a forged RST killed
    its socket: its own event (another sender), classified as after_close."""
    who = "client (nginx)" if ev.from_client else "server (backend)"
    facts["socket_reset_before"] = Fact(
        "socket_reset_before",
        f"a forged RST {ev.ts - prev.event.ts:.3f} s earlier had killed the {who} socket; "
        "this bare RST from the real host (its TTL fits) answers the other end's next segment",
    )


#: a SYN retransmitted this long after the refused one is still the same
#: attempt (Linux gives up after ~127 s of backoff, Windows after ~21 s)
SYN_RETRY_S = 130.0
#: refused attempts held back for their retries before the oldest are added
REFUSED_HELD_MAX = 256


def _syn_retry(
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord]], c: Conn, ev: RstEvent
) -> bool:
    """``ev`` refuses a retransmission of a SYN already refused (the same
    client ISN on the same 4-tuple): one connection attempt, one event; the
    refused record counts its RST packets and says so."""
    held = refused.get((c.client, c.server))
    if held is None or c.c.isn is None or held[0] != c.c.isn or not is_refused(c, ev):
        return False
    r = held[1]
    if ev.ts - r.event.ts > SYN_RETRY_S:
        return False
    r.rst_packets += len(ev.packets)
    n = r.facts.get("syn_retries_refused")
    k = 1 if n is None else int(n.text.split()[0]) + 1
    fact = Fact(
        "syn_retries_refused",
        f"{k} retransmitted SYN(s) of this attempt (same ISN) refused too: one event",
    )
    r.facts[fact.name] = fact
    r.verdict.evidence = [f for f in r.verdict.evidence if f.name != fact.name] + [fact]
    return True


def _first_refused(c: Conn, ev: RstEvent) -> bool:
    return ev.index == 0 and is_refused(c, ev)


def _flush_refused(
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord]], resets: Records, before: float
) -> None:
    for k in [k for k, (_isn, r) in refused.items() if r.event.ts < before]:
        resets.add(refused.pop(k)[1])


def build(
    result: EngineResult,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
) -> Report:
    ctx = build_context(result.conns, result.rollup)
    resets = Records(result.rollup.packed if result.rollup is not None else None)
    agg: dict[str, dict] = {}
    book = result.book
    #: (client, server) -> (client ISN, the refused attempt's record, not yet added)
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord]] = {}
    for c, j in result.each_conn():
        mine: list[ResetRecord] = []  # this connection's
        for ev in split_by_source(c):
            if not mine and _syn_retry(refused, c, ev):
                continue  # a retransmitted SYN of an attempt already refused
            if mine and is_followup(c, ev, rtt_of(c, ctx)):
                mine[-1].rst_packets += len(ev.packets)  # same reset, in-flight data
                continue
            facts = rst_facts(c, ev, ctx)
            forged = next((r for r in reversed(mine) if r.verdict.cause == "middlebox"), None)
            if forged is not None and _aftermath(forged, ev, facts):
                _mark_aftermath(forged, ev, facts)  # a consequence of the forged RST
            mine.append(ResetRecord(c, ev, classify(facts), facts))
        for cause, msg in conn_findings(c, lambda x: retry_burst(x, ctx)):
            a = agg.setdefault(cause, {"cause": cause, "count": 0, "evidence": [], "flows": []})
            a["count"] += 1
            if len(a["evidence"]) < 5 and msg not in a["evidence"]:
                a["evidence"].append(msg)
            if len(a["flows"]) < 50:
                a["flows"].append(f"{book.endpoint(c.client)} -> {book.endpoint(c.server)}")
        # (the events are the connection's own here, not yet stubs)
        hold = [_first_refused(c, r.event) for r in mine]  # type: ignore[arg-type]
        if j is not None:  # a packed connection: its records keep stubs
            assert resets.packed is not None
            stub = ConnStub(c, resets.packed, j)
            for r in mine:
                r.conn = stub
                r.event = EventStub(r.event, stub)  # type: ignore[arg-type]
        for r, held_back in zip(mine, hold, strict=True):
            if held_back:
                # held back: the attempt's retransmitted SYNs may follow
                k = (c.client, c.server)
                held = refused.pop(k, None)
                if held is not None:
                    resets.add(held[1])
                refused[k] = (c.c.isn, r)
                if len(refused) > REFUSED_HELD_MAX:
                    _flush_refused(refused, resets, c.start - SYN_RETRY_S)
            else:
                resets.add(r)
    _flush_refused(refused, resets, float("inf"))
    resets.done()
    findings = sorted(agg.values(), key=lambda a: -a["count"])
    return Report(result, ctx, resets, findings, nginx_keepalive_s, nginx_from_conf)


class _ResetsJSON(list):
    """The resets' JSON for :func:`write_json`: each dict made as the encoder
    reaches it (:mod:`pcapreset.jsonout`, like json's encoder that runs with
    an indent, walks a list with ``not lst`` and ``for value in lst``)."""

    def __init__(self, rep: Report) -> None:
        super().__init__()
        self.rep = rep

    def __len__(self) -> int:
        return len(self.rep.resets)

    def __iter__(self) -> Iterator[dict]:  # type: ignore[override]
        reset_json = self.rep.reset_json
        return (reset_json(r) for r in self.rep.resets)


def write_json(rep: Report, out: TextIO) -> None:
    """``json.dump(rep.to_json(), out, indent=2)``'s bytes (through
    :func:`pcapreset.jsonout.dump`), each reset's dict made as it is written:
    a long capture's reset dicts, all built at once, were its largest
    allocation at the end (~1 KB per reset)."""
    top = rep.to_json(resets=False)
    top["resets"] = _ResetsJSON(rep)
    jsonout.dump(top, out)


def write_jsonl(rep: Report, out: TextIO) -> None:
    """``--format jsonl`` offline: one line per reset (``json.dumps`` of its
    dict), then the whole report on one line: the bytes of
    ``json.dumps(rep.to_json())``, the resets' dicts made as they are written
    (not all at once, and not one string for the whole report)."""
    dumps = json.dumps  # (no indent: the C encoder, no closures left behind)
    reset_json = rep.reset_json
    for r in rep.resets:
        out.write(dumps(reset_json(r)) + "\n")
    out.write("{")
    for n, (k, v) in enumerate(rep.to_json(resets=False).items()):
        out.write((", " if n else "") + dumps(k) + ": ")
        if k != "resets":
            out.write(dumps(v))
            continue
        out.write("[")
        for i, r in enumerate(rep.resets):
            out.write((", " if i else "") + dumps(reset_json(r)))
        out.write("]")
    out.write("}\n")


# ------------------------------------------------------------------ text
def _fmt_time(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}"


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=first if first is not None else indent, subsequent_indent=indent
    ) or [first or indent]


def render_text(rep: Report, verbose: bool = False) -> str:
    """The text report (:func:`text_lines`) as one string."""
    return "".join(line + "\n" for line in text_lines(rep, verbose))


def write_text(rep: Report, out: TextIO, verbose: bool = False) -> None:
    """:func:`render_text` written a line at a time (a long capture's table
    of resets, with ``-v`` their evidence, is most of the text)."""
    for line in text_lines(rep, verbose):
        out.write(line + "\n")


def text_lines(rep: Report, verbose: bool = False) -> Iterator[str]:
    """The 80-column text report, line by line."""
    j = rep.to_json(resets=False)
    cap = j["capture"]
    names = ", ".join(os.path.basename(f["path"]) for f in cap["files"])
    span = cap["span_s"]
    when = ""
    if cap["first_ts"] is not None:
        when = time.strftime(" from %Y-%m-%d %H:%M:%SZ", time.gmtime(cap["first_ts"]))
    head = f"{names}: {cap['packets']:,} packets"
    if cap["packets"]:
        head += f" ({cap['tcp_packets']:,} TCP)"
    if span is not None:
        head += f", {span:.1f} s{when}"
    yield from _wrap(
        f"{head}; {', '.join(cap['linktypes']) or 'no link type'}",
        "  ",
        "capture  ",
    )
    live = cap.get("live")
    if live:
        yield from _wrap(
            f"{live.get('iface')} '{live.get('filter')}' for {live.get('duration_s')} s "
            f"(stopped by {live.get('stopped_by')}): kernel queued "
            f"{live.get('kernel_packets')}, dropped {live.get('kernel_drops')}"
            + (f"; written to {live['write']}" if live.get("write") else ""),
            "  ",
            "live     ",
        )
    v = cap["vantage"]
    yield from _wrap(f"{v['where']} ({v['basis']})", "  ", "vantage  ")
    for w in cap["warnings"]:
        yield from _wrap(w["message"], "  ", "warning  ")
    s = j["summary"]
    yield f"flows    {j['flows']:,} TCP connections, {s['resets']:,} reset events"
    if s["server_idle_timeout_s"] is not None:
        yield from _wrap(
            f"backend closes idle connections after ~{s['server_idle_timeout_s']:.2f} s "
            f"({s['server_idle_timeout_min_s']:.2f}-{s['server_idle_timeout_max_s']:.2f} s, "
            f"{s['server_idle_timeout_samples']} {s['server_idle_timeout_basis']}); nginx "
            f"reuses idle connections for up to {s['nginx_keepalive_timeout_s']:g} s "
            f"({s['nginx_keepalive_timeout_source']})"
            + (f"; backend looks like {s['backend']}" if s["backend"] else ""),
            "  ",
            "idle     ",
        )
    yield ""
    if rep.resets:
        yield "resets by cause"
        senders: Counter[tuple[str, str]] = Counter()
        causes: Counter[str] = Counter()
        for cause, sender in rep.resets.pairs():
            senders[(cause, sender)] += 1
            causes[cause] += 1
        for cause, n in causes.most_common():
            who = ", ".join(f"{sd} {k}" for (c, sd), k in senders.items() if c == cause)
            note = "  harmless" if cause in HARMLESS else ""
            yield f"  {cause:20} {n:6,}  ({who}){note}"
        yield ""
        yield from _reset_table(rep, verbose)
    else:
        yield "no TCP resets in this capture"
    if rep.findings:
        yield ""
        yield "findings"
        for f in rep.findings:
            yield f"  {f['cause']:20} {f['count']:6,}"
            for e in f["evidence"][:2]:
                yield from _wrap(e, "      ", "    - ")
    extra_lines = rep.extra.get("_text_lines")
    if extra_lines:
        yield ""
        yield from extra_lines
    if s["recommendations"]:
        yield ""
        yield "what to change"
        for rec in s["recommendations"]:
            yield from _wrap(rec, "    ", "  - ")


def _shape(r: ResetRecord) -> tuple:
    """What makes two resets "the same" in the text table: server, verdict and phase."""
    v = r.verdict
    return (r.conn.server, v.cause, v.sender, v.rule, v.best_guess, r.event.phase)


def _reset_table(rep: Report, verbose: bool) -> Iterator[str]:
    """One line per reset, its verdict's confidence shown; identical resets
    (same server, cause, sender, rule and phase) on one line with a count."""
    clients = rep.resets.clients()
    servers = sorted(set(rep.resets.servers()))
    short_client = len({c >> 16 for c in clients}) == 1
    cw = max(len(rep.ep(c)) for c in clients)

    def port(c: int) -> str:
        return ":" + str(c & 0xFFFF)

    name: Callable[[int], str] = rep.ep
    if 12 + 1 + cw + 1 + 9 + 1 + 18 + 1 + 4 + 1 + 7 + 1 + 14 > WIDTH or short_client:
        name = port
        cw = max(6, max(len(port(c)) for c in clients))
    multi_server = len(servers) > 1
    if short_client:
        ip = rep.ep(clients[0]).rsplit(":", 1)[0]
        head = f"client {ip}" + ("" if multi_server else f"  ->  server {rep.ep(servers[0])}")
        if len(head) <= WIDTH:
            yield head
        else:  # long IPv6 addresses: one line each
            yield f"client {ip}"
            yield f"server {rep.ep(servers[0])}"
    elif not multi_server:
        yield f"server {rep.ep(servers[0])}"
    yield f"{'time':12} {'client':{cw}} {'sender':9} {'cause':18} {'conf':>4} {'idle_s':>7} phase"
    # identical resets: counted, shown once (where the first one is)
    groups: dict[tuple, list] = {}
    for r in rep.resets:
        g = groups.get(_shape(r))
        if g is None:
            groups[_shape(r)] = [1, r.event.ts]
        else:
            g[0] += 1
            g[1] = r.event.ts
    shown: set[tuple] = set()
    last_server = None
    for r in rep.resets:
        key = _shape(r)
        if key in shown:
            continue
        shown.add(key)
        count, last_ts = groups[key]
        cl = name(r.conn.client)
        if multi_server and r.conn.server != last_server:
            last_server = r.conn.server
            yield f"-- server {rep.ep(r.conn.server)}"
        ev, v = r.event, r.verdict
        idle = "" if ev.idle_before_s is None else f"{ev.idle_before_s:7.2f}"
        cause = v.cause if v.best_guess is None else f"unknown ({v.best_guess}?)"
        line = (
            f"{_fmt_time(ev.ts):12} {cl:{cw}} {v.sender:9} {cause:18} {v.confidence:4.2f} "
            f"{idle:>7} {ev.phase}"
        )
        if count > 1:
            more = f"  x{count:,} to {_fmt_time(last_ts)}"
            line += more if len(line) + len(more) <= WIDTH else f" x{count:,}"
        yield line
        if verbose:
            guess = f"; best guess {v.best_guess}" if v.best_guess else ""
            yield from _wrap(
                f"{v.says} [rule {v.rule}, confidence {v.confidence:.2f}{guess}]",
                "      ",
                "    = ",
            )
            matched = set(id(f) for f in v.matched)
            for f in v.matched:
                yield from _wrap(f.text, "      ", "    + ")
            for f in v.evidence:
                if id(f) not in matched:
                    yield from _wrap(f.text, "      ", "    . ")


def render_conns_text(rows: list[dict]) -> str:
    out = [
        f"{'client':21} {'server':21} {'state':6} {'dur_s':>7} {'c_bytes':>8} {'s_bytes':>8} rst"
    ]
    for r in rows:
        out.append(
            f"{r['client'][:21]:21} {r['server'][:21]:21} {r['conn_state']:6} "
            f"{r['duration_s']:7.2f} {r['client_bytes']:8} {r['server_bytes']:8} {r['resets']:3}"
        )
    return "\n".join(out) + "\n"
