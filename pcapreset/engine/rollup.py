"""rollup: what the report needs from connections that were dropped early.

A long capture holds hundreds of thousands of connections, most of them
ordinary: a handshake, some requests, a FIN close, no reset, no finding. The
report needs only a few numbers from each of those (the per-capture context of
:func:`pcapreset.interpret.context.build_context`, the flow count, the backend's name),
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

from ..interpret.hosts import HostBase, add_host_bases, merge_host_bases
from ..interpret.vantage import Votes
from ..track.conn import Conn
from .fold import fold_rows
from .packed import Packed
from .spill import Spill
from .summary import (
    CLIENT,
    GAP,
    RTT,
    SERVER,
    SIG,
    START,
    SYN,
    Key,
    Summary,
    count_below,
    extend_by_server,
)

#: rows per block of a Rollup: the block being filled is two numpy arrays
#: (``_f``, ``_i``); a full one goes to the Rollup's :class:`~pcapreset.spill.Spill`
#: as bytes (56 bytes a row: 448 KiB per block)
ROLLUP_BLOCK = 8192
_ROW_BYTES = 8 * (4 + 3)


class Rollup:
    """An incremental summary of evicted connections (see the module docstring).

    Per connection it keeps one row of numbers: the floats (start, RTT, SYN
    time, idle close gap or NaN) and the integers (client, server, vote
    signature). Rows are filled in blocks of ``block`` rows (two numpy arrays,
    reused); a full block is written to a :class:`~pcapreset.spill.Spill` (an
    unnamed temporary file) and counted into a :class:`~pcapreset.engine.summary.Summary`,
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
        # START, RTT, SYN, GAP, and (block, 3) int64: CLIENT, SERVER, SIG
        self._f = np.empty((self.block, 4), np.float64)
        self._i = np.empty((self.block, 3), np.int64)
        self._n = 0
        #: the full blocks, in order, each one's float rows then its integer
        #: rows; each written out to the file when it comes (a block is
        #: already a large write: none kept in memory besides the one filled)
        self._blocks = Spill(0)
        #: the full blocks' rows counted (:class:`~pcapreset.engine.summary.Summary`)
        self._done = Summary()
        #: what connections vote for (see :func:`_sig`), in order of first
        #: appearance; a row's SIG is its index here
        self.sig_list: list[tuple] = []
        self._sig_ids: dict[tuple, int] = {}
        #: header values (Server, Keep-Alive, Connection) -> (backend name, timeout)
        self._headers: dict[tuple, tuple] = {}
        self._votes: tuple | None = None
        self._tally_of: tuple[int, Summary] | None = None
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
            fold_rows(self, part, self._f[at : at + k], self._i[at : at + k], hostless)
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
        """Add rows (floats (n, 4), integers (n, 3)); ``remap``: their SIG
        is an index into it (another Rollup's signatures), not ours."""
        done, n = 0, len(f)
        while done < n:
            at = self._n
            k = min(n - done, self.block - at)
            self._f[at : at + k] = f[done : done + k]
            self._i[at : at + k] = i[done : done + k]
            if remap is not None:
                self._i[at : at + k, SIG] = remap[i[done : done + k, SIG]]
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

    def rows_from(self, k: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The rows from row ``k`` on, as :meth:`_each_block` gives them (the
        full blocks before row ``k`` are not read back): what a caller that
        took the first ``k`` rows already (report.stream) adds next."""
        full = len(self._blocks)
        for j in range(k // self.block, full):
            b = self._blocks[j]
            n = len(b) // _ROW_BYTES
            lo = max(0, k - j * self.block)
            f = np.frombuffer(b, np.float64, 4 * n).reshape(n, 4)
            i = np.frombuffer(b, np.int64, 3 * n, 32 * n).reshape(n, 3)
            yield f[lo:], i[lo:]
        lo = max(0, k - full * self.block)
        if self._n > lo:
            yield self._f[lo : self._n], self._i[lo : self._n]

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
                f[:, START].tolist(), i[:, CLIENT].tolist(), i[:, SERVER].tolist(), strict=True
            )

    def _tally(self) -> Summary:
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
        return self._by_server(RTT)

    @property
    def syn_times(self) -> dict[int, array]:
        """server endpoint -> SYN times (new arrays, as :attr:`rtts`)"""
        return self._by_server(SYN)

    @property
    def idle_gaps(self) -> dict[int, array]:
        """server endpoint -> idle close gaps (s) (new arrays, as :attr:`rtts`)"""
        return self._by_server(GAP)

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
        (GAP: of its rows with an idle close gap), servers in order of first
        appearance; a block at a time."""
        t = self._tally()
        out = {s: array("d") for s in (t.idle_first if col == GAP else t.servers)}
        for f, i in self._each_block():
            srv, vals = i[:, SERVER], f[:, col]
            # (NaN: no idle close gap; an attempt's round trip or missing SYN)
            has = ~np.isnan(vals)
            if not has.all():
                srv, vals = srv[has], vals[has]
            extend_by_server(out, srv, vals)
        if col != GAP:  # (a server whose rows were all attempts has no value)
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
            rank += count_below(
                (f[:, START], i[:, CLIENT], i[:, SERVER]), (starts, clients, servers)
            )
        p.ids = array("q", rank[n:].tobytes())
        return rank[:n].tolist()
