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
from ..interpret.evidence import (
    Context,
    Fact,
    Votes,
    build_context,
    idle_summary,
    is_followup,
    rst_facts,
    rtt_of,
)
from ..interpret.findings import conn_findings
from ..interpret.rules import CAUSES, SENDERS, Verdict, classify
from ..track.connstate import conn_state
from ..track.flowid import community_id
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
            (v.cause, v.sender, v.confidence, v.rule, v.says),
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
    cause, sender, confidence, rule, says = vf
    verdict = Verdict(
        cause,
        sender,
        confidence,
        rule,
        says,
        [fs[k] for k in matched],
        facts if evidence is None else [fs[k] for k in evidence],
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
        }

    def summary(self) -> dict:
        by_cause: Counter[str] = Counter()
        by_sender: Counter[str] = Counter()
        for cause, sender in self.resets.pairs():
            by_cause[cause] += 1
            by_sender[sender] += 1
        idle = idle_summary(self.ctx)
        timeout = None if idle is None else idle.timeout_s
        backend = self.backend_name()
        nk = self.nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
        advertised = self.advertised_timeout()
        recs = self.recommendations(by_cause, timeout, advertised, backend, nk)
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
        }

    def recommendations(
        self,
        by_cause: Counter[str],
        idle_timeout_s: float | None,
        advertised_s: float | None,
        backend: str | None,
        nginx_keepalive_s: float,
    ) -> list[str]:
        """One recommendation per reset cause and finding, plus the keep-alive risk."""

        def rec(cause: str, idle_s: float | None, from_header: bool = False) -> str:
            return recommend(
                cause,
                idle_timeout_s=idle_s,
                backend=backend,
                nginx_keepalive_s=nginx_keepalive_s,
                nginx_from_conf=self.nginx_from_conf,
                idle_from_header=from_header,
            )

        recs: list[str] = []
        seen: set[str] = set()
        for cause, _n in by_cause.most_common():
            if cause != "unknown" and cause not in seen:
                seen.add(cause)
                recs.append(rec(cause, idle_timeout_s))
        for f in self.findings:
            if f["cause"] not in seen:
                seen.add(f["cause"])
                recs.append(rec(f["cause"], idle_timeout_s))
        risk, from_header = idle_timeout_s, False
        if idle_timeout_s is None and advertised_s is not None:
            risk, from_header = advertised_s, True  # no idle close seen: use what it announces
        if risk is not None and risk < nginx_keepalive_s and "keepalive_race" not in seen:
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
    def conn_row(self, c: Conn, reset_cause: str | None = None) -> dict:
        """One connection's row, keys :data:`CONN_COLUMNS` (times: epoch
        seconds; ``reset_cause``: its last reset's cause, if any)."""
        client, server = self.ep(c.client), self.ep(c.server)
        start, end = round(c.start, TIME_DECIMALS), round(c.end, TIME_DECIMALS)
        cip, cport = split_endpoint(client)
        sip, sport = split_endpoint(server)
        return {
            "conn_id": c.id,
            "client": client,
            "client_ip": cip,
            "client_port": cport,
            "server": server,
            "server_ip": sip,
            "server_port": sport,
            "community_id": community_id(cip, sip, cport, sport),
            "start": start,
            "end": end,
            "duration_s": round(end - start, TIME_DECIMALS),
            "client_bytes": c.c.bytes,
            "server_bytes": c.s.bytes,
            "client_packets": c.c.pkts,
            "server_packets": c.s.pkts,
            "packets": c.packets,
            "conn_state": conn_state(c),
            "history": c.history,
            "requests": c.requests,
            "completed_requests": c.completed_exchanges,
            "resets": len(c.rst_events),
            "reset_cause": reset_cause,
            "client_retrans": c.c.retrans,
            "server_retrans": c.s.retrans,
            "role_rule": c.role_rule,
        }

    def last_reset_causes(self) -> dict[int, str]:
        """Connection id -> the cause of its last reset."""
        return {r.conn.id: r.verdict.cause for r in self.resets}  # (sorted by time)

    def conn_rows(self) -> list[dict]:
        """One row per connection; needs them all (analyze(..., evict=False))."""
        require_all_conns(self.result)
        causes = self.last_reset_causes()
        return [self.conn_row(c, causes.get(c.id)) for c in self.result.conns]


#: the columns of a connection, in order: ``pcapreset conns`` (json, csv)
#: and the ``connections`` table of :func:`pcapreset.load` and ``--export``
#: use this one vocabulary (units in the names; times UTC)
CONN_COLUMNS = (
    "conn_id", "client", "client_ip", "client_port", "server", "server_ip", "server_port",
    "community_id", "start", "end", "duration_s", "client_bytes", "server_bytes", "client_packets",
    "server_packets", "packets", "conn_state", "history", "requests", "completed_requests",
    "resets", "reset_cause", "client_retrans", "server_retrans", "role_rule",
)  # fmt: skip
#: times are kept to the µs: pcap's resolution, and the finest a float64
#: epoch time carries (a ns capture's times are rounded to it too)
TIME_DECIMALS = 6
#: how CSV writes a time (``conns --format csv``, ``--export-format csv``)
CSV_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def split_endpoint(ep: str) -> tuple[str, int]:
    """``"ip:port"`` / ``"[v6]:port"`` -> (ip, port)."""
    ip, _, port = ep.rpartition(":")
    return ip.strip("[]"), int(port)


def csv_time(ts: float) -> str:
    """Epoch seconds as CSV writes them: ISO 8601 UTC to the µs, ``Z``
    (what pandas writes for the tables' datetime columns with :data:`CSV_TIME`)."""
    us = round(ts * 1e6)
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:06d}Z"


