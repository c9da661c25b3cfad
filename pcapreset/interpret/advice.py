"""advice: known backend idle timeouts and the recommendation per cause.

Defaults, checked in each project's source (versions installed in the lab):

* Node.js ``http.Server``: ``server.keepAliveTimeout`` = 5000 ms, advertised as
  ``Keep-Alive: timeout=5``; since Node 20 the socket is really closed after
  ``keepAliveTimeout + 1000`` ms (lib/_http_server.js,
  ``HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER = 1000``; checked in Node 20.20), so
  idle connections die after ~6 s. No ``Server`` header by default.
* uvicorn: ``--timeout-keep-alive`` = 5 s (uvicorn/config.py
  ``timeout_keep_alive: int = 5``, uvicorn 0.54); sends ``server: uvicorn``.
* gunicorn: ``--keep-alive`` = 2 s (gunicorn/config.py ``Keepalive.default = 2``,
  gunicorn 27.0); only the gthread / gevent / eventlet workers keep connections
  (the ``sync`` worker ignores it and closes after every response); gthread
  closes expired connections from a loop that wakes about once a second, so
  idle closes land 2-3 s after the response. Sends ``Server: gunicorn``.
* nginx as a backend: ``keepalive_timeout`` = 75 s.
* Apache httpd 2.4: ``KeepAliveTimeout`` = 5 s (docs: core directives); it closes
  an idle connection with a lingering close (FIN, then reads and discards), so a
  request crossing that FIN is ACKed and never answered, with no RST. Sends
  ``Server: Apache/2.4.x``.
* Go net/http ``http.Server``: ``IdleTimeout`` zero means ``ReadTimeout``, and
  both zero means no idle close at all (net/http/server.go ``idleTimeout``), so
  a Go backend that closes idle connections was configured to; it writes no
  ``Server``, ``Connection`` or ``Keep-Alive`` header unless the handler does.
* nginx upstream keep-alive (``upstream { keepalive_timeout }``): 60 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S = 60.0
#: an observed idle close matches a known default within this fraction
MATCH = 0.25


@dataclass(frozen=True)
class Backend:
    name: str
    #: idle closes observed on the wire with the default setting (seconds);
    #: empty: no idle close by default (only a configured one)
    idle_close_s: tuple[float, ...]
    default_text: str  # the default, as its docs state it
    setting: str
    #: how to write "N seconds" for this setting: "s" (``setting N``), "ms"
    #: (``setting = N000``) or "go" (``setting: N * time.Second``)
    unit: str = "s"
    #: lower-case substrings of the Server header that name it
    server_header: tuple[str, ...] = ()
    #: it sends none of Server, Connection, Keep-Alive by default: a candidate
    #: when a backend's responses carry none of them
    quiet: bool = False

    def value(self, seconds: float) -> str:
        if self.unit == "ms":
            return f"{self.setting} = {int(seconds * 1000)}"
        if self.unit == "go":
            return f"{self.setting}: {int(seconds)} * time.Second"
        return f"{self.setting} {int(seconds)}"


KNOWN_BACKENDS = (
    Backend("Node.js", (5.0, 6.0), "keepAliveTimeout 5000 ms (+1 s buffer in Node >= 20)",
            "server.keepAliveTimeout", unit="ms"),
    Backend("uvicorn", (5.0,), "--timeout-keep-alive 5 s", "--timeout-keep-alive",
            server_header=("uvicorn",)),
    Backend("gunicorn", (2.0, 3.0), "--keep-alive 2 s (gthread/gevent/eventlet workers)",
            "--keep-alive", server_header=("gunicorn",)),
    Backend("nginx", (75.0,), "keepalive_timeout 75 s", "keepalive_timeout",
            server_header=("nginx",)),
    Backend("Apache httpd", (5.0,), "KeepAliveTimeout 5 s", "KeepAliveTimeout",
            server_header=("apache",)),
    Backend("Go net/http", (), "no idle close unless IdleTimeout or ReadTimeout is set",
            "http.Server.IdleTimeout", unit="go", quiet=True),
)  # fmt: skip
_BY_NAME = {b.name: b for b in KNOWN_BACKENDS}


#: longest Server header value kept as the backend's name
SERVER_NAME_MAX = 60


def backend_from_headers(headers: dict[str, str]) -> str | None:
    """Name the backend from a response's Server / Keep-Alive headers: the
    Server header as sent (``Apache/2.4.62``, ``Microsoft-IIS/10.0``), else
    Node.js's header pattern, else None."""
    srv = headers.get("server", "").strip()
    if srv:
        return srv[:SERVER_NAME_MAX]
    ka = headers.get("keep-alive", "").lower().replace(" ", "")
    if not srv and ka.startswith("timeout=") and headers.get("connection") == "keep-alive":
        # Node's http.Server: no Server header, `Keep-Alive: timeout=N` and the
        # literal lower-case `Connection: keep-alive` (Apache-style servers
        # write `Keep-Alive`); anything else stays unnamed
        return "Node.js"
    return None


