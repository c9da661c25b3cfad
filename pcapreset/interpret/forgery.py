"""forgery: does the RST fit the claimed sender's own stack?

Facts that tell a RST a middlebox forged from one the host sent itself
(Weaver, Sommer and Paxson, "Detecting Forged TCP Reset Packets", NDSS 2009):
its TTL against the TTLs the sender's packets arrive with, its IP ID against
the sender's counter, the other end's counter and the host's other RSTs, the
sender's packets after it, and its sequence number against the sender's
sequence space.
"""

from __future__ import annotations

from ..track.conn import Conn, RstEvent
from .context import Context
from .fact import FactSink
from .hosts import ODD_TTL_MAX
from .thresholds import INSTANT_S
from .vantage import hops

#: an RST IP ID this close to the other end's counter was copied from its segment
PEER_IPID_NEAR = 16


def forgery_facts(f: FactSink, conn: Conn, ev: RstEvent, ctx: Context) -> None:
    """Does the RST fit the claimed sender's own stack (Weaver/Sommer/Paxson)?

    Judged against the sender's baseline (:class:`HostBase`): the TTLs its
    packets arrive with in this flow and in its other flows, its IP ID
    behaviour and the IP IDs of its other RSTs. A value the host's stack also
    produces elsewhere is no evidence; nor is any TTL when the host's packets
    carry TTL 1-2 (set on purpose, as eBGP speakers do: no distance to
    compare). TTLs within the flow are compared, so a capture on either host
    (where one side arrives un-decremented) is no evidence by itself.
    """
    p0 = ev.packets[0]
    sender = conn.c if ev.from_client else conn.s
    host = (conn.client if ev.from_client else conn.server) >> 16
    hb = ctx.hosts.get(host)
    host_ttls = hb.ttls if hb is not None else {}
    others = sender.ttls
    rst_hops = hops(p0.ttl)
    if others:
        seen = "/".join(str(t) for t in sorted(others))
        flow_hops = {hops(t) for t in others if t > ODD_TTL_MAX}
        if p0.ttl in others:
            f.add("ttl_consistent", f"RST TTL {p0.ttl} matches the sender's other packets")
        elif p0.ttl in host_ttls:
            f.add(
                "ttl_consistent",
                f"RST TTL {p0.ttl} differs from the sender's packets in this flow ({seen}) but "
                "is one its packets in other connections arrive with",
            )
        elif p0.ttl <= ODD_TTL_MAX or not flow_hops:
            f.add(
                "ttl_family_differs",
                f"RST TTL {p0.ttl} differs from the sender's other packets ({seen}), which "
                "are set on purpose (TTL 1-2, as eBGP and GTSM do): no distance to compare",
            )
        else:
            f.add(
                "ttl_mismatch",
                f"RST TTL {p0.ttl} ({rst_hops} hop(s) below its initial TTL) differs from "
                f"every TTL of the sender's packets ({seen}) in this and its other flows: "
                "another stack sent it",
            )
    elif hb is not None and hb.hop_counts() and p0.ttl > ODD_TTL_MAX:
        if p0.ttl in host_ttls or rst_hops in hb.hop_counts():
            f.add("ttl_consistent", f"RST TTL {p0.ttl} fits this host's packets in other flows")
        else:
            usual = "/".join(str(h) for h in sorted(hb.hop_counts()))
            f.add(
                "ttl_mismatch_host",
                f"RST arrives {rst_hops} hop(s) below its initial TTL; this host's packets "
                f"in other connections arrive {usual} hop(s) below",
            )
    before = ev.sender_ipid if ev.sender_ipid > 0 else sender.ipid_last
    if p0.ipid > 0 and before > 0:
        gap = (p0.ipid - before) & 0xFFFF
        if gap > 1024:
            f.add(
                "ipid_jump",
                f"RST IP ID {p0.ipid} far from the sender's sequence ({before}); no evidence alone",
            )
            kind = hb.ipid_kind() if hb is not None else "unknown"
            if kind == "counter" and hb is not None and hb.rst_zero:
                # the host's packets count up and its other RSTs carry IP ID 0
                # (Linux: the socket's counter for its own RST, 0 for the
                # kernel's stateless one): a far-off non-zero ID is neither
                f.add(
                    "rst_shape_mismatch",
                    f"RST IP ID {p0.ipid} is neither 0, as this host's {hb.rst_zero} other "
                    f"RST(s) in the capture, nor near its packets' counter "
                    f"({sender.ipid_last}): not this host's stack",
                )
    if (
        "ipid_jump" in f
        and ev.sender_ipid > 0
        and ev.peer_ipid > 0
        and min((p0.ipid - ev.peer_ipid) & 0xFFFF, (ev.peer_ipid - p0.ipid) & 0xFFFF)
        <= PEER_IPID_NEAR
    ):
        # an injector that builds its RST from the segment it intercepted
        # copies that segment's IP ID: the other end's counter, not the sender's
        f.add(
            "rst_ipid_of_peer",
            f"RST IP ID {p0.ipid} is the other end's counter ({ev.peer_ipid}), not the "
            f"claimed sender's ({before}): built from an intercepted segment",
        )
    after = sender.ipid_last
    if (
        ev.sender_data_after
        and p0.ipid > 0
        and after > 0
        and hb is not None
        and hb.ipid_kind() == "counter"
        and ((after - p0.ipid) & 0xFFFF) > 1024
        and ((p0.ipid - after) & 0xFFFF) > 1024
    ):
        # the sender kept sending after the RST, its IP ID counter running
        # on to `after`: had it sent the RST, `after` would be a few steps
        # past the RST's IP ID
        f.add(
            "ipid_counter_skips_rst",
            f"the sender's IP ID counter runs on to {after} after the RST (IP ID {p0.ipid}), "
            "not from it: the RST is not in its sequence",
        )
    dirs = {p.from_client for p in ev.packets if p.ts - ev.ts <= INSTANT_S}
    if len(dirs) == 2:
        f.add("rst_both_directions", "RSTs went towards both ends in the same instant")
    if ev.sender_data_after:
        f.add(
            "sender_data_after_rst",
            f"the 'resetting' side sent {ev.sender_data_after} data packet(s) after the RST",
        )
    if p0.in_window is False:
        f.add("rst_out_of_window", "RST sequence number is outside the sender's sequence space")
