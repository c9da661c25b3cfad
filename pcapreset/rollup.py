"""rollup: what the report needs from connections that were dropped early.

A long capture holds hundreds of thousands of connections, most of them
ordinary: a handshake, some requests, a FIN close, no reset, no finding. The
report needs only a few numbers from each of those (the per-capture context of
:func:`pcapreset.evidence.build_context`, the flow count, the backend's name),
so the engine can fold such a connection into a :class:`Rollup` once it is
closed and over, and drop the connection itself (see ``engine.Evictor``).

A folded ("evicted") connection must not need anything that is only known at
the end of the capture: it has no RST event, no finding, and its own round-trip
time (so nothing about it depends on the capture-wide median). Everything kept
here is exactly what the report would have computed from the connection, and
the votes remember which connection voted first in report order, so the
report built from the kept connections plus a Rollup is the report built from
all of them.
"""

from __future__ import annotations

from array import array

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from . import _nocython as cython  # type: ignore[no-redef]

from .advice import advertised_timeout, backend_from_headers
from .evidence import MIN_IDLE_CLOSE_S, Votes, hops, idle_close_gap
from .findings import conn_findings, no_finding
from .flows import Conn, FlowTracker

_finish_conn = FlowTracker.finish_conn

#: True when this module runs compiled (setup.py: split and Rollup.add are typed)
COMPILED: bool = cython.compiled

#: hops() of every TTL / hop limit
_HOPS = tuple(hops(t) for t in range(256))