def advertised_timeout(headers: dict[str, str]) -> float | None:
    """The ``Keep-Alive: timeout=N`` a backend advertised, if any."""
    for part in headers.get("keep-alive", "").replace(" ", "").split(","):
        if part.lower().startswith("timeout="):
            try:
                t = float(part.split("=", 1)[1])
            except ValueError:
                return None
            # ("nan", "inf", "-5": not a timeout a server can mean)
            return t if math.isfinite(t) and t >= 0 else None
    return None


def known_backend(named: str | None) -> Backend | None:
    """The known backend a Server header names (``uvicorn``, ``gunicorn/23.0``,
    ``nginx/1.27``, ``Apache/2.4.62``, Node.js), if any: by name, or by the
    Server header substrings each backend's row lists."""
    if not named:
        return None
    if named in _BY_NAME:
        return _BY_NAME[named]
    low = named.lower()
    for b in KNOWN_BACKENDS:
        if low.startswith(b.name.lower()) or any(key in low for key in b.server_header):
            return b
    return None


def guess_backend(timeout_s: float, named: str | None, quiet: bool = False) -> list[Backend]:
    """Backends that fit: the one the headers name; none when the headers name
    another server (its defaults are not known here); with ``quiet`` (the
    responses carried no Server, Connection or Keep-Alive header) only those that
    send none by default; else those whose default fits the timing."""
    known = known_backend(named)
    if known is not None:
        return [known]
    if named:
        return []
    if quiet:  # every other known backend names itself in its headers
        return [b for b in KNOWN_BACKENDS if b.quiet]
    return [
        b for b in KNOWN_BACKENDS if any(abs(t - timeout_s) <= MATCH * t for t in b.idle_close_s)
    ]


def _fmt_s(x: float) -> str:
    return f"{x:.1f} s" if x < 10 else f"{x:.0f} s"


def keepalive_advice(
    idle_timeout_s: float | None,
    backend: str | None,
    nginx_keepalive_s: float,
    src: str,
    observed: bool,
    from_header: bool = False,
    quiet: bool = False,
    tls: bool = False,
) -> str:
    """The keep-alive race fix: backend idle timeout above nginx's, or nginx's below it.
    ``quiet``: the backend's responses carried no Server / Connection / Keep-Alive
    header; ``tls``: nginx talks TLS to it (proxy_pass https://)."""
    nk = nginx_keepalive_s
    above = nk + 5
    if idle_timeout_s is None:
        return (
            "the backend closes idle keep-alive connections before nginx stops reusing them: "
            f"raise the backend's keep-alive idle timeout above nginx's upstream "
            f"keepalive_timeout ({nk:g} s, {src}), e.g. to {above:g} s, or lower nginx's below "
            "the backend's; `proxy_next_upstream error timeout` only retries idempotent requests"
        )
    fits = guess_backend(idle_timeout_s, backend, quiet)
    below = max(1, math.floor(idle_timeout_s * 0.8))
    if backend is not None and len(fits) == 1:
        b = fits[0]
        who = f" ({backend}, named by its response headers; default {b.default_text})"
        fix = f"set {b.value(above)}"
    elif backend is not None:
        who = f" ({backend}, named by its response headers)"
        fix = f"raise {backend}'s keep-alive idle timeout to {above:g} s"
    elif fits:
        if quiet:
            names = " or ".join(f"{b.name} ({b.default_text})" for b in fits)
            who = f" (no Server, Connection or Keep-Alive header, as {names} answers)"
        else:
            names = " or ".join(f"{b.name}'s default ({b.default_text})" for b in fits)
            who = f" (the timing fits {names}; the headers do not name the backend)"
        fix = (
            f"raise the backend's keep-alive idle timeout to {above:g} s ("
            + "; ".join(f"{b.name}: {b.value(above)}" for b in fits)
            + ")"
        )
    else:
        who = ""
        fix = f"raise the backend's keep-alive idle timeout to {above:g} s"
    lead = "" if observed else "no race seen yet, but "
    closes = (
        f"backend advertises Keep-Alive: timeout={idle_timeout_s:g}"
        if from_header
        else f"backend closes idle connections after ~{_fmt_s(idle_timeout_s)}"
    )
    return (
        f"{lead}{closes}{who}; nginx "
        f"reuses them for up to {nk:g} s ({src}): {fix}, or set nginx's upstream "
        f"`keepalive_timeout {below}s` (below the backend's)" + (TLS_NOTE if tls else "")
    )


