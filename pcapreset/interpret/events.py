"""events: a connection's RST events, one per source.

The flow tracker groups the RSTs of a connection that no data separates into
one event; those towards each end, and within one direction those with
another TTL (the host's own RST and a device's in its name), came from
different stacks and are resets of their own.
"""

from __future__ import annotations

from ..track.conn import Conn, RstEvent

#: RstEvent fields that name the sender and its peer
_SWAP = (
    ("sender_data_after", "peer_data_after"),
    ("sender_fin_before", "peer_fin_before"),
    ("sender_ipid", "peer_ipid"),
)


def split_by_source(c: Conn) -> list[RstEvent]:
    """The connection's RST events, an event split by where its RSTs came
    from: each direction, and within one direction each TTL (the host's own
    RST and a device's in its name), is a reset of its own."""
    out: list[RstEvent] = []
    extra = len(c.rst_events) + 1
    for ev in c.rst_events:
        first = ev.packets[0]
        if all(p.from_client == first.from_client and p.ttl == first.ttl for p in ev.packets):
            out.append(ev)
            continue
        sources: dict[tuple[bool, int], list] = {}
        for p in ev.packets:
            sources.setdefault((p.from_client, p.ttl), []).append(p)
        for k, pkts in enumerate(sorted(sources.values(), key=lambda ps: ps[0].ts)):
            part = RstEvent(c, pkts[0])
            for name in RstEvent.__slots__:
                if name not in ("packets", "ts", "index", "from_client"):
                    setattr(part, name, getattr(ev, name))
            if part.from_client != ev.from_client:
                # the other end's RST: its sender is the event's peer, and the
                # event's first RST came just before it
                for a, b in _SWAP:
                    setattr(part, a, getattr(ev, b))
                    setattr(part, b, getattr(ev, a))
                part.prev_pkt_from_peer = True
                part.peer_data_after_fin = False
            part.packets = pkts
            part.ts = pkts[0].ts
            # later parts are no follow-up of anything (is_followup: index out of range)
            part.index = ev.index if k == 0 else extra
            extra += 1
            out.append(part)
    return out
