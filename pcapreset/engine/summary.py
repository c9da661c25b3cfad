"""summary: the order-free tables of a Rollup's rows, worked out a block at a time.

A :class:`~pcapreset.engine.rollup.Rollup` keeps one row of numbers per
folded connection (columns below); :class:`Summary` adds up what the report
reads of them (votes, servers, the first connection of each in report
order), and :func:`count_below` / :func:`extend_by_server` rank connections
among the rows and gather per-server samples, with numpy.
"""

from __future__ import annotations

from array import array

import numpy as np

# columns of a Rollup's rows: the floats, then the integers
START, RTT, SYN, GAP = 0, 1, 2, 3
CLIENT, SERVER, SIG = 0, 1, 2

#: a connection's order key: (start, client, server)
Key = tuple[float, int, int]


class Summary:
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

    def copy(self) -> Summary:
        s = Summary()
        s.sig_rows = dict(self.sig_rows)
        s.sig_first = dict(self.sig_first)
        s.servers = dict(self.servers)
        s.idle_first = dict(self.idle_first)
        return s

    def add(self, f: np.ndarray, i: np.ndarray) -> None:
        """Count rows (floats, integers) that come after those counted."""
        if not len(f):
            return
        srv, sig = i[:, SERVER], i[:, SIG]
        order = np.lexsort((srv, i[:, CLIENT], f[:, START]))  # report order
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
        has = ~np.isnan(f[:, GAP])
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


def count_below(
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
    return (float(f[row, START]), int(i[row, CLIENT]), int(i[row, SERVER]))


def extend_by_server(out: dict[int, array], servers: np.ndarray, values: np.ndarray) -> None:
    """out[server] += its ``values``, in order (``out`` has every server)."""
    if not len(servers):
        return
    order = np.argsort(servers, kind="stable")
    uniq, start, counts = np.unique(servers[order], return_index=True, return_counts=True)
    vals = values[order]
    for s, a, k in zip(uniq.tolist(), start.tolist(), counts.tolist(), strict=True):
        out[s].frombytes(vals[a : a + k].tobytes())
