"""hosts: each host's stack as its packets in the capture show it.

Before any single RST is judged, :func:`host_bases` learns every host's
baseline from its packets in all the connections the report keeps: the TTLs
its non-RST packets arrive with, its IP ID behaviour (a counter, zero, or
random) and the IP IDs of its own RSTs. ``middlebox`` needs evidence against
this baseline (:mod:`pcapreset.interpret.evidence`): a value the host's own
stack produces elsewhere in the capture is no evidence.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # no Cython installed: plain Python
    from .. import _nocython as cython  # type: ignore[no-redef]

from ..track.conn import Conn, Dir
from .vantage import hops

#: True when this module runs compiled (setup.py: HostBase a C struct, add_host_bases typed)
COMPILED: bool = cython.compiled

#: a host's IP IDs are "random" when at least this share of its packet-to-packet
#: steps are jumps (> flows.IPID_STEP_MAX), "counter" when at most IPID_COUNTER_JUMPS
IPID_RANDOM_SHARE = 0.3
IPID_COUNTER_JUMPS = 0.05
#: TTLs this low are set on purpose (eBGP's TTL 1, GTSM): no hop count can be read
ODD_TTL_MAX = 2


class HostBase:
    """One host's stack as its packets in the capture show it: every TTL its
    non-RST packets arrive with, its IP ID behaviour, and its RSTs' IP IDs.

    A C struct when compiled (hosts.pxd): the engine counts every connection
    it folds into one (:func:`add_host_bases`)."""

    def __init__(
        self,
        ttls: dict[int, int] | None = None,
        ipid_zero: int = 0,
        ipid_steps: int = 0,
        ipid_jumps: int = 0,
        rst_zero: int = 0,
        rst_nonzero: int = 0,
        conns: int = 0,
    ) -> None:
        self.ttls: dict[int, int] = {} if ttls is None else ttls
        self.ipid_zero = ipid_zero
        self.ipid_steps = ipid_steps
        self.ipid_jumps = ipid_jumps
        #: its RST packets with IP ID 0 and with another IP ID (IPv4)
        self.rst_zero = rst_zero
        self.rst_nonzero = rst_nonzero
        #: connections it took part in
        self.conns = conns

    def _fields(self) -> tuple:
        return (
            self.ttls, self.ipid_zero, self.ipid_steps, self.ipid_jumps, self.rst_zero,
            self.rst_nonzero, self.conns,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostBase):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"HostBase(ttls={self.ttls!r}, ipid_zero={self.ipid_zero}, "
            f"ipid_steps={self.ipid_steps}, ipid_jumps={self.ipid_jumps}, "
            f"rst_zero={self.rst_zero}, rst_nonzero={self.rst_nonzero}, conns={self.conns})"
        )

    def __reduce__(self) -> tuple:
        return (HostBase, self._fields())

    def hop_counts(self) -> set[int]:
        return {hops(t) for t in self.ttls if t > ODD_TTL_MAX}

    def ipid_kind(self) -> str:
        """ "zero", "counter" (per-connection or global), "random" or "unknown"."""
        moves = self.ipid_steps + self.ipid_jumps
        total = moves + self.ipid_zero
        if total < 4:
            return "unknown"
        if self.ipid_zero >= 0.8 * total:
            return "zero"
        if moves and self.ipid_jumps >= IPID_RANDOM_SHARE * moves:
            return "random"
        if moves >= 3 and self.ipid_jumps <= IPID_COUNTER_JUMPS * moves:
            return "counter"
        return "unknown"

    def merge(self, other: HostBase) -> None:
        ttls = self.ttls
        for t, n in other.ttls.items():
            ttls[t] = ttls.get(t, 0) + n
        self.ipid_zero += other.ipid_zero
        self.ipid_steps += other.ipid_steps
        self.ipid_jumps += other.ipid_jumps
        self.rst_zero += other.rst_zero
        self.rst_nonzero += other.rst_nonzero
        self.conns += other.conns


def add_host_bases(conns: list[Conn], into: dict[int, HostBase]) -> None:
    """Count ``conns`` into the host baselines ``into`` (host addr id ->
    :class:`HostBase`): sums, so the order connections come in does not matter
    (the engine counts evicted and packed ones as it drops them)."""
    # the last two hosts' baselines: a connection's hosts are most often the last one's
    last_a = last_b = -1
    hb_a = hb_b = None
    for k in range(len(conns)):
        c = conns[k]
        for side in range(2):
            if side == 0:
                host, d, is_client = c.client >> 16, c.c, True
            else:
                host, d, is_client = c.server >> 16, c.s, False
            if host == last_a and hb_a is not None:
                hb = hb_a
            elif host == last_b and hb_b is not None:
                hb = hb_b
            else:
                known = into.get(host)
                if known is None:
                    known = into[host] = HostBase()
                hb = known
                last_b, hb_b = last_a, hb_a
                last_a, hb_a = host, hb
            _add_dir(hb, d)
            if c.rst_events:
                _add_rsts(hb, c, is_client)


def _add_dir(hb: HostBase, d: Dir) -> None:
    hb.conns += 1
    ttls = hb.ttls
    for t, n in d.ttls.items():
        ttls[t] = ttls.get(t, 0) + n
    hb.ipid_zero += d.ipid_zero
    hb.ipid_steps += d.ipid_steps
    hb.ipid_jumps += d.ipid_jumps


def _add_rsts(hb: HostBase, c: Conn, is_client: bool) -> None:
    for ev in c.rst_events:
        for p in ev.packets:
            if p.from_client == is_client and p.ipid >= 0:
                if p.ipid == 0:
                    hb.rst_zero += 1
                else:
                    hb.rst_nonzero += 1


def merge_host_bases(into: dict[int, HostBase], other: dict[int, HostBase]) -> None:
    for host, hb in other.items():
        mine = into.get(host)
        if mine is None:
            mine = into[host] = HostBase()
        mine.merge(hb)


def host_bases(conns: list[Conn], *counted: dict[int, HostBase]) -> dict[int, HostBase]:
    """Host (addr id) -> :class:`HostBase`, over ``conns`` plus the baselines
    already ``counted`` (of connections no longer held one by one)."""
    out: dict[int, HostBase] = {}
    for known in counted:
        merge_host_bases(out, known)
    add_host_bases(conns, out)
    return out