#: added to the keep-alive advice when nginx talks TLS to the backend
TLS_NOTE = (
    "; over TLS (proxy_pass https://) the same idle timeout applies to the TLS "
    "connection, and the RSTs that answer a close_notify after a close are harmless"
)


_FIXED = {
    "backlog_overflow": (
        "accept queue overflow: raise the listen backlog (e.g. `--backlog 2048` / "
        "`listen(fd, 2048)`) together with net.core.somaxconn=4096, accept faster (more "
        "workers), or cap nginx's connects with upstream `server ... max_conns=N`"
    ),
    "backend_crash": (
        "the backend process died with requests in flight: check its logs, the OOM killer "
        "(dmesg) and restarts; `proxy_next_upstream error timeout` retries idempotent requests "
        "on another upstream server"
    ),
    "abortive_close": (
        "the backend closes with RST (SO_LINGER 0, or unread request bytes at close): read the "
        "whole request body before closing, drop SO_LINGER 0, and send `Connection: close` "
        "when it means to close"
    ),
    "connection_refused": (
        "nothing listened on the backend port: check the backend is up; upstream "
        "`server ... max_fails=3 fail_timeout=10s` plus a second server (or `backup`) absorbs "
        "restarts"
    ),
    "client_abort": (
        "nginx reset upstream connections it had given up on (downstream client left, or "
        "proxy_read_timeout fired first): compare proxy_read_timeout (default 60s) with the "
        "backend's response times; `proxy_ignore_client_abort on` lets requests finish"
    ),
    "middlebox": (
        "a device in the path forged RSTs: check firewall / NAT / conntrack idle timeouts "
        "(net.netfilter.nf_conntrack_tcp_timeout_established, default 432000 s) and NAT / "
        "load-balancer idle timeouts, and keep them above nginx's upstream keepalive_timeout "
        "(60 s), or lower nginx's below them"
    ),
    "mtu_blackhole": (
        "full-size segments are dropped on the path and ICMP 'fragmentation needed' does not "
        "come back: clamp the MSS (`iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST "
        "SYN -j TCPMSS --clamp-mss-to-pmtu`), fix the MTU, allow ICMP type 3 code 4, or set "
        "net.ipv4.tcp_mtu_probing=1"
    ),
    "upstream_timeout": (
        "nginx timed out waiting for the backend: raise proxy_read_timeout (default 60s) above "
        "the slowest legitimate response, or make the backend answer faster"
    ),
    "backend_restart": (
        "the backend closed its connections all at once (a restart, deploy or worker "
        "recycling) while nginx still used them: drain before exit (stop accepting, finish "
        "in-flight requests, answer the last request on each keep-alive connection with "
        "`Connection: close`; gunicorn --graceful-timeout, uvicorn --timeout-graceful-shutdown, "
        "Go http.Server.Shutdown, Apache `apachectl -k graceful-stop`), recycle workers with "
        "jitter (gunicorn --max-requests-jitter), and let nginx retry idempotent requests on "
        "another server: `proxy_next_upstream error timeout http_502` (non-idempotent ones only "
        "with `non_idempotent`)"
    ),
    "premature_close": (
        "the backend closed the connection after receiving a request and before answering it "
        "(crash, request-size or max-requests limits): check the backend's logs for that time"
    ),
    "zero_window": (
        "a receiver advertised a zero window: the reading side is too slow (nginx "
        "proxy_buffering / proxy_buffers, or a backend that does not read request bodies)"
    ),
}