class Rollup:
    """An incremental summary of evicted connections (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0
        #: (start, client, server) of every evicted connection: the report's ids
        #: (ranks in that order) of the kept ones count them in
        self.starts = array("d")
        self.clients = array("q")
        self.servers = array("q")
        #: what a connection votes for (see :meth:`_sig`) -> [connections, the
        #: first one's (start, client, server)]: the votes below are sums of these
        self.sigs: dict[tuple, list] = {}
        self._votes: tuple | None = None
        #: header values (Server, Keep-Alive, Connection) -> (backend name, timeout)
        self._headers: dict[tuple, tuple] = {}
        #: server endpoint -> handshake round-trip times (s)
        self.rtts: dict[int, array] = {}
        #: server endpoint -> SYN times
        self.syn_times: dict[int, array] = {}
        #: server endpoint -> idle close gaps (s), and the first connection's order key
        self.idle_gaps: dict[int, array] = {}
        self.idle_first: dict[int, tuple[float, int, int]] = {}
        #: every server endpoint (api.analyze matches them with nginx.conf)
        self.server_set: set[int] = set()
        #: a packet older than an evicted connection's close came after it was
        #: evicted (the capture's clock went backwards): the summary may not be
        #: what the report would have computed; engine.run analyses again
        self.reordered = False

    def __len__(self) -> int:
        return self.count

    def add(self, c: Conn) -> None:
        """Fold in a connection that is over and finished (FlowTracker.finish_conn),
        with no RST event, no finding and its own round-trip time."""
        _fold(self, c)

    def votes(self) -> tuple[Votes, Votes, Votes, dict[int, Votes], Votes, Votes]:
        """(pairs, client only, server only, host hops, backends, timeouts): the
        votes of infer_vantage, _host_hops, Report.backend_name and
        Report.advertised_timeout over the evicted connections."""
        if self._votes is not None and self._votes[0] == self.count:
            return self._votes[1]
        pairs, conly, sonly, backends, timeouts = Votes(), Votes(), Votes(), Votes(), Votes()
        hosts: dict[int, Votes] = {}
        for (ch, sh, chost, shost, name, t), (n, first) in self.sigs.items():
            k0, k1 = (*first, 0), (*first, 1)
            if ch is not None and sh is not None:
                pairs.add((ch, sh), k0, n)
            elif ch is not None:
                conly.add(ch, k0, n)
            elif sh is not None:
                sonly.add(sh, k0, n)
            if ch is not None:
                hosts.setdefault(chost, Votes()).add(ch, k0, n)
            if sh is not None:
                hosts.setdefault(shost, Votes()).add(sh, k1, n)
            if name:
                backends.add(name, k0, n)
            if t is not None:
                timeouts.add(t, k0, n)
        out = (pairs, conly, sonly, hosts, backends, timeouts)
        self._votes = (self.count, out)
        return out

    @property
    def pairs(self) -> Votes:
        return self.votes()[0]

    @property
    def conly(self) -> Votes:
        return self.votes()[1]

    @property
    def sonly(self) -> Votes:
        return self.votes()[2]

    @property
    def host_hops(self) -> dict[int, Votes]:
        return self.votes()[3]

    @property
    def backends(self) -> Votes:
        return self.votes()[4]

    @property
    def timeouts(self) -> Votes:
        return self.votes()[5]

    def merge(self, other: Rollup) -> None:
        """Add another Rollup (a shard worker's) to this one."""
        self.count += other.count
        self.starts.extend(other.starts)
        self.clients.extend(other.clients)
        self.servers.extend(other.servers)
        self.server_set |= other.server_set
        for sig, (n, key) in other.sigs.items():
            e = self.sigs.get(sig)
            if e is None:
                self.sigs[sig] = [n, key]
            else:
                e[0] += n
                if key < e[1]:
                    e[1] = key
        for src, dst in ((other.rtts, self.rtts), (other.syn_times, self.syn_times),
                         (other.idle_gaps, self.idle_gaps)):  # fmt: skip
            for srv, arr in src.items():
                dst.setdefault(srv, array("d")).extend(arr)
        for srv, key in other.idle_first.items():
            first = self.idle_first.get(srv)
            if first is None or key < first:
                self.idle_first[srv] = key
        self.reordered = self.reordered or other.reordered

    def ranks(self, kept: list[Conn]) -> list[int]:
        """The ids of ``kept`` (sorted as engine.order_conns sorts) among all
        connections: their ranks by (start, client, server), evicted ones
        included; a kept connection goes first among equal keys."""
        n = len(kept)
        if not self.count:
            return list(range(n))
        starts = np.concatenate(
            [np.fromiter((c.start for c in kept), np.float64, n), np.frombuffer(self.starts)]
        )
        clients = np.concatenate(
            [np.fromiter((c.client for c in kept), np.int64, n), np.frombuffer(self.clients, "q")]
        )
        servers = np.concatenate(
            [np.fromiter((c.server for c in kept), np.int64, n), np.frombuffer(self.servers, "q")]
        )
        evicted = np.zeros(len(starts), dtype=np.int8)
        evicted[n:] = 1
        seq = np.arange(len(starts))
        order = np.lexsort((seq, evicted, servers, clients, starts))
        rank = np.empty(len(starts), dtype=np.int64)
        rank[order] = np.arange(len(starts))
        return rank[:n].tolist()


def _fold(r: Rollup, c: Conn) -> None:
    """:meth:`Rollup.add` (a function, so that the compiled build types it)."""
    syn, hs = c.syn_ts, c.hs_ts
    if syn is None or hs is None or hs <= syn or c.rst_events:
        raise ValueError("only connections with a round-trip time and no reset are folded")
    rtt = hs - syn  # evidence.conn_rtt
    r.count += 1
    srv = c.server
    key = (c.start, c.client, srv)
    r.starts.append(c.start)
    r.clients.append(c.client)
    r.servers.append(srv)
    r.server_set.add(srv)
    sig = _sig(r, c)
    e = r.sigs.get(sig)
    if e is None:
        r.sigs[sig] = [1, key]
    else:
        e[0] += 1
        if key < e[1]:
            e[1] = key
    _append(r.rtts, srv, rtt)
    _append(r.syn_times, srv, syn)
    gap = _idle_gap(c, rtt)
    if gap is not None:
        _append(r.idle_gaps, srv, gap)
        first = r.idle_first.get(srv)
        if first is None or key < first:
            r.idle_first[srv] = key


def _sig(r: Rollup, c: Conn) -> tuple:
    """(client hops, server hops, client host, server host, backend name,
    advertised timeout): every vote a connection without RST casts.

    Its side_ttl is the most common TTL of the side's packets (no RST to
    fall back on), the same one _host_hops counts.
    """
    ct, st = c.c.ttls, c.s.ttls
    ch = _HOPS[_mode(ct)] if ct else None
    sh = _HOPS[_mode(st)] if st else None
    h = c.resp_headers
    name = t = None
    if h:
        hk = (h.get("server"), h.get("keep-alive"), h.get("connection"))
        known = r._headers.get(hk)
        if known is None:
            known = (backend_from_headers(h), advertised_timeout(h))
            if known[1] == known[1]:  # a NaN is its own value each time (as in a Counter)
                r._headers[hk] = known
        name, t = known
    return (ch, sh, c.client >> 16, c.server >> 16, name, t)


def _idle_gap(c: Conn, rtt: float) -> float | None:
    """evidence.idle_close_gap(c, rtt), worked out here when every exchange
    is complete (no request can be waiting: the common case)."""
    fin = c.s.fin_ts
    if fin is None or not c.exchanges:
        return None
    cfin = c.c.fin_ts
    if cfin is not None and cfin < fin:
        return None
    best = None
    for ex in c.exchanges:
        end = ex.resp_end_ts
        if end is None:
            return idle_close_gap(c, rtt)  # a request may be waiting: the full test
        if end < fin and (best is None or end > best):
            best = end
    if best is None:
        return None
    gap = fin - best
    return gap if gap >= MIN_IDLE_CLOSE_S else None


def _mode(counts: dict[int, int]) -> int:
    """The key with the highest count, the first one on a tie (``max(counts,
    key=counts.__getitem__)``); ``counts`` is not empty."""
    best = -1
    most = -1
    for k, n in counts.items():
        if n > most:
            best, most = k, n
    return best


def split(watch: list[Conn], horizon: float) -> tuple[list[Conn], list[Conn]]:
    """engine.Evictor's sweep: (the connections of ``watch`` not over by
    ``horizon``, those over that a Rollup can fold). The others (over, with an
    RST event or a finding, or without a round-trip time) are in neither:
    the report needs them."""
    keep: list[Conn] = []
    out: list[Conn] = []
    for c in watch:
        if c.expires_at > horizon or c.zk.delete_at > horizon:
            # (expires_at <= zk.delete_at, and is on the Conn itself: most
            # connections are decided without touching another object)
            keep.append(c)
            continue
        if c.rst_events:
            continue
        _finish_conn(c)  # no packet can change it any more
        syn, hs = c.syn_ts, c.hs_ts
        if syn is None or hs is None or hs <= syn:
            continue  # no round-trip time of its own (evidence.conn_rtt)
        if no_finding(c) or not conn_findings(c):
            out.append(c)
    return keep, out


def _append(d: dict[int, array], srv: int, x: float) -> None:
    a = d.get(srv)
    if a is None:
        a = d[srv] = array("d")
    a.append(x)
