"""model: the report of a capture (verdicts, findings, summary) as values.

:func:`.build.build` interprets an :class:`EngineResult` (context, then each
connection's resets and findings) and returns a :class:`Report`;
:meth:`Report.to_json` is the ``--format json`` contract of SPEC.md. The
text report is :mod:`.text`, the JSON writers :mod:`.jsonout`; the summary
section and its recommendations are :mod:`.summary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import __version__
from ..capture.tcp import linktype_name
from ..errors import PcapResetError
from ..interpret.context import Context
from ..interpret.resets import ResetRecord, record_app
from ..interpret.rules import HARMLESS
from ..track.conn import Conn
from ..track.connstate import conn_state
from ..track.flowid import community_id
from .columns import TIME_DECIMALS, split_endpoint
from .records import Records
from .result import EngineResult
from .summary import summary as summary_section


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

    def flows(self) -> int:
        """Connections in the capture, evicted ones (EngineResult.rollup) included."""
        rollup = self.result.rollup
        if rollup is None:
            return len(self.result.conns)
        return len(self.result.conns) + rollup.count + len(rollup.packed)

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
        """The ``summary`` section (:func:`.summary.summary`)."""
        return summary_section(self)

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


def require_all_conns(result: EngineResult) -> None:
    """Connection tables need every connection: refuse a result with evicted ones."""
    rollup = result.rollup
    if rollup is not None and (rollup.count or rollup.packed):
        raise PcapResetError(
            f"{rollup.count + len(rollup.packed)} connections were summarised, not kept: "
            "analyse with evict=False for per-connection tables"
        )
