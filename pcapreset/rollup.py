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
from .packed import Packed

_finish_conn = FlowTracker.finish_conn

#: True when this module runs compiled (setup.py: split and Rollup.add are typed)
COMPILED: bool = cython.compiled

# columns of a Rollup's rows
_START, _RTT, _SYN, _GAP = 0, 1, 2, 3
_CLIENT, _SERVER, _SIG = 0, 1, 2
_NAN = float("nan")

#: hops() of every TTL / hop limit
_HOPS = tuple(hops(t) for t in range(256))


class Rollup:
    """An incremental summary of evicted connections (see the module docstring).

    Per connection it keeps one row of numbers in two numpy arrays that grow
    by doubling (so a long capture's rows are two large blocks, not one small
    block per :meth:`add_many` joined at the end): the floats (start, RTT,
    SYN time, idle close gap or NaN) and the integers (client, server, vote
    signature). The per-server tables and the votes the report reads are
    worked out from the rows when asked for (and kept until more connections
    come).
    """

    def __init__(self) -> None:
        self.count = 0
        # rows [:count] of (capacity, 4) float64: _START, _RTT, _SYN, _GAP
        self._f = np.empty((0, 4), np.float64)
        # rows [:count] of (capacity, 3) int64: _CLIENT, _SERVER, _SIG
        self._i = np.empty((0, 3), np.int64)
        #: what connections vote for (see :func:`_sig`), in order of first
        #: appearance; a row's _SIG is its index here
        self.sig_list: list[tuple] = []
        self._sig_ids: dict[tuple, int] = {}
        #: header values (Server, Keep-Alive, Connection) -> (backend name, timeout)
        self._headers: dict[tuple, tuple] = {}
        self._votes: tuple | None = None
        self._derived: tuple[int, dict] | None = None
        #: reset connections the report keeps, packed (see :mod:`pcapreset.packed`)
        self.packed = Packed()
        #: a packet older than an evicted connection's close came after it was
        #: evicted (the capture's clock went backwards): the summary may not be
        #: what the report would have computed; engine.run analyses again
        self.reordered = False

    def __len__(self) -> int:
        return self.count

    def add(self, c: Conn) -> None:
        """Fold in a connection that is over and finished (FlowTracker.finish_conn),
        with no RST event, no finding and its own round-trip time."""
        self.add_many([c])

    def add_many(self, conns: list[Conn]) -> None:
        """:meth:`add` for each of ``conns``, in order."""
        for c in conns:
            syn, hs = c.syn_ts, c.hs_ts
            if syn is None or hs is None or hs <= syn or c.rst_events:
                raise ValueError("only connections with a round-trip time and no reset are folded")
        n = len(conns)
        if not n:
            return
        at = self._room(n)
        _fold(self, conns, self._f[at : at + n], self._i[at : at + n])
        self.count += n

    def _sig_id(self, sig: tuple) -> int:
        sid = self._sig_ids.get(sig)
        if sid is None:
            sid = self._sig_ids[sig] = len(self.sig_list)
            self.sig_list.append(sig)
        return sid

    def _room(self, n: int) -> int:
        """Make room for ``n`` more rows; returns the first one's index."""
        have = self.count
        if have + n > len(self._f):
            cap = max(1024, 2 * len(self._f), have + n)
            f = np.empty((cap, 4), np.float64)
            i = np.empty((cap, 3), np.int64)
            f[:have] = self._f[:have]
            i[:have] = self._i[:have]
            self._f, self._i = f, i
        return have

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row: (floats (n, 4), integers (n, 3)), views."""
        return self._f[: self.count], self._i[: self.count]

    def __getstate__(self) -> dict:
        # (pickled by a shard or the reader child: the rows, not the capacity)
        state = self.__dict__.copy()
        state["_f"], state["_i"] = self._rows()
        return state

    @property
    def starts(self) -> np.ndarray:
        """Start time of every evicted connection (with :attr:`clients` and
        :attr:`servers`: the keys the report's ids of the kept ones count in)."""
        return self._rows()[0][:, _START]

    @property
    def clients(self) -> np.ndarray:
        return self._rows()[1][:, _CLIENT]

    @property
    def servers(self) -> np.ndarray:
        return self._rows()[1][:, _SERVER]

    def _tables(self) -> dict:
        if self._derived is not None and self._derived[0] == self.count:
            return self._derived[1]
        f, i = self._rows()
        srv = i[:, _SERVER]
        gap = ~np.isnan(f[:, _GAP])
        # rows in report order (start, client, server): the first voter's key
        order = np.lexsort((srv, i[:, _CLIENT], f[:, _START]))
        sigs: dict[tuple, list] = {}
        if len(order):
            counts = np.bincount(i[:, _SIG], minlength=len(self.sig_list)).tolist()
            firsts = _first_rows(i[order, _SIG], order)
            for sid, sig in enumerate(self.sig_list):
                if counts[sid]:
                    sigs[sig] = [counts[sid], _key(f, i, firsts[sid])]
        gap_rows = order[gap[order]]
        idle_first = {s: _key(f, i, r) for s, r in _first_rows(srv[gap_rows], gap_rows).items()}
        idle_gaps = _by_server(srv[gap], f[gap, _GAP])
        out = {
            "sigs": sigs,
            "rtts": _by_server(srv, f[:, _RTT]),
            "syn_times": _by_server(srv, f[:, _SYN]),
            "idle_gaps": idle_gaps,
            "idle_first": {s: idle_first[s] for s in idle_gaps},
            "server_set": set(srv.tolist()),
        }
        self._derived = (self.count, out)
        return out

    @property
    def sigs(self) -> dict[tuple, list]:
        """What connections vote for -> [connections, the first one's (start,
        client, server)]: the votes below are sums of these."""
        return self._tables()["sigs"]

    @property
    def rtts(self) -> dict[int, array]:
        """server endpoint -> handshake round-trip times (s), in folding order"""
        return self._tables()["rtts"]

    @property
    def syn_times(self) -> dict[int, array]:
        """server endpoint -> SYN times"""
        return self._tables()["syn_times"]

    @property
    def idle_gaps(self) -> dict[int, array]:
        """server endpoint -> idle close gaps (s)"""
        return self._tables()["idle_gaps"]

    @property
    def idle_first(self) -> dict[int, tuple[float, int, int]]:
        """server endpoint -> the order key of its first connection with an idle close gap"""
        return self._tables()["idle_first"]

    @property
    def server_set(self) -> set[int]:
        """every server endpoint, packed connections' included (api.analyze
        matches them with nginx.conf)"""
        return self._tables()["server_set"] | set(self.packed.servers)

    def votes(self) -> tuple[Votes, Votes, Votes, dict[int, Votes], Votes, Votes]:
        """(pairs, client only, server only, host hops, backends, timeouts): the
        votes of infer_vantage, _host_hops, Report.backend_name and
        Report.advertised_timeout over the evicted and the packed connections."""
        state = (self.count, len(self.packed))
        if self._votes is not None and self._votes[0] == state:
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
        self.packed.votes_into(pairs, conly, sonly, hosts, backends, timeouts)
        out = (pairs, conly, sonly, hosts, backends, timeouts)
        self._votes = (state, out)
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
        if other.count:
            f, i = other._rows()
            remap = np.array([self._sig_id(sig) for sig in other.sig_list], np.int64)
            at = self._room(other.count)
            end = at + other.count
            self._f[at:end] = f
            self._i[at:end] = i
            self._i[at:end, _SIG] = remap[i[:, _SIG]]
            self.count += other.count
        self.packed.merge(other.packed)
        self.reordered = self.reordered or other.reordered

    def ranks(self, kept: list[Conn]) -> list[int]:
        """The ids of ``kept`` (sorted as engine.order_conns sorts) among all
        connections: their ranks by (start, client, server), evicted and
        packed ones included; a kept connection goes first among equal keys,
        then a packed one. Sets the packed connections' ids (``packed.ids``)."""
        n, p = len(kept), self.packed
        m = len(p)
        if not self.count and not m:
            return list(range(n))
        starts = np.concatenate(
            [np.fromiter((c.start for c in kept), np.float64, n), p.starts, self.starts]
        )
        clients = np.concatenate(
            [np.fromiter((c.client for c in kept), np.int64, n), p.clients, self.clients]
        )
        servers = np.concatenate(
            [np.fromiter((c.server for c in kept), np.int64, n), p.servers, self.servers]
        )
        evicted = np.zeros(len(starts), dtype=np.int8)
        evicted[n:] = 1
        evicted[n + m :] = 2
        seq = np.arange(len(starts))
        order = np.lexsort((seq, evicted, servers, clients, starts))
        rank = np.empty(len(starts), dtype=np.int64)
        rank[order] = np.arange(len(starts))
        p.ids = rank[n : n + m].tolist()
        return rank[:n].tolist()


def _fold(r: Rollup, conns: list[Conn], fa: np.ndarray, ia: np.ndarray) -> None:
    """Fill the rows ``fa`` / ``ia`` of :meth:`Rollup.add_many` (a function, so
    that the compiled build types it)."""
    f = fa
    i = ia
    # the last connection's signature: the next one most often has the same
    have = False
    last_ch = last_sh = last_chost = last_shost = last_sid = 0
    last_h0 = last_h1 = last_h2 = None
    for k in range(len(conns)):
        c = conns[k]
        syn = c.syn_ts
        rtt = c.hs_ts - syn  # type: ignore[operator]  # evidence.conn_rtt (add_many checked)
        f[k, _START] = c.start
        f[k, _RTT] = rtt
        f[k, _SYN] = syn
        gap = _idle_gap(c, rtt)
        f[k, _GAP] = _NAN if gap is None else gap
        i[k, _CLIENT] = c.client
        i[k, _SERVER] = c.server
        ct, st = c.c.ttls, c.s.ttls
        ch = _HOPS[_mode(ct)] if ct else -1
        sh = _HOPS[_mode(st)] if st else -1
        chost = c.client >> 16
        shost = c.server >> 16
        h = c.resp_headers
        if h:
            h0, h1, h2 = h.get("server"), h.get("keep-alive"), h.get("connection")
        else:
            h0 = h1 = h2 = None
        if not (
            have
            and ch == last_ch
            and sh == last_sh
            and chost == last_chost
            and shost == last_shost
            and h0 == last_h0
            and h1 == last_h1
            and h2 == last_h2
        ):
            sig, have = _sig(r, ch, sh, chost, shost, h, (h0, h1, h2))
            last_sid = r._sig_id(sig)
            last_ch, last_sh, last_chost, last_shost = ch, sh, chost, shost
            last_h0, last_h1, last_h2 = h0, h1, h2
        i[k, _SIG] = last_sid


def _sig(
    r: Rollup, ch: int, sh: int, chost: int, shost: int, h: dict[str, str], hk: tuple
) -> tuple[tuple, bool]:
    """((client hops, server hops, client host, server host, backend name,
    advertised timeout), reusable): every vote a connection without RST casts,
    and whether the next connection with the same hops, hosts and header
    values ``hk`` casts the same (not when the timeout is NaN: a NaN is its own
    value each time, as in a Counter).

    Its side_ttl is the most common TTL of the side's packets (no RST to
    fall back on), the same one _host_hops counts (-1 here: no packet).
    """
    name = t = None
    reusable = True
    if h:
        known = r._headers.get(hk)
        if known is None:
            known = (backend_from_headers(h), advertised_timeout(h))
            if known[1] == known[1]:
                r._headers[hk] = known
            else:
                reusable = False
        name, t = known
    sig = (None if ch < 0 else ch, None if sh < 0 else sh, chost, shost, name, t)
    return sig, reusable


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


def split(watch: list[Conn], horizon: float) -> tuple[list[Conn], list[Conn], list[Conn]]:
    """engine.Evictor's sweep: (the connections of ``watch`` not over by
    ``horizon``, those over that a Rollup can fold, those over with an RST
    event: kept for the report, slimmed). The others (over, with a finding or
    without a round-trip time) are in none: the report needs them whole."""
    keep: list[Conn] = []
    out: list[Conn] = []
    frozen: list[Conn] = []
    for c in watch:
        if c.expires_at > horizon or c.zk.delete_at > horizon:
            # (expires_at <= zk.delete_at, and is on the Conn itself: most
            # connections are decided without touching another object)
            keep.append(c)
            continue
        if c.rst_events:
            frozen.append(c)
            continue
        _finish_conn(c)  # no packet can change it any more
        syn, hs = c.syn_ts, c.hs_ts
        if syn is None or hs is None or hs <= syn:
            continue  # no round-trip time of its own (evidence.conn_rtt)
        if no_finding(c) or not conn_findings(c):
            out.append(c)
    return keep, out, frozen


def _first_rows(keys: np.ndarray, rows: np.ndarray) -> dict[int, int]:
    """key -> the row of its first occurrence in ``keys`` (``rows[j]``: the row of ``keys[j]``)."""
    uniq, first = np.unique(keys, return_index=True)
    return dict(zip(uniq.tolist(), rows[first].tolist(), strict=True))


def _key(f: np.ndarray, i: np.ndarray, row: int) -> tuple[float, int, int]:
    """(start, client, server) of a row: its connection's order key."""
    return (float(f[row, _START]), int(i[row, _CLIENT]), int(i[row, _SERVER]))


def _by_server(servers: np.ndarray, values: np.ndarray) -> dict[int, array]:
    """server -> its values in row order, servers in order of first appearance."""
    if not len(servers):
        return {}
    order = np.argsort(servers, kind="stable")
    uniq, start, counts = np.unique(servers[order], return_index=True, return_counts=True)
    vals = values[order]
    out = {}
    for j in np.argsort(order[start], kind="stable").tolist():  # first appearance
        a = array("d")
        a.frombytes(vals[start[j] : start[j] + counts[j]].tobytes())
        out[int(uniq[j])] = a
    return out
