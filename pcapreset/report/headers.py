"""headers: what the responses' headers say of the backends, over every connection.

The connections kept, the packed ones and the ones the rollup summarised all
vote: the backend's name (capture-wide, and per server host), the
``Keep-Alive: timeout=N`` most responses advertised, and whether a server's
answers carry any header read (:class:`HeaderStats`). The advice reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..engine.result import EngineResult
from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.vantage import Votes
from ..track.conn import Conn


@dataclass
class HeaderStats:
    """What the responses' headers say, per server (:func:`header_stats`)."""

    said: dict[int, bool] = field(default_factory=dict)  # answered; any header read
    evicted_named: bool = False  # evicted connections named a backend

    @property
    def quiet(self) -> bool:
        """Every answering server's responses carried no Server, Connection or
        Keep-Alive header."""
        return bool(self.said) and not any(self.said.values()) and not self.evicted_named


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
    """Per server: whether its answers carried any header read (every
    connection kept for the report, packed ones included)."""
    st = HeaderStats()
    for c, _j in result.each_conn():
        if any(x.status is not None for x in c.exchanges):
            st.said[c.server] = st.said.get(c.server, False) or bool(c.resp_headers)
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
