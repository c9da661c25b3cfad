"""backend_advice: advice in one backend's own terms (PHP-FPM, uWSGI, Tomcat, ...).

A table of rows: the advice of the first row whose cause matches and whose
needs are all shown by nginx.conf, error.log or the response headers
(:func:`header_evidence`) replaces the general advice of
:mod:`~pcapreset.interpret.advice`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendAdvice:
    """Advice in one backend's own terms, used when all of ``needs`` is in the
    evidence (nginx.conf, error.log, response headers) and the cause is one of
    ``causes``; first matching row wins."""

    backend: str
    needs: frozenset[str]
    causes: frozenset[str]
    text: str


def _row(backend: str, needs: str, causes: str, text: str) -> BackendAdvice:
    return BackendAdvice(backend, frozenset(needs.split()), frozenset(causes.split()), text)


BACKEND_ADVICE = (
    _row("PHP-FPM", "too_big_header fastcgi", "client_abort",
         "PHP-FPM's response header did not fit nginx's buffer (error.log: upstream sent too "
         "big header), so nginx reset the connection with the answer unread: raise "
         "`fastcgi_buffer_size 32k` (and `fastcgi_buffers 16 16k`), or send fewer or shorter "
         "headers (cookies)"),
    _row("uWSGI", "too_big_header uwsgi", "client_abort",
         "uWSGI's response header did not fit nginx's buffer (error.log: upstream sent too big "
         "header), so nginx reset the connection with the answer unread: raise "
         "`uwsgi_buffer_size 32k`, or send fewer or shorter headers"),
    _row("backend", "too_big_header", "client_abort",
         "the backend's response header did not fit nginx's buffer (error.log: upstream sent "
         "too big header), so nginx reset the connection with the answer unread: raise "
         "`proxy_buffer_size 32k` (and `proxy_buffers`), or send fewer or shorter headers"),
    _row("PHP-FPM", "fastcgi", "backend_crash premature_close abortive_close",
         "PHP-FPM ended requests in flight (fastcgi_pass): a worker killed by the pool's "
         "`request_terminate_timeout` (php-fpm log: 'execution timed out', 'terminated') or "
         "crashed; raise request_terminate_timeout above the slowest legitimate request, or "
         "make the script finish sooner (fastcgi_read_timeout no higher than it)"),
    _row("PHP-FPM", "fastcgi", "backlog_overflow upstream_timeout",
         "PHP-FPM had no free worker (fastcgi_pass): requests waited in its listen queue "
         "until nginx gave up; raise the pool's `pm.max_children` (php-fpm log: 'server "
         "reached pm.max_children setting') as memory allows, `listen.backlog` with "
         "net.core.somaxconn, or make requests faster"),
    _row("PHP-FPM", "fastcgi", "backend_restart",
         "PHP-FPM closed its connections together (a reload, or workers recycled by "
         "`pm.max_requests`): reload with `kill -USR2` and `process_control_timeout`, and let "
         "nginx retry idempotent requests (`fastcgi_next_upstream error timeout`)"),
    _row("uWSGI", "uwsgi", "backend_crash premature_close abortive_close",
         "uWSGI ended requests in flight (uwsgi_pass): a worker killed by `harakiri` (uWSGI "
         "log: 'HARAKIRI ON WORKER') or crashed; raise harakiri above the slowest legitimate "
         "request (and uwsgi_read_timeout with it), or make the request finish sooner"),
    _row("uWSGI", "uwsgi", "backend_restart",
         "uWSGI recycled workers with connections in use (`max-requests`, `reload-on-rss`): "
         "spread recycling with `max-requests-delta`, and let nginx retry idempotent "
         "requests (`uwsgi_next_upstream error timeout`)"),
    _row("uWSGI", "uwsgi", "backlog_overflow upstream_timeout",
         "uWSGI had no free worker (uwsgi_pass): raise `processes` / `threads`, `listen` "
         "(its backlog, default 100) with net.core.somaxconn, or make requests faster"),
    _row("WebSocket", "websocket", "upstream_timeout",
         "an upgraded WebSocket connection lay silent past nginx's proxy_read_timeout (default "
         "60s), which applies between two reads on the upgraded connection too: raise "
         "`proxy_read_timeout` in the WebSocket location (e.g. 3600s), or have the backend "
         "send pings more often than it"),
    _row("Node.js", "node", "backlog_overflow",
         "Node.js reset connections right after the handshake: a `server.maxConnections` "
         "limit destroys every connection above it as it is accepted (else the listen "
         "backlog overflowed); raise or unset server.maxConnections, run more processes, "
         "raise the backlog (`server.listen({backlog})`) with net.core.somaxconn, or cap "
         "nginx with upstream `server ... max_conns=N` below the limit"),
    _row("Tomcat", "tomcat", "keepalive_race keepalive_risk",
         "Tomcat closes idle keep-alive connections after its Connector's `keepAliveTimeout` "
         "(default: connectionTimeout, 20000 ms in the shipped server.xml) while nginx still "
         "reuses them: set keepAliveTimeout=\"65000\" on the Connector, or set nginx's "
         "upstream `keepalive_timeout` below Tomcat's"),
    _row("nginx", "http10", "backend_crash premature_close keepalive_race backend_restart",
         "nginx speaks HTTP/1.0 to this upstream (no `proxy_http_version 1.1`), so every "
         "request has its own connection and none of these resets is a keep-alive race; "
         "to use the upstream `keepalive` pool set `proxy_http_version 1.1;` and "
         "`proxy_set_header Connection \"\";`, and look in the backend's logs for why it "
         "closed"),
)  # fmt: skip

#: lower-case Server header substrings -> evidence for BACKEND_ADVICE
_HEADER_EVIDENCE = (("tomcat", "tomcat"), ("coyote", "tomcat"), ("node.js", "node"))


def header_evidence(backend: str | None) -> set[str]:
    """What the backend's Server header shows for :data:`BACKEND_ADVICE`."""
    low = (backend or "").lower()
    return {ev for key, ev in _HEADER_EVIDENCE if key in low}


def backend_advice(cause: str, evidence: set[str] | frozenset[str]) -> str | None:
    """The first :data:`BACKEND_ADVICE` row for this cause whose needs are all shown."""
    for row in BACKEND_ADVICE:
        if cause in row.causes and row.needs <= evidence:
            return row.text
    return None
