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
from collections.abc import Iterator

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.context import idle_close_gap
from ..interpret.findings import conn_findings, no_finding
from ..interpret.hosts import HostBase, add_host_bases, merge_host_bases
from ..interpret.thresholds import MIN_IDLE_CLOSE_S
from ..interpret.vantage import Votes, hops
from ..track.conn import Conn
from ..track.flows import FlowTracker
from .packed import Packed
from .spill import Spill

_finish_conn = FlowTracker.finish_conn

#: True when this module runs compiled (setup.py: split and Rollup.add are typed)
COMPILED: bool = cython.compiled

# columns of a Rollup's rows
_START, _RTT, _SYN, _GAP = 0, 1, 2, 3
_CLIENT, _SERVER, _SIG = 0, 1, 2
_NAN = float("nan")

#: hops() of every TTL / hop limit
_HOPS = tuple(hops(t) for t in range(256))


#: rows per block of a Rollup: the block being filled is two numpy arrays
#: (``_f``, ``_i``); a full one goes to the Rollup's :class:`~pcapreset.spill.Spill`
#: as bytes (56 bytes a row: 448 KiB per block)
ROLLUP_BLOCK = 8192
_ROW_BYTES = 8 * (4 + 3)

#: a connection's order key: (start, client, server)
Key = tuple[float, int, int]


