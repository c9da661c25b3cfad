"""model: the report of a capture (verdicts, findings, summary) as values.

:func:`.build.build` interprets an :class:`EngineResult` (context, then each
connection's resets and findings) and returns a :class:`Report`;
:meth:`Report.to_json` is the ``--format json`` contract of SPEC.md. The
text report is :mod:`.text`, the JSON writers :mod:`.jsonout`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import __version__
from ..capture.tcp import linktype_name
from ..engine.records import Records
from ..engine.result import EngineResult
from ..errors import PcapResetError
from ..interpret.advice import NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S, recommend
from ..interpret.backend_advice import header_evidence
from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.context import (
    Context,
    idle_summary,
)
from ..interpret.resets import ResetRecord, record_app
from ..interpret.rules import CAUSES, HARMLESS, SENDERS
from ..interpret.vantage import Votes
from ..track.conn import Conn
from ..track.connstate import conn_state
from ..track.flowid import community_id
from .columns import TIME_DECIMALS, split_endpoint


@dataclass
class HeaderStats:
    """What the responses' headers say, per server (Report.header_stats)."""

    said: dict[int, bool] = field(default_factory=dict)  # answered; any header read
    evicted_named: bool = False  # evicted connections named a backend

    @property
    def quiet(self) -> bool:
        """Every answering server's responses carried no Server, Connection or
        Keep-Alive header."""
        return bool(self.said) and not any(self.said.values()) and not self.evicted_named


@dataclass
class Report:
    result: EngineResult
    ctx: Context
    resets: Records
    findings: list[dict]
    nginx_keepalive_s: float | None = None
    nginx_from_conf: bool = False
    extra: dict = field(default_factory=dict)  # e.g. nginx_log section
    tls_upstream: bool = False  # nginx.conf: proxy_pass https://
    #: what nginx.conf, error.log and the headers show for the backend advice
    #: table (backend_advice.BACKEND_ADVICE): "fastcgi", "uwsgi", "http10", "too_big_header";
    #: the headers and exchanges add "tomcat", "node", "websocket"
    evidence: set[str] = field(default_factory=set)

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

    def header_stats(self) -> HeaderStats:
        """Per server: whether its answers carried any header read (every
        connection kept for the report, packed ones included)."""
        st = HeaderStats()
        for c, _j in self.result.each_conn():
            if any(x.status is not None for x in c.exchanges):
                st.said[c.server] = st.said.get(c.server, False) or bool(c.resp_headers)
        rollup = self.result.rollup
        st.evicted_named = rollup is not None and rollup.backends.best() is not None
        return st

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

        # header statistics only where the advice depends on them
        quiet = backend is None and self.header_stats().quiet

        seen_here = self.evidence | header_evidence(backend)
        if any(e.status == 101 for c in self.result.conns for e in c.exchanges):
            seen_here.add("websocket")  # an Upgrade answered with 101 Switching Protocols

        def rec(cause: str, idle_s: float | None, from_header: bool = False) -> str:
            return recommend(
                cause,
                evidence=seen_here,
                idle_timeout_s=idle_s,
                backend=backend,
                nginx_keepalive_s=nginx_keepalive_s,
                nginx_from_conf=self.nginx_from_conf,
                idle_from_header=from_header,
                quiet=quiet,
                tls=self.tls_upstream,
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
        return list(dict.fromkeys(recs))  # one backend row can answer several causes

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
        """One connection's row, keys :data:`.columns.CONN_COLUMNS` (times: epoch
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
