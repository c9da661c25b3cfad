"""hosts: each host's stack as its packets in the capture show it.

Before any single RST is judged, :func:`host_bases` learns every host's
baseline from its packets in all the connections the report keeps: the TTLs
its non-RST packets arrive with, its IP ID behaviour (a counter, zero, or
random) and the IP IDs of its own RSTs. ``middlebox`` needs evidence against
this baseline (:mod:`pcapreset.interpret.evidence`): a value the host's own
stack produces elsewhere in the capture is no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..track.conn import Conn
from .vantage import hops

#: a host's IP IDs are "random" when at least this share of its packet-to-packet
#: steps are jumps (> flows.IPID_STEP_MAX), "counter" when at most IPID_COUNTER_JUMPS
IPID_RANDOM_SHARE = 0.3
IPID_COUNTER_JUMPS = 0.05
#: TTLs this low are set on purpose (eBGP's TTL 1, GTSM): no hop count can be read
ODD_TTL_MAX = 2


@dataclass
class HostBase:
    """One host's stack as its packets in the capture show it: every TTL its
    non-RST packets arrive with, its IP ID behaviour, and its RSTs' IP IDs."""

    ttls: dict[int, int] = field(default_factory=dict)
    ipid_zero: int = 0
    ipid_steps: int = 0
    ipid_jumps: int = 0
    #: its RST packets with IP ID 0 and with another IP ID (IPv4)
    rst_zero: int = 0
    rst_nonzero: int = 0
    #: connections it took part in
    conns: int = 0

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
        for t, n in other.ttls.items():
            self.ttls[t] = self.ttls.get(t, 0) + n
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
    for c in conns:
        for host, d, is_client in ((c.client >> 16, c.c, True), (c.server >> 16, c.s, False)):
            hb = into.get(host)
            if hb is None:
                hb = into[host] = HostBase()
            hb.conns += 1
            for t, n in d.ttls.items():
                hb.ttls[t] = hb.ttls.get(t, 0) + n
            hb.ipid_zero += d.ipid_zero
            hb.ipid_steps += d.ipid_steps
            hb.ipid_jumps += d.ipid_jumps
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
