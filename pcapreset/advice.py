"""advice: known backend idle timeouts and the recommendation per cause.

Defaults (checked against each project's documentation / source):

* Node.js ``http.Server``: ``server.keepAliveTimeout`` = 5000 ms.
* uvicorn: ``--timeout-keep-alive`` = 5 s.
* gunicorn: ``--keep-alive`` = 2 s (only async / gthread workers keep connections).
* nginx as a backend: ``keepalive_timeout`` = 75 s.
* nginx upstream keep-alive (``upstream { keepalive_timeout }``): 60 s.
"""

from __future__ import annotations

NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S = 60.0

#: (name, idle timeout seconds, the setting to raise)
KNOWN_BACKENDS = (
    ("Node.js", 5.0, "server.keepAliveTimeout"),
    ("uvicorn", 5.0, "--timeout-keep-alive"),
    ("gunicorn", 2.0, "--keep-alive"),
    ("nginx", 75.0, "keepalive_timeout"),
)


def backend_from_headers(headers: dict[str, str]) -> str | None:
    srv = headers.get("server", "").lower()
    if "uvicorn" in srv:
        return "uvicorn"
    if "gunicorn" in srv:
        return "gunicorn"
    if "nginx" in srv:
        return "nginx"
    ka = headers.get("keep-alive", "")
    if not srv and ka.startswith("timeout="):
        return "Node.js"  # Node sends Keep-Alive: timeout=N and no Server header
    return None


def guess_backend(timeout_s: float, named: str | None) -> tuple[str | None, str]:
    """(backend name or None, the setting to change)."""
    if named:
        for name, _t, setting in KNOWN_BACKENDS:
            if name == named:
                return name, setting
    matches = [b for b in KNOWN_BACKENDS if abs(b[1] - timeout_s) <= 0.25 * b[1]]
    if len(matches) == 1:
        return matches[0][0], matches[0][2]
    if matches:
        names = " or ".join(m[0] for m in matches)
        settings = " / ".join(m[2] for m in matches)
        return names, settings
    return None, "the backend's keep-alive idle timeout"


def recommend(
    cause: str,
    idle_timeout_s: float | None = None,
    backend: str | None = None,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
) -> str:
    nk = nginx_keepalive_s or NGINX_UPSTREAM_KEEPALIVE_TIMEOUT_S
    src = "nginx.conf" if nginx_from_conf else "nginx default"
    if cause == "keepalive_race":
        if idle_timeout_s is not None:
            name, setting = guess_backend(idle_timeout_s, backend)
            who = f" ({name} default)" if name and backend is None else f" ({name})" if name else ""
            return (
                f"backend closes idle connections after {idle_timeout_s:.1f} s{who}; nginx reuses "
                f"them for up to {nk:g} s ({src}): set {setting} above {nk:g} s (e.g. "
                f"{nk + 5:g} s), or set nginx's upstream keepalive_timeout below "
                f"{max(idle_timeout_s - 1, 0.5):g} s"
            )
        return (
            "backend closes idle keep-alive connections before nginx stops reusing them: raise "
            f"the backend's keep-alive timeout above nginx's upstream keepalive_timeout "
            f"({nk:g} s, {src}) or lower nginx's below the backend's; "
            "`proxy_next_upstream error timeout` retries idempotent requests"
        )
    return {
        "backlog_overflow": (
            "accept queue overflow: raise the listen backlog (`listen(backlog)` / "
            "`--backlog`) and net.core.somaxconn, accept faster (more workers), or cap "
            "nginx's concurrent upstream connects (upstream `max_conns`)"
        ),
        "backend_crash": (
            "the backend process died with requests in flight: check its logs / OOM killer / "
            "restarts; `proxy_next_upstream error` retries idempotent requests on another server"
        ),
        "abortive_close": (
            "the backend closes with RST (SO_LINGER 0 or unread request bytes): read the whole "
            "request before closing, drop SO_LINGER 0, and send `Connection: close` if it "
            "must close"
        ),
        "connection_refused": (
            "nothing listened on the backend port: check the backend is up; nginx "
            "`max_fails`/`fail_timeout` and a second upstream server absorb restarts"
        ),
        "client_abort": (
            "nginx reset upstream connections: downstream clients gave up or "
            "proxy_read_timeout fired; check `proxy_read_timeout`, "
            "`proxy_ignore_client_abort`, and slow backend responses"
        ),
        "middlebox": (
            "a device in the path forged RSTs: check firewalls / NAT / conntrack idle timeouts "
            "(net.netfilter.nf_conntrack_tcp_timeout_established) and load-balancer idle "
            "timeouts; keep them above nginx's upstream keepalive_timeout, or enable TCP "
            "keepalives"
        ),
        "mtu_blackhole": (
            "full-size segments are dropped on the path and ICMP 'fragmentation needed' does not "
            "come back: clamp the MSS (iptables TCPMSS --clamp-mss-to-pmtu), fix the MTU, or "
            "enable net.ipv4.tcp_mtu_probing=1"
        ),
        "upstream_timeout": (
            "nginx timed out waiting for the backend: raise proxy_read_timeout or make the "
            "backend answer faster"
        ),
        "premature_close": (
            "the backend closed the connection before answering: check backend errors and "
            "its request size / keep-alive limits"
        ),
        "zero_window": (
            "a receiver advertised a zero window: the reading side is too slow "
            "(nginx proxy_buffering, backend request reads)"
        ),
    }.get(cause, "")
