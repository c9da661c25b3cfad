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

from .advice import advertised_timeout, backend_from_headers
from .evidence import Votes, conn_rtt, host_hop_votes, idle_close_gap, vantage_votes
from .flows import Conn


class Rollup:
    """An incremental summary of evicted connections (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0
        #: (start, client, server) of every evicted connection: the report's ids
        #: (ranks in that order) of the kept ones count them in
        self.starts = array("d")
        self.clients = array("q")
        self.servers = array("q")
        #: infer_vantage's votes: (client hops, server hops) / client only / server only
        self.pairs = Votes()
        self.conly = Votes()
        self.sonly = Votes()
        #: _host_hops's votes: host (addr id) -> hop counts
        self.host_hops: dict[int, Votes] = {}
        #: server endpoint -> handshake round-trip times (s)
        self.rtts: dict[int, array] = {}
        #: server endpoint -> SYN times
        self.syn_times: dict[int, array] = {}
        #: server endpoint -> idle close gaps (s), and the first connection's order key
        self.idle_gaps: dict[int, array] = {}
        self.idle_first: dict[int, tuple[float, int, int]] = {}
        #: Report.backend_name / Report.advertised_timeout votes
        self.backends = Votes()
        self.timeouts = Votes()
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
        rtt = conn_rtt(c)
        if rtt is None or c.rst_events:
            raise ValueError("only connections with a round-trip time and no reset are folded")
        self.count += 1
        srv = c.server
        self.starts.append(c.start)
        self.clients.append(c.client)
        self.servers.append(srv)
        self.server_set.add(srv)
        vantage_votes(c, self.pairs, self.conly, self.sonly)
        host_hop_votes(c, self.host_hops)
        _append(self.rtts, srv, rtt)
        if c.syn_ts is not None:
            _append(self.syn_times, srv, c.syn_ts)
        gap = idle_close_gap(c, rtt)
        if gap is not None:
            _append(self.idle_gaps, srv, gap)
            key = (c.start, c.client, srv)
            first = self.idle_first.get(srv)
            if first is None or key < first:
                self.idle_first[srv] = key
        if c.resp_headers:
            vkey = (c.start, c.client, srv, 0)
            name = backend_from_headers(c.resp_headers)
            if name:
                self.backends.add(name, vkey)
            t = advertised_timeout(c.resp_headers)
            if t is not None:
                self.timeouts.add(t, vkey)

    def merge(self, other: Rollup) -> None:
        """Add another Rollup (a shard worker's) to this one."""
        self.count += other.count
        self.starts.extend(other.starts)
        self.clients.extend(other.clients)
        self.servers.extend(other.servers)
        self.server_set |= other.server_set
        self.pairs.merge(other.pairs)
        self.conly.merge(other.conly)
        self.sonly.merge(other.sonly)
        for host, v in other.host_hops.items():
            mine = self.host_hops.get(host)
            if mine is None:
                self.host_hops[host] = v.copy()
            else:
                mine.merge(v)
        for src, dst in ((other.rtts, self.rtts), (other.syn_times, self.syn_times),
                         (other.idle_gaps, self.idle_gaps)):  # fmt: skip
            for srv, arr in src.items():
                dst.setdefault(srv, array("d")).extend(arr)
        for srv, key in other.idle_first.items():
            first = self.idle_first.get(srv)
            if first is None or key < first:
                self.idle_first[srv] = key
        self.backends.merge(other.backends)
        self.timeouts.merge(other.timeouts)
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


def _append(d: dict[int, array], srv: int, x: float) -> None:
    a = d.get(srv)
    if a is None:
        a = d[srv] = array("d")
    a.append(x)