class Rollup:
    """An incremental summary of evicted connections (see the module docstring).

    Per connection it keeps one row of numbers: the floats (start, RTT, SYN
    time, idle close gap or NaN) and the integers (client, server, vote
    signature). Rows are filled in blocks of ``block`` rows (two numpy arrays,
    reused); a full block is written to a :class:`~pcapreset.spill.Spill` (an
    unnamed temporary file) and counted into a :class:`_Summary`,
    so memory does not grow with the rows. What the report reads is worked
    out a block at a time: the votes and the first connection of each server
    with an idle close from the summaries, the per-server samples by reading
    the blocks back (each time they are asked for: the caller owns them).
    """

    def __init__(self, block: int | None = None) -> None:
        self.count = 0
        #: rows per block (:data:`ROLLUP_BLOCK` when None)
        self.block = ROLLUP_BLOCK if block is None else block
        if self.block < 1:
            raise ValueError("a block holds one row at least")
        # the block being filled: its rows [:_n] of (block, 4) float64:
        # _START, _RTT, _SYN, _GAP, and (block, 3) int64: _CLIENT, _SERVER, _SIG
        self._f = np.empty((self.block, 4), np.float64)
        self._i = np.empty((self.block, 3), np.int64)
        self._n = 0
        #: the full blocks, in order, each one's float rows then its integer
        #: rows; each written out to the file when it comes (a block is
        #: already a large write: none kept in memory besides the one filled)
        self._blocks = Spill(0)
        #: the full blocks' rows counted (:class:`_Summary`)
        self._done = _Summary()
        #: what connections vote for (see :func:`_sig`), in order of first
        #: appearance; a row's _SIG is its index here
        self.sig_list: list[tuple] = []
        self._sig_ids: dict[tuple, int] = {}
        #: header values (Server, Keep-Alive, Connection) -> (backend name, timeout)
        self._headers: dict[tuple, tuple] = {}
        self._votes: tuple | None = None
        self._tally_of: tuple[int, _Summary] | None = None
        #: reset connections the report keeps, packed (see :mod:`pcapreset.packed`)
        self.packed = Packed()
        #: the host baselines (interpret.hosts) of the folded connections
        self.host_bases: dict[int, HostBase] = {}
        #: a packet older than an evicted connection's close came after it was
        #: evicted (the capture's clock went backwards)
        self.reordered = False
        #: connections that began with such a packet (engine.Evictor): each
        #: may be a late packet of an evicted connection (a warning says so)
        self.late = 0
        #: connection attempts folded because too many were open at once (a
        #: flood: evictor.expired_attempts; among ``count``, without host votes)
        self.attempts = 0

    def __len__(self) -> int:
        return self.count

    def add(self, c: Conn) -> None:
        """Fold in a connection that is over and finished (FlowTracker.finish_conn),
        with no RST event, no finding and its own round-trip time."""
        self.add_many([c])

    def add_many(self, conns: list[Conn], hostless: bool = False) -> None:
        """:meth:`add` for each of ``conns``, in order; ``hostless``: they cast
        no per-host hop vote (a flood's attempts, from as many spoofed hosts)."""
        for c in conns:
            syn, hs = c.syn_ts, c.hs_ts
            if c.rst_events or (hs is not None and (syn is None or hs <= syn)):
                raise ValueError(
                    "only connections with a round-trip time (or no handshake) and no reset "
                    "are folded"
                )
        if not hostless:
            add_host_bases(conns, self.host_bases)
        n = len(conns)
        done = 0
        while done < n:
            at = self._n
            k = min(n - done, self.block - at)
            part = conns if k == n else conns[done : done + k]
            _fold(self, part, self._f[at : at + k], self._i[at : at + k], hostless)
            self._filled(k)
            done += k

    def _sig_id(self, sig: tuple) -> int:
        sid = self._sig_ids.get(sig)
        if sid is None:
            sid = self._sig_ids[sig] = len(self.sig_list)
            self.sig_list.append(sig)
        return sid

    def _filled(self, k: int) -> None:
        """``k`` more rows of the block are filled; a full block goes out."""
        self._n += k
        self.count += k
        if self._n == self.block:
            f, i = self._f, self._i
            self._done.add(f, i)
            self._blocks.append(f.tobytes() + i.tobytes())
            self._n = 0

    def _append(self, f: np.ndarray, i: np.ndarray, remap: np.ndarray | None = None) -> None:
        """Add rows (floats (n, 4), integers (n, 3)); ``remap``: their _SIG
        is an index into it (another Rollup's signatures), not ours."""
        done, n = 0, len(f)
        while done < n:
            at = self._n
            k = min(n - done, self.block - at)
            self._f[at : at + k] = f[done : done + k]
            self._i[at : at + k] = i[done : done + k]
            if remap is not None:
                self._i[at : at + k, _SIG] = remap[i[done : done + k, _SIG]]
            self._filled(k)
            done += k

    def _each_block(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every row, a block at a time, in order: (floats (n, 4), integers
        (n, 3)); read-only, or views of the block being filled."""
        for b in self._blocks:
            n = len(b) // _ROW_BYTES
            f = np.frombuffer(b, np.float64, 4 * n).reshape(n, 4)
            i = np.frombuffer(b, np.int64, 3 * n, 32 * n).reshape(n, 3)
            yield f, i
        if self._n:
            yield self._f[: self._n], self._i[: self._n]

    def __getstate__(self) -> dict:
        # (pickled by a shard or the reader child: the filled rows of the block)
        state = self.__dict__.copy()
        state["_f"], state["_i"] = self._f[: self._n], self._i[: self._n]
        state["_votes"] = state["_tally_of"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        f, i = state["_f"], state["_i"]
        self._f = np.empty((self.block, 4), np.float64)
        self._i = np.empty((self.block, 3), np.int64)
        self._f[: len(f)] = f
        self._i[: len(i)] = i

    def keys(self) -> Iterator[Key]:
        """The (start, client, server) of every evicted connection, in folding
        order: the keys the report's ids of the kept ones count in."""
        for f, i in self._each_block():
            yield from zip(
                f[:, _START].tolist(), i[:, _CLIENT].tolist(), i[:, _SERVER].tolist(), strict=True
            )

    def _tally(self) -> _Summary:
        """The summary of every row (the full blocks' and the block being filled)."""
        if not self._n:
            return self._done
        known = self._tally_of
        if known is not None and known[0] == self.count:
            return known[1]
        s = self._done.copy()
        s.add(self._f[: self._n], self._i[: self._n])
        self._tally_of = (self.count, s)
        return s

    @property
    def sigs(self) -> dict[tuple, list]:
        """What connections vote for -> [connections, the first one's (start,
        client, server)]: the votes below are sums of these."""
        t = self._tally()
        return {
            sig: [t.sig_rows[sid], t.sig_first[sid]]
            for sid, sig in enumerate(self.sig_list)
            if t.sig_rows.get(sid)
        }

    @property
    def rtts(self) -> dict[int, array]:
        """server endpoint -> handshake round-trip times (s), in folding order
        (read from the blocks at each call: new arrays)"""
        return self._by_server(_RTT)

    @property
    def syn_times(self) -> dict[int, array]:
        """server endpoint -> SYN times (new arrays, as :attr:`rtts`)"""
        return self._by_server(_SYN)

    @property
    def idle_gaps(self) -> dict[int, array]:
        """server endpoint -> idle close gaps (s) (new arrays, as :attr:`rtts`)"""
        return self._by_server(_GAP)

    @property
    def idle_first(self) -> dict[int, Key]:
        """server endpoint -> the order key of its first connection with an
        idle close gap (servers in the order of :attr:`idle_gaps`)"""
        return dict(self._tally().idle_first)

    @property
    def server_set(self) -> set[int]:
        """every server endpoint, packed connections' included (api.analyze
        matches them with nginx.conf)"""
        return set(self._tally().servers) | set(self.packed.servers)

    def _by_server(self, col: int) -> dict[int, array]:
        """server -> the values of column ``col`` of its rows in row order
        (_GAP: of its rows with an idle close gap), servers in order of first
        appearance; a block at a time."""
        t = self._tally()
        out = {s: array("d") for s in (t.idle_first if col == _GAP else t.servers)}
        for f, i in self._each_block():
            srv, vals = i[:, _SERVER], f[:, col]
            # (NaN: no idle close gap; an attempt's round trip or missing SYN)
            has = ~np.isnan(vals)
            if not has.all():
                srv, vals = srv[has], vals[has]
            _extend_by_server(out, srv, vals)
        if col != _GAP:  # (a server whose rows were all attempts has no value)
            out = {s: v for s, v in out.items() if len(v)}
        return out

    def votes(self) -> tuple[Votes, Votes, Votes, dict[int, Votes], Votes, Votes]:
        """(pairs, client only, server only, host hops, backends, timeouts): the
        votes of infer_vantage, _host_hops, report.headers.backend_name and
        report.headers.most_advertised_timeout over the evicted and the packed connections."""
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
            if ch is not None and chost >= 0:
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
        """Add another Rollup (a shard worker's) to this one, a block at a time."""
        if other.count:
            remap = np.array([self._sig_id(sig) for sig in other.sig_list], np.int64)
            for f, i in other._each_block():
                self._append(f, i, remap)
        self.packed.merge(other.packed)
        merge_host_bases(self.host_bases, other.host_bases)
        self.reordered = self.reordered or other.reordered
        self.late += other.late
        self.attempts += other.attempts

    def ranks(self, kept: list[Conn]) -> list[int]:
        """The ids of ``kept`` (sorted as engine.order_conns sorts) among all
        connections: their ranks by (start, client, server), evicted and
        packed ones included; a kept connection goes first among equal keys,
        then a packed one, then an evicted one. Sets the packed connections'
        ids (``packed.ids``).

        The kept and packed connections are ranked among themselves, then
        each one's rank goes up by the evicted rows whose key is less than
        its own, counted a block at a time."""
        n, p = len(kept), self.packed
        m = len(p)
        if not self.count and not m:
            return list(range(n))
        starts = np.concatenate([np.fromiter((c.start for c in kept), np.float64, n), p.starts])
        clients = np.concatenate([np.fromiter((c.client for c in kept), np.int64, n), p.clients])
        servers = np.concatenate([np.fromiter((c.server for c in kept), np.int64, n), p.servers])
        packed = np.zeros(n + m, dtype=np.int8)
        packed[n:] = 1
        order = np.lexsort((np.arange(n + m), packed, servers, clients, starts))
        rank = np.empty(n + m, dtype=np.int64)
        rank[order] = np.arange(n + m)
        for f, i in self._each_block():
            rank += _count_below(
                (f[:, _START], i[:, _CLIENT], i[:, _SERVER]), (starts, clients, servers)
            )
        p.ids = array("q", rank[n:].tobytes())
        return rank[:n].tolist()


def _fold(
    r: Rollup, conns: list[Conn], fa: np.ndarray, ia: np.ndarray, hostless: bool = False
) -> None:
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
        sy, hs = c.syn_ts, c.hs_ts
        if hs is None:  # an attempt (evictor.expired_attempts): no round trip
            syn = _NAN if sy is None else sy
            rtt = _NAN
        else:
            syn = sy  # type: ignore[assignment]  # (add_many checked: a SYN came first)
            rtt = hs - syn  # evidence.conn_rtt
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
        # (a flood's attempts cast no per-host hop vote: spoofed addresses
        # would make one signature per source host)
        chost = -1 if hostless else c.client >> 16
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


class _Summary:
    """What the order-free tables of a Rollup add up to over some rows: per
    vote signature (its index in ``sig_list``) its rows and the least
    (start, client, server) key among them (the first voter in report order);
    the servers, in order of first appearance; per server with an idle close
    gap, the least key of its rows with one, in order of the first such row."""

    __slots__ = ("sig_rows", "sig_first", "servers", "idle_first")

    def __init__(self) -> None:
        self.sig_rows: dict[int, int] = {}
        self.sig_first: dict[int, Key] = {}
        self.servers: dict[int, None] = {}
        self.idle_first: dict[int, Key] = {}

    def copy(self) -> _Summary:
        s = _Summary()
        s.sig_rows = dict(self.sig_rows)
        s.sig_first = dict(self.sig_first)
        s.servers = dict(self.servers)
        s.idle_first = dict(self.idle_first)
        return s

    def add(self, f: np.ndarray, i: np.ndarray) -> None:
        """Count rows (floats, integers) that come after those counted."""
        if not len(f):
            return
        srv, sig = i[:, _SERVER], i[:, _SIG]
        order = np.lexsort((srv, i[:, _CLIENT], f[:, _START]))  # report order
        sids, counts = np.unique(sig, return_counts=True)
        rows = self.sig_rows
        for sid, k in zip(sids.tolist(), counts.tolist(), strict=True):
            rows[sid] = rows.get(sid, 0) + k
        for sid, row in _first_rows(sig[order], order).items():
            _least(self.sig_first, sid, _key(f, i, row))
        servers = self.servers
        for s in _appearance(srv):
            if s not in servers:
                servers[s] = None
        has = ~np.isnan(f[:, _GAP])
        if has.any():
            idle_rows = order[has[order]]
            firsts = _first_rows(srv[idle_rows], idle_rows)
            for s in _appearance(srv[has]):
                _least(self.idle_first, s, _key(f, i, firsts[s]))


def _least(d: dict[int, Key], k: int, key: Key) -> None:
    """d[k] = the lesser of ``key`` and d[k] (new keys go last)."""
    known = d.get(k)
    if known is None or key < known:
        d[k] = key


def _appearance(a: np.ndarray) -> list[int]:
    """The values of ``a``, each once, in order of first appearance."""
    uniq, first = np.unique(a, return_index=True)
    return uniq[np.argsort(first)].tolist()


def _count_below(
    rows: tuple[np.ndarray, np.ndarray, np.ndarray], keys: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """For each key of ``keys`` (starts, clients, servers), how many of
    ``rows`` (the same columns) have a lesser (start, client, server)."""
    nq, nr = len(keys[0]), len(rows[0])
    row = np.zeros(nq + nr, dtype=np.int8)
    row[nq:] = 1
    cols = [np.concatenate([q, r]) for q, r in zip(keys, rows, strict=True)]
    # a row equal to a key sorts after it: only lesser rows come before a key
    order = np.lexsort((row, cols[2], cols[1], cols[0]))
    is_row = row[order]
    before = np.cumsum(is_row, dtype=np.int64)
    at = np.flatnonzero(is_row == 0)
    out = np.empty(nq, dtype=np.int64)
    out[order[at]] = before[at]
    return out


def _first_rows(keys: np.ndarray, rows: np.ndarray) -> dict[int, int]:
    """key -> the row of its first occurrence in ``keys`` (``rows[j]``: the row of ``keys[j]``)."""
    uniq, first = np.unique(keys, return_index=True)
    return dict(zip(uniq.tolist(), rows[first].tolist(), strict=True))


def _key(f: np.ndarray, i: np.ndarray, row: int) -> tuple[float, int, int]:
    """(start, client, server) of a row: its connection's order key."""
    return (float(f[row, _START]), int(i[row, _CLIENT]), int(i[row, _SERVER]))


def _extend_by_server(out: dict[int, array], servers: np.ndarray, values: np.ndarray) -> None:
    """out[server] += its ``values``, in order (``out`` has every server)."""
    if not len(servers):
        return
    order = np.argsort(servers, kind="stable")
    uniq, start, counts = np.unique(servers[order], return_index=True, return_counts=True)
    vals = values[order]
    for s, a, k in zip(uniq.tolist(), start.tolist(), counts.tolist(), strict=True):
        out[s].frombytes(vals[a : a + k].tobytes())
