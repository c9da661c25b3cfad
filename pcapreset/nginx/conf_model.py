"""The model of an nginx.conf as pcapreset reads it: settings, upstream blocks, defaults.

Defaults (checked in nginx's source, src/http/modules/
ngx_http_upstream_keepalive_module.c: ``timeout`` 60000 ms, ``time`` 3600000 ms,
``requests`` 1000; ngx_http_proxy_module.c: connect/read/send timeouts 60000 ms;
``proxy_next_upstream`` defaults to ``error timeout``). Time values follow
ngx_parse_time (src/core/ngx_parse.c): units ms s m h d w M y, combinable
("1m 30s"), a bare number is seconds. Addresses are normalized as pcapreset
writes endpoints.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

UPSTREAM_KEEPALIVE_TIMEOUT_DEFAULT_S = 60.0
UPSTREAM_KEEPALIVE_TIME_DEFAULT_S = 3600.0
UPSTREAM_KEEPALIVE_REQUESTS_DEFAULT = 1000
PROXY_TIMEOUT_DEFAULT_S = 60.0
PROXY_NEXT_UPSTREAM_DEFAULT = ("error", "timeout")

PROXY_DIRECTIVES = (
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "proxy_http_version",
    "proxy_pass",
)
PASS_DIRECTIVES = ("proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass")
_TIME_DIRECTIVES = {
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "proxy_next_upstream_timeout",
    "keepalive_timeout",
    "keepalive_time",
}
_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "M": 30 * 86400.0,
    "y": 365 * 86400.0,
}
_TIME_PART = re.compile(r"(\d+)(ms|[smhdwMy])?\s*")


def parse_time_s(text: str) -> float | None:
    """nginx time value ("60s", "500ms", "1m 30s", "75") -> seconds, None if invalid."""
    text = text.strip()
    if not text:
        return None
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _TIME_PART.match(text, pos)
        if not m:
            return None
        unit = m.group(2)
        if unit is None and m.end() != len(text):
            return None  # a bare number is only allowed last
        total += int(m.group(1)) * _UNIT_S[unit or "s"]
        pos = m.end()
    return total


def normalize_addr(addr: str) -> str:
    """An upstream ``server`` address as pcapreset writes endpoints ("ip:port").

    "10.0.0.2:3000" stays; "[FD77::0002]:3000" -> "[fd77::2]:3000"; a bare IP
    gets port 80 (nginx's default); host names and unix: sockets are kept as
    written.
    """
    addr = addr.strip()
    if addr.startswith("unix:"):
        return addr
    host, port = addr, "80"
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass
class Setting:
    """One directive found in the file: where, in which block, with which value."""

    directive: str
    args: list[str]
    context: str  # e.g. "http > server > location /api"
    source: str  # "file:line"

    @property
    def value_s(self) -> float | None:
        if self.directive in _TIME_DIRECTIVES and self.args:
            return parse_time_s(" ".join(self.args))
        return None

    def as_dict(self) -> dict:
        out: dict = {
            "directive": self.directive,
            "value": " ".join(self.args),
            "context": self.context,
            "source": self.source,
        }
        if self.value_s is not None:
            out["value_s"] = self.value_s
        return out


@dataclass
class Upstream:
    name: str
    source: str
    servers: list[str] = field(default_factory=list)  # normalized addresses
    keepalive: int | None = None  # connection cache size; None: no reuse at all
    keepalive_timeout: Setting | None = None
    keepalive_time: Setting | None = None
    keepalive_requests: int | None = None

    @property
    def keepalive_timeout_s(self) -> float:
        v = self.keepalive_timeout.value_s if self.keepalive_timeout else None
        return UPSTREAM_KEEPALIVE_TIMEOUT_DEFAULT_S if v is None else v

    @property
    def keepalive_timeout_source(self) -> str:
        if self.keepalive_timeout and self.keepalive_timeout.value_s is not None:
            return self.keepalive_timeout.source
        return "nginx default"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "servers": self.servers,
            "keepalive": self.keepalive,
            "keepalive_timeout_s": self.keepalive_timeout_s if self.keepalive else None,
            "keepalive_timeout_source": self.keepalive_timeout_source,
            "keepalive_requests": self.keepalive_requests,
        }


@dataclass
class NginxConf:
    path: str
    files: list[str] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    proxy: list[Setting] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the upstream protocols nginx speaks here: fastcgi_pass, uwsgi_pass, ...
    passes: set[str] = field(default_factory=set)

    def upstream_for(self, servers: Iterable[str]) -> Upstream | None:
        """The upstream block whose servers were seen in the capture, else the only one."""
        seen = {normalize_addr(s) for s in servers}
        hits = [u for u in self.upstreams if seen & set(u.servers)]
        if hits:
            return max(hits, key=lambda u: len(seen & set(u.servers)))
        return self.upstreams[0] if len(self.upstreams) == 1 else None

    def keepalive_timeout_s(self, servers: Iterable[str] = ()) -> tuple[float, str] | None:
        """(seconds, source) of the upstream keepalive_timeout that applies, or None.

        None when no upstream block applies or it has no ``keepalive`` directive
        (nginx then closes every upstream connection after its request).
        """
        u = self.upstream_for(servers)
        if u is None:
            cached = [u for u in self.upstreams if u.keepalive]
            if len({c.keepalive_timeout_s for c in cached}) != 1:
                return None
            u = cached[0]
        if not u.keepalive:
            return None
        return u.keepalive_timeout_s, u.keepalive_timeout_source

    def evidence(self) -> set[str]:
        """What the configuration shows for the advice table
        (:data:`pcapreset.interpret.backend_advice.BACKEND_ADVICE`): ``fastcgi`` / ``uwsgi``
        (the pass directive), ``http10`` (proxy_pass with an upstream ``keepalive`` but
        no ``proxy_http_version 1.1``: nginx speaks HTTP/1.0 and never reuses)."""
        out = {p.removesuffix("_pass") for p in self.passes if p != "proxy_pass"}
        v11 = any(st.args[:1] == ["1.1"] for st in self.get("proxy_http_version"))
        if "proxy_pass" in self.passes and any(u.keepalive for u in self.upstreams) and not v11:
            out.add("http10")
        return out

    def get(self, directive: str) -> list[Setting]:
        return [s for s in self.proxy if s.directive == directive]

    def as_dict(self, servers: Iterable[str] = ()) -> dict:
        ka = self.keepalive_timeout_s(servers)
        return {
            "path": self.path,
            "files": self.files,
            "upstreams": [u.as_dict() for u in self.upstreams],
            "upstream_keepalive_timeout_s": ka[0] if ka else None,
            "upstream_keepalive_timeout_source": ka[1] if ka else None,
            "proxy": [s.as_dict() for s in self.proxy],
            "warnings": self.warnings,
        }
