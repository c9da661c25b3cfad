"""headers: what the responses' headers say of the backends, over every connection.

The connections kept, the packed ones and the ones the rollup summarised all
vote: the backend's name (capture-wide, and per server host), the
``Keep-Alive: timeout=N`` most responses advertised, and whether a server's
answers carry any header read or status lines without a reason phrase
(Tomcat's signature; :class:`HeaderStats`). The advice reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.vantage import Votes
from ..track.conn import Conn
from ..track.http import NO_REASON
from .result import EngineResult


@dataclass
class HeaderStats:
    """What the responses' headers say, per server (:func:`header_stats`)."""

    said: dict[int, bool] = field(default_factory=dict)  # answered; any header read
    evicted_named: bool = False  # evicted connections named a backend
    #: answered; every connection's first status line without a reason phrase
    #: ("HTTP/1.1 200 " CRLF: track.http.NO_REASON)
    bare_status: dict[int, bool] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        """Every answering server's responses carried no Server, Connection or
        Keep-Alive header."""
        return bool(self.said) and not any(self.said.values()) and not self.evicted_named

    @property
    def tomcat(self) -> bool:
        """Every answering server's status lines carried no reason phrase, as Tomcat's
        (its Coyote connector) do, and no response named a server."""
        return bool(self.bare_status) and all(self.bare_status.values()) and self.quiet


def backend_name(result: EngineResult) -> str | None:
    """The backend the most connections' response headers name, if any."""
    rollup = result.rollup
    names = rollup.backends.copy() if rollup is not None else Votes()
    for c in result.conns:
        n = backend_from_headers(c.resp_headers)
        if n:
            names.add(n, (c.start, c.client, c.server, 0))
    best = names.best()
    return None if best is None else best[0]


def backend_names(result: EngineResult) -> dict[int, str]:
    """Server host (addr id) -> the backend name most of its connections'
    response headers give (the evicted connections' too)."""
    votes: dict[int, Votes] = {}
    rollup = result.rollup
    if rollup is not None:
        for (_ch, _sh, _chost, shost, name, _t), (n, first) in rollup.sigs.items():
            if name:
                votes.setdefault(shost, Votes()).add(name, (*first, 0), n)
        for c in _packed_conns(rollup):
            n = backend_from_headers(c.resp_headers)
            if n:
                votes.setdefault(c.server >> 16, Votes()).add(n, (c.start, c.client, c.server, 0))
    for c in result.conns:
        n = backend_from_headers(c.resp_headers)
        if n:
            votes.setdefault(c.server >> 16, Votes()).add(n, (c.start, c.client, c.server, 0))
    return {h: v.best()[0] for h, v in votes.items()}  # type: ignore[index]


def header_stats(result: EngineResult) -> HeaderStats:
    """Per server: whether its answers carried any header read, and whether
    their status lines had no reason phrase (every connection kept for the
    report, packed ones included)."""
    st = HeaderStats()
    for c, _j in result.each_conn():
        if any(x.status is not None for x in c.exchanges):
            h = c.resp_headers
            heard = len(h) > 1 or (bool(h) and NO_REASON not in h)
            st.said[c.server] = st.said.get(c.server, False) or heard
            st.bare_status[c.server] = st.bare_status.get(c.server, True) and NO_REASON in h
    rollup = result.rollup
    st.evicted_named = rollup is not None and rollup.backends.best() is not None
    return st


def most_advertised_timeout(result: EngineResult) -> float | None:
    """The Keep-Alive: timeout=N most responses advertised, if any."""
    rollup = result.rollup
    vals = rollup.timeouts.copy() if rollup is not None else Votes()
    for c in result.conns:
        t = advertised_timeout(c.resp_headers)
        if t is not None:
            vals.add(t, (c.start, c.client, c.server, 0))
    best = vals.best()
    return None if best is None else best[0]


def _packed_conns(rollup: object) -> Iterator[Conn]:
    """The packed connections of a rollup, unpacked one at a time."""
    packed = getattr(rollup, "packed", None)
    if not packed:
        return iter(())
    return (c for c, _j in packed.conns())
