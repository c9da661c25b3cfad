"""fold: which connections the engine can fold, and the row each one folds into.

The per-connection work of eviction, typed when compiled (fold.pxd): the
:class:`~pcapreset.engine.evictor.Evictor`'s sweep asks :func:`split` which
watched connections are over and which of them a
:class:`~pcapreset.engine.rollup.Rollup` can fold (no RST event, no finding,
a round-trip time of its own); :func:`fold_rows` writes their rows (the
columns of :mod:`.summary`) and the votes they cast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..interpret.backends import advertised_timeout, backend_from_headers
from ..interpret.findings import conn_findings, no_finding
from ..interpret.readings import idle_close_gap
from ..interpret.thresholds import MIN_IDLE_CLOSE_S
from ..interpret.vantage import hops
from ..track.conn import Conn
from ..track.flows import FlowTracker
from .summary import CLIENT, GAP, RTT, SERVER, SIG, START, SYN

if TYPE_CHECKING:
    from .rollup import Rollup

_finish_conn = FlowTracker.finish_conn

#: True when this module runs compiled (setup.py: split and fold_rows are typed)
COMPILED: bool = cython.compiled

_NAN = float("nan")

#: hops() of every TTL / hop limit
_HOPS = tuple(hops(t) for t in range(256))


def fold_rows(
    r: Rollup, conns: list[Conn], fa: np.ndarray, ia: np.ndarray, hostless: bool = False
) -> None:
    """Fill the rows ``fa`` / ``ia`` of :meth:`.rollup.Rollup.add_many` (a
    function, so that the compiled build types it)."""
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
        f[k, START] = c.start
        f[k, RTT] = rtt
        f[k, SYN] = syn
        gap = _idle_gap(c, rtt)
        f[k, GAP] = _NAN if gap is None else gap
        i[k, CLIENT] = c.client
        i[k, SERVER] = c.server
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
        i[k, SIG] = last_sid


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