_FIXED["backend_restart"] = (
    "the backend closed its connections together as it shut down or recycled a worker, and "
    "nginx's requests met them: drain before exiting (stop accepting, finish in-flight "
    "requests, then close idle keep-alive connections), spread worker recycling "
    "(gunicorn `--max-requests-jitter`), and let nginx retry idempotent requests "
    "(`proxy_next_upstream error timeout`, a second upstream server)"
)
_GENERIC_RESTART = (
    "the server closed its connections together as it shut down or restarted, and the "
    "clients' messages met them: drain before exiting and retry on the client side"
)
_FIXED["after_close"] = (
    "harmless, nothing to change: a segment (a TLS close_notify or alert, a late ACK or FIN, "
    "the rest of an answered message) reached a socket its host had already closed, and the "
    "kernel answered with RST; nothing was lost"
)
_FIXED["probe"] = (
    "harmless, nothing to change: health checks or scans opened connections without a request "
    "and closed them with RST; if they are unwanted, find their source address"
)

#: the advice for connections that do not carry HTTP: no nginx, no backend settings
_GENERIC = {
    "backlog_overflow": (
        "accept queue overflow on the server: raise its listen backlog together with "
        "net.core.somaxconn, or make it accept faster"
    ),
    "backend_crash": (
        "the server reset connections with requests in flight: check its logs, the OOM killer "
        "(dmesg) and restarts at that time"
    ),
    "abortive_close": (
        "connections were closed with RST instead of FIN after complete exchanges (SO_LINGER "
        "0, or an end closing with unread data, as browsers and Windows services do): nothing "
        "in flight was lost; change it only if an end logs errors for it"
    ),
    "connection_refused": (
        "nothing listened on the port (the service was down or restarting, or a firewall "
        "rejects with RST): check the service is up on that port"
    ),
    "client_abort": (
        "the connecting side reset connections with data still in flight (it gave up, timed "
        "out or exited): check its timeouts and logs"
    ),
    "middlebox": (
        "a device in the path forged RSTs: check firewall, NAT and conntrack idle timeouts "
        "(net.netfilter.nf_conntrack_tcp_timeout_established) and IPS policies on the path"
    ),
    "premature_close": (
        "the server closed connections after receiving a request and before answering it: "
        "check its logs for that time"
    ),
    "backend_restart": _GENERIC_RESTART,
    "keepalive_race": (
        "the server closed idle connections as the client reused them: keep the client's "
        "idle timeout for pooled connections below the server's (for nginx with TLS "
        "upstreams: upstream keepalive_timeout below the backend's idle timeout)"
    ),
    "upstream_timeout": (
        "the client gave up waiting for the server's answer: compare its timeout with the "
        "server's response times"
    ),
}


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


def recommend(
    cause: str,
    idle_timeout_s: float | None = None,
    backend: str | None = None,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
    idle_from_header: bool = False,
    quiet: bool = False,
    tls: bool = False,
    http: bool = True,
    evidence: set[str] | frozenset[str] = frozenset(),
) -> str:
    """One recommendation naming the setting to change, for a cause or finding
    code. ``evidence``: what nginx.conf, error.log and the headers show
    (:data:`BACKEND_ADVICE` rows). ``http=False``: the traffic is not HTTP, so the
    advice speaks of the client and the server, not of nginx and backends."""
    own = backend_advice(cause, evidence) if evidence else None
    if own is not None:
        return own
    if not http and cause in _GENERIC:
        return _GENERIC[cause]
    nk = nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
    src = "nginx.conf" if nginx_from_conf else "nginx default"
    if cause == "keepalive_race":
        return keepalive_advice(idle_timeout_s, backend, nk, src, True, quiet=quiet, tls=tls)
    if cause == "keepalive_risk":
        return keepalive_advice(
            idle_timeout_s, backend, nk, src, False, idle_from_header, quiet=quiet, tls=tls
        )
    return _FIXED.get(cause, "")
