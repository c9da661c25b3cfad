"""vantage: where the capture was taken, from the TTLs each side's packets arrive with.

A packet that left a local stack carries its initial TTL (0 hops); one that
crossed routers carries less. Connections vote (:class:`Votes`, ties broken
by report order) for the hop counts of their sides and of each host.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from ..track.conn import Conn, Dir

#: initial TTL / hop-limit families of common stacks (Linux/macOS 64, Windows 128,
#: network gear 255; 32 for a few embedded stacks)
TTL_FAMILIES = (32, 64, 128, 255)


def initial_ttl(ttl: int) -> int:
    """The initial TTL family a received TTL most likely started from."""
    for f in TTL_FAMILIES:
        if ttl <= f:
            return f
    return 255


def hops(ttl: int) -> int:
    return initial_ttl(ttl) - ttl


@dataclass
class Vantage:
    """Where the capture was taken, from the TTLs of each side's packets."""

    where: str
    client_hops: int | None
    server_hops: int | None
    basis: str

    def as_dict(self) -> dict:
        return {
            "where": self.where,
            "client_hops": self.client_hops,
            "server_hops": self.server_hops,
            "basis": self.basis,
        }


def side_ttl(d: Dir, conn: Conn | None = None, from_client: bool = True) -> int | None:
    """The usual TTL of one side's packets; falls back to its RSTs' TTL."""
    if d.ttls:
        return max(d.ttls, key=d.ttls.__getitem__)
    if conn is not None:
        for ev in conn.rst_events:
            for p in ev.packets:
                if p.from_client == from_client:
                    return p.ttl
    return None


def _where(ch: int | None, sh: int | None) -> str:
    if ch == 0 and sh == 0:
        return "same host or same link"
    if ch == 0:
        return "client host (nginx side)"
    if sh == 0:
        return "server host (backend side)"
    if ch is not None and sh is not None:
        return "in the path (neither end)"
    if ch is not None:
        return f"not the client host (client packets {ch} hop(s) away; server never answered)"
    if sh is not None:
        return f"not the server host (server packets {sh} hop(s) away)"
    return "unknown"


# ------------------------------------------------------------------ votes
#: where a connection stands in the report: the order engine.order_conns numbers
#: connections in, plus 0 for a vote about its client side, 1 for its server side
VoteKey = tuple[float, int, int, int]


def conn_order(c: Conn) -> tuple[float, int, int]:
    """The key :func:`pcapreset.engine.order_conns` sorts connections by."""
    return (c.start, c.client, c.server)


class Votes:
    """Counts per value, each with the key of its first voter in report order.

    :meth:`best` is ``Counter.most_common(1)`` over the connections in report
    order (the most votes; on a tie, the value voted for first), whatever order
    the votes came in: connections summarised early (:mod:`pcapreset.rollup`)
    and the ones kept give the same answer as counting them all in order.
    """

    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v: dict[Hashable, list] = {}  # value -> [count, first VoteKey]

    def add(self, value: Hashable, key: VoteKey, n: int = 1) -> None:
        e = self.v.get(value)
        if e is None:
            self.v[value] = [n, key]
        else:
            e[0] += n
            if key < e[1]:
                e[1] = key

    def merge(self, other: Votes) -> None:
        for value, (n, key) in other.v.items():
            self.add(value, key, n)

    def copy(self) -> Votes:
        out = Votes()
        out.v = {k: list(e) for k, e in self.v.items()}
        return out

    def total(self) -> int:
        return sum(e[0] for e in self.v.values())

    def best(self) -> tuple | None:
        """(value, count) with the most votes, the first-voted on a tie; None if empty."""
        if not self.v:
            return None
        value, (n, _key) = min(self.v.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        return value, n

    def __bool__(self) -> bool:
        return bool(self.v)


def vantage_votes(c: Conn, pairs: Votes, conly: Votes, sonly: Votes) -> None:
    """One connection's vote for :func:`infer_vantage`."""
    ct = side_ttl(c.c, c, True)
    st = side_ttl(c.s, c, False)
    if ct is None and st is None:
        return
    key = (c.start, c.client, c.server, 0)
    if ct is not None and st is not None:
        pairs.add((hops(ct), hops(st)), key)
    elif ct is not None:
        conly.add(hops(ct), key)
    elif st is not None:
        sonly.add(hops(st), key)


def host_hop_votes(c: Conn, votes: dict[int, Votes]) -> None:
    """One connection's votes for :func:`_host_hops` (its client's and its server's)."""
    for side, host, d in ((0, c.client, c.c), (1, c.server, c.s)):
        if d.ttls:
            v = votes.get(host >> 16)
            if v is None:
                v = votes[host >> 16] = Votes()
            v.add(hops(max(d.ttls, key=d.ttls.__getitem__)), (c.start, c.client, c.server, side))


class VantageVotes(Protocol):
    """The votes of connections no longer held one by one (the engine's rollup)."""

    @property
    def pairs(self) -> Votes: ...
    @property
    def conly(self) -> Votes: ...
    @property
    def sonly(self) -> Votes: ...


def infer_vantage(conns: list[Conn], rollup: VantageVotes | None = None) -> Vantage:
    """Majority over connections of (hops from client, hops from server).

    A packet that left a local stack carries its initial TTL (0 hops); one that
    crossed routers carries less. Connections where only one side sent anything
    (SYNs nobody answered) vote for that side only. ``rollup``: the votes of
    connections already summarised.
    """
    if rollup is not None:
        pairs, conly, sonly = rollup.pairs.copy(), rollup.conly.copy(), rollup.sonly.copy()
    else:
        pairs, conly, sonly = Votes(), Votes(), Votes()
    for c in conns:
        vantage_votes(c, pairs, conly, sonly)
    if pairs:
        (ch, sh), n = pairs.best()  # type: ignore[misc]
        total = pairs.total()
        basis = (
            f"client packets arrive {ch} hop(s) below their initial TTL, server packets {sh} "
            f"(in {n} of {total} connections)"
        )
        return Vantage(_where(ch, sh), ch, sh, basis)
    if conly:
        ch, n = conly.best()  # type: ignore[misc]
        basis = f"only client packets seen; they arrive {ch} hop(s) below their initial TTL"
        return Vantage(_where(ch, None), ch, None, basis)
    if sonly:
        sh, n = sonly.best()  # type: ignore[misc]
        basis = f"only server packets seen; they arrive {sh} hop(s) below their initial TTL"
        return Vantage(_where(None, sh), None, sh, basis)
    return Vantage("unknown", None, None, "no packets with a TTL")
