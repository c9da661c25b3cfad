"""advice: the recommendation per cause, naming the setting to change.

The keep-alive advice names the backend (:mod:`~pcapreset.interpret.backends`)
and its setting; a row of :mod:`~pcapreset.interpret.backend_advice` replaces
the advice when nginx.conf, error.log or the headers show which backend it is;
traffic that is not HTTP gets advice in terms of client and server.
The nginx default it compares with: upstream ``keepalive_timeout`` 60 s.
"""

from __future__ import annotations

import math

from .backend_advice import backend_advice
from .backends import guess_backend

NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S = 60.0


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


#: the advice per cause (and finding code) for HTTP through nginx
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
        "the backend closed its connections together as it shut down or recycled a worker, and "
        "nginx's requests met them: drain before exiting (stop accepting, finish in-flight "
        "requests, then close idle keep-alive connections), spread worker recycling "
        "(gunicorn `--max-requests-jitter`), and let nginx retry idempotent requests "
        "(`proxy_next_upstream error timeout`, a second upstream server)"
    ),
    "premature_close": (
        "the backend closed the connection after receiving a request and before answering it "
        "(crash, request-size or max-requests limits): check the backend's logs for that time"
    ),
    "zero_window": (
        "a receiver advertised a zero window: the reading side is too slow (nginx "
        "proxy_buffering / proxy_buffers, or a backend that does not read request bodies)"
    ),
    "after_close": (
        "harmless, nothing to change: a segment (a TLS close_notify or alert, a late ACK or "
        "FIN, the rest of an answered message) reached a socket its host had already closed, "
        "and the kernel answered with RST; nothing was lost"
    ),
    "probe": (
        "harmless, nothing to change: health checks or scans opened connections without a "
        "request and closed them with RST; if they are unwanted, find their source address"
    ),
}


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
    "backend_restart": (
        "the server closed its connections together as it shut down or restarted, and the "
        "clients' messages met them: drain before exiting and retry on the client side"
    ),
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
    (the rows of :data:`~pcapreset.interpret.backend_advice.BACKEND_ADVICE`).
    ``http=False``: the traffic is not HTTP, so the advice speaks of the client
    and the server, not of nginx and backends."""
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
