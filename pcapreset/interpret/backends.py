"""backends: the backends whose idle-timeout defaults are known, and naming a
backend from its response headers.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