def require_all_conns(result: EngineResult) -> None:
    """Connection tables need every connection: refuse a result with evicted ones."""
    rollup = result.rollup
    if rollup is not None and (rollup.count or rollup.packed):
        raise PcapResetError(
            f"{rollup.count + len(rollup.packed)} connections were summarised, not kept: "
            "analyse with evict=False for per-connection tables"
        )


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


def _fold_aftermath(prev: ResetRecord, ev: RstEvent) -> None:
    prev.rst_packets += len(ev.packets)
    who = "client (nginx)" if ev.from_client else "server (backend)"
    fact = Fact(
        "aftermath_rst",
        f"then the {who} kernel reset the connection {ev.ts - prev.event.ts:.3f} s later "
        "(a bare RST from the real host: the forged RST had closed its socket)",
    )
    prev.facts[fact.name] = fact
    prev.verdict.evidence.append(fact)


def build(
    result: EngineResult,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
) -> Report:
    ctx = build_context(result.conns, result.rollup)
    resets = Records(result.rollup.packed if result.rollup is not None else None)
    agg: dict[str, dict] = {}
    book = result.book
    for c, j in result.each_conn():
        mine: list[ResetRecord] = []  # this connection's
        for ev in c.rst_events:
            if mine and is_followup(c, ev, rtt_of(c, ctx)):
                mine[-1].rst_packets += len(ev.packets)  # same reset, in-flight data
                continue
            facts = rst_facts(c, ev, ctx)
            if mine and _aftermath(mine[-1], ev, facts):
                _fold_aftermath(mine[-1], ev)  # a consequence of the forged RST
                continue
            mine.append(ResetRecord(c, ev, classify(facts), facts))
        for cause, msg in conn_findings(c):
            a = agg.setdefault(cause, {"cause": cause, "count": 0, "evidence": [], "flows": []})
            a["count"] += 1
            if len(a["evidence"]) < 5 and msg not in a["evidence"]:
                a["evidence"].append(msg)
            if len(a["flows"]) < 50:
                a["flows"].append(f"{book.endpoint(c.client)} -> {book.endpoint(c.server)}")
        if j is not None:  # a packed connection: its records keep stubs
            assert resets.packed is not None
            stub = ConnStub(c, resets.packed, j)
            for r in mine:
                r.conn = stub
                r.event = EventStub(r.event, stub)  # type: ignore[arg-type]
        for r in mine:
            resets.add(r)
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


def jsonl_reset(r: dict) -> dict:
    """A reset's ``--format jsonl`` line: ``{"type": "reset"}`` and the reset's
    object as the report gives it."""
    return {"type": "reset", **r}


def jsonl_report(j: dict) -> dict:
    """The last ``--format jsonl`` line: ``{"type": "report"}`` and the report."""
    return {"type": "report", **j}


def write_jsonl(rep: Report, out: TextIO) -> None:
    """``--format jsonl`` offline: one line per reset (``json.dumps`` of
    :func:`jsonl_reset`), then the whole report on one line: the bytes of
    ``json.dumps(jsonl_report(rep.to_json()))``, the resets' dicts made as
    they are written (not all at once, and not one string for the whole
    report)."""
    dumps = json.dumps  # (no indent: the C encoder, no closures left behind)
    reset_json = rep.reset_json
    for r in rep.resets:
        out.write('{"type": "reset", ' + dumps(reset_json(r))[1:] + "\n")
    out.write('{"type": "report"')
    for k, v in rep.to_json(resets=False).items():
        out.write(", " + dumps(k) + ": ")
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
            yield f"  {cause:20} {n:6,}  ({who})"
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


def _reset_table(rep: Report, verbose: bool) -> Iterator[str]:
    clients = rep.resets.clients()
    servers = sorted(set(rep.resets.servers()))
    short_client = len({c >> 16 for c in clients}) == 1
    cw = max(len(rep.ep(c)) for c in clients)

    def port(c: int) -> str:
        return ":" + str(c & 0xFFFF)

    name: Callable[[int], str] = rep.ep
    if 12 + 1 + cw + 1 + 9 + 1 + 18 + 1 + 7 + 1 + 14 > WIDTH or short_client:
        name = port
        cw = max(6, max(len(port(c)) for c in clients))
    multi_server = len(servers) > 1
    if short_client:
        ip = rep.ep(clients[0]).rsplit(":", 1)[0]
        yield f"client {ip}" + ("" if multi_server else f"  ->  server {rep.ep(servers[0])}")
    elif not multi_server:
        yield f"server {rep.ep(servers[0])}"
    yield f"{'time':12} {'client':{cw}} {'sender':9} {'cause':18} {'idle_s':>7} phase"
    last_server = None
    for r in rep.resets:
        cl = name(r.conn.client)
        if multi_server and r.conn.server != last_server:
            last_server = r.conn.server
            yield f"-- server {rep.ep(r.conn.server)}"
        ev = r.event
        idle = "" if ev.idle_before_s is None else f"{ev.idle_before_s:7.2f}"
        yield (
            f"{_fmt_time(ev.ts):12} {cl:{cw}} {r.verdict.sender:9} {r.verdict.cause:18} "
            f"{idle:>7} {ev.phase}"
        )
        if verbose:
            yield from _wrap(
                f"{r.verdict.says} [rule {r.verdict.rule}, confidence {r.verdict.confidence:.2f}]",
                "      ",
                "    = ",
            )
            matched = set(id(f) for f in r.verdict.matched)
            for f in r.verdict.matched:
                yield from _wrap(f.text, "      ", "    + ")
            for f in r.verdict.evidence:
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
