"""summary: the report's ``summary`` section (SPEC.md).

Resets counted by cause, sender and upstream server, the backend's idle
timeout and name, nginx's keep-alive timeout, and the recommendations: one
per reset cause and finding, plus the keep-alive risk a backend that closes
idle connections before nginx stops reusing them runs; with several upstream
servers of their own idle timeouts, the keep-alive advice once per server.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..interpret.advice import NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S, recommend
from ..interpret.backend_advice import header_evidence
from ..interpret.context import idle_summary
from ..interpret.rules import CAUSES, HARMLESS, SENDERS
from ..track.conn import PROTO_NAMES
from .headers import backend_name, backend_names, header_stats, most_advertised_timeout

if TYPE_CHECKING:
    from .model import Report


def summary(rep: Report) -> dict:
    """The ``summary`` section of the report's JSON."""
    by_cause: Counter[str] = Counter()
    by_sender: Counter[str] = Counter()
    by_server: dict[int, Counter[str]] = {}
    for (cause, sender), srv in zip(rep.resets.pairs(), rep.resets.servers(), strict=True):
        by_cause[cause] += 1
        by_sender[sender] += 1
        by_server.setdefault(srv, Counter())[cause] += 1
    idle = idle_summary(rep.ctx)
    timeout = None if idle is None else idle.timeout_s
    backend = backend_name(rep.result)
    nk = rep.nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
    advertised = most_advertised_timeout(rep.result)
    recs = recommendations(rep, by_cause, timeout, advertised, backend, nk, by_server)
    return {
        "resets": len(rep.resets),
        "by_cause": {c: by_cause.get(c, 0) for c in CAUSES if by_cause.get(c)},
        "by_sender": {s: by_sender.get(s, 0) for s in SENDERS if by_sender.get(s)},
        "server_idle_timeout_s": None if timeout is None else round(timeout, 3),
        "server_idle_timeout_min_s": None if idle is None else round(idle.min_s, 3),
        "server_idle_timeout_max_s": None if idle is None else round(idle.max_s, 3),
        "server_idle_timeout_spread_s": None if idle is None else round(idle.max_s - idle.min_s, 3),
        "server_idle_timeout_samples": 0 if idle is None else idle.samples,
        "server_idle_timeout_basis": None if idle is None else idle.basis,
        "raced_idle_gaps_s": [] if idle is None else [round(g, 3) for g in idle.race_gaps],
        "server_idle_timeouts": {rep.ep(k): round(v, 3) for k, v in rep.ctx.idle_timeout.items()},
        "backend": backend,
        "backend_advertised_keepalive_s": advertised,
        "nginx_keepalive_timeout_s": nk,
        "nginx_keepalive_timeout_source": "nginx.conf" if rep.nginx_from_conf else "default",
        "recommendations": recs,
        "harmless": {c: by_cause[c] for c in HARMLESS if by_cause.get(c)},
        "servers": servers_json(rep, by_server, nk),
    }


def servers_json(rep: Report, by_server: dict[int, Counter[str]], nk: float) -> list[dict]:
    """SPEC ``summary.servers``: one object per upstream server address."""
    servers = {c.server for c in rep.result.conns}
    rollup = rep.result.rollup
    if rollup is not None:
        servers |= rollup.server_set
    servers |= set(by_server)
    names = backend_names(rep.result)
    out = []
    for srv in sorted(servers, key=lambda k: (-sum(by_server.get(k, {}).values()), rep.ep(k))):
        counts = by_server.get(srv, Counter())
        to = rep.ctx.idle_timeout.get(srv)
        out.append(
            {
                "server": rep.ep(srv),
                "backend": names.get(srv >> 16),
                "idle_timeout_s": None if to is None else round(to, 3),
                "idle_timeout_basis": rep.ctx.idle_timeout_basis.get(srv),
                "nginx_keepalive_timeout_s": nk,
                "resets": sum(counts.values()),
                "by_cause": {c: counts[c] for c in CAUSES if counts.get(c)},
            }
        )
    return out


def http_seen(rep: Report) -> bool:
    """Whether the capture carries HTTP (then the advice speaks of nginx and
    backends; otherwise of clients and servers)."""
    if rep.resets.http_causes or backend_name(rep.result) is not None:
        return True
    return any(c.exchanges for c in rep.result.conns)


def _keepalive_per_server(
    rep: Report, by_server: dict[int, Counter[str]], nginx_keepalive_s: float, http: bool
) -> list[str] | None:
    """With several upstream servers of their own idle timeouts, the
    keep-alive advice once per server that raced (its timeout, its name);
    None with one server (the capture-wide advice says it)."""
    if len(rep.ctx.idle_timeout) < 2 and len(by_server) < 2:
        return None
    names = backend_names(rep.result)
    out = []
    raced = [srv for srv, counts in by_server.items() if counts.get("keepalive_race")]
    waiting = [
        srv
        for srv, to in rep.ctx.idle_timeout.items()
        if srv not in raced and to < nginx_keepalive_s
    ]
    for srv in raced + waiting:
        out.append(
            f"server {rep.ep(srv)}: "
            + recommend(
                "keepalive_race" if srv in raced else "keepalive_risk",
                idle_timeout_s=rep.ctx.idle_timeout.get(srv),
                backend=names.get(srv >> 16),
                nginx_keepalive_s=nginx_keepalive_s,
                nginx_from_conf=rep.nginx_from_conf,
                http=http,
            )
        )
    return out


def recommendations(
    rep: Report,
    by_cause: Counter[str],
    idle_timeout_s: float | None,
    advertised_s: float | None,
    backend: str | None,
    nginx_keepalive_s: float,
    by_server: dict[int, Counter[str]] | None = None,
) -> list[str]:
    """One recommendation per reset cause and finding, plus the keep-alive
    risk; with several upstream servers, the keep-alive lines per server."""

    http = http_seen(rep)

    # header statistics only where the advice depends on them
    stats = header_stats(rep.result) if backend is None else None
    quiet = stats is not None and stats.quiet

    seen_here = rep.evidence | header_evidence(backend)
    if stats is not None and stats.tomcat:
        seen_here.add("tomcat")  # status lines without a reason phrase, no Server header
    for c in rep.result.conns:
        if c.proto:  # FastCGI, uwsgi, or a WebSocket after 101 (track.dispatch)
            seen_here.add(PROTO_NAMES[c.proto])

    def rec(cause: str, idle_s: float | None, from_header: bool = False) -> str:
        return recommend(
            cause,
            evidence=seen_here,
            idle_timeout_s=idle_s,
            backend=backend,
            nginx_keepalive_s=nginx_keepalive_s,
            nginx_from_conf=rep.nginx_from_conf,
            idle_from_header=from_header,
            quiet=quiet,
            tls=rep.tls_upstream,
            http=http and (cause not in by_cause or cause in rep.resets.http_causes),
        )

    recs: list[str] = []
    seen: set[str] = set()
    per_server = _keepalive_per_server(rep, by_server or {}, nginx_keepalive_s, http)
    for cause, _n in by_cause.most_common():
        if cause != "unknown" and cause not in seen:
            seen.add(cause)
            if cause == "keepalive_race" and per_server:
                recs.extend(per_server)
                continue
            recs.append(rec(cause, idle_timeout_s))
    for f in rep.findings:
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
