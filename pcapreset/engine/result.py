"""result: a run's :class:`~pcapreset.report.result.EngineResult` assembled.

The connections in report order with their ids, the capture's span, the
reader's and decoder's warnings, and the rollup of the connections summarised.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..capture.sources import SourceInfo
from ..capture.tcp import AddressBook, DecodeStats, linktype_name
from ..errors import CaptureError
from ..interpret.vantage import conn_order
from ..report.result import EngineResult
from ..track.conn import Conn
from .evictor import ATTEMPT_CAP, EVICT_SLACK_S
from .rollup import Rollup

#: Called as progress(bytes_done, bytes_total, packets_done)
Progress = Callable[[int, int, int], None]


def order_conns(conns: list[Conn], rollup: Rollup | None = None) -> list[Conn]:
    """Deterministic order and ids: by start time, then endpoints.

    With ``rollup``, the ids are the ranks among all connections, the evicted
    ones included: what they would be without eviction.
    """
    conns.sort(key=conn_order)
    if rollup is None or not (rollup.count or rollup.packed):
        for i, c in enumerate(conns):
            c.id = i
    else:
        for c, rank in zip(conns, rollup.ranks(conns), strict=True):
            c.id = rank
    return conns


def assemble(
    conns: list[Conn],
    st: DecodeStats,
    book: AddressBook,
    infos: list[SourceInfo],
    port: int | None,
    rollup: Rollup | None = None,
) -> EngineResult:
    conns = order_conns(conns, rollup)
    res = EngineResult(
        sources=infos,
        decode=st,
        conns=conns,
        book=book,
        port=port,
        packets=st.frames,
        rollup=rollup,
    )
    firsts = [i.first_ts for i in infos if i.first_ts is not None]
    lasts = [i.last_ts for i in infos if i.last_ts is not None]
    res.first_ts = min(firsts) if firsts else None
    res.last_ts = max(lasts) if lasts else None
    res.warnings = collect_warnings(infos, st, book)
    if rollup is not None and rollup.attempts:
        res.warnings.append(
            {
                "kind": "attempts_summarised",
                "count": rollup.attempts,
                "message": f"{rollup.attempts} connection attempts that never completed "
                f"(SYNs, SYN-ACKs, nothing else) were summarised beyond {ATTEMPT_CAP} open "
                "at once (a SYN flood): counted in the flows, not kept one by one, and "
                "they cast no per-host TTL vote",
            }
        )
    if rollup is not None and rollup.late:
        res.warnings.append(
            {
                "kind": "late_packets",
                "count": rollup.late,
                "message": f"{rollup.late} connections begin with a packet older than the end "
                "of connections already summarised (the capture's clock went back by more "
                f"than {EVICT_SLACK_S:g} s): any of them may be a late packet of a "
                "summarised connection, counted as a connection of its own",
            }
        )
    if st.frames == 0 and all(not i.warnings for i in infos):
        pass  # an empty but valid capture: the report says "0 packets"
    unsupported_only = st.frames > 0 and sum(st.unsupported.values()) == st.frames
    if unsupported_only:
        lts = ", ".join(linktype_name(lt) for lt in sorted(st.unsupported))
        raise CaptureError(
            f"no packet could be decoded: unsupported link type {lts}; pcapreset reads "
            "Ethernet, Linux cooked (SLL/SLL2), raw IP and BSD loopback"
        )
    return res


def collect_warnings(
    infos: list[SourceInfo], st: DecodeStats, book: AddressBook | None = None
) -> list[dict]:
    """Reader and decoder warnings, each with a count.

    Packet accounting (checked on every corpus file by tests/test_corpus.py)::

        capture.packets == tcp_packets + other_packets
                           + undecodable + unsupported_linktype + ip_fragments

    ``capture.packets`` is what reached the decoder. Records the reader drops
    before that (pcapng ``undefined_interface``, ``damaged_blocks``) and skipped
    bytes (``damaged_bytes``, ``truncated_record``) have warnings of their own.
    """
    out: list[dict] = []
    multi = len(infos) > 1
    for info in infos:
        for kind, (count, msg) in info.warnings.items():
            prefix = f"{os.path.basename(info.path)}: " if multi else ""
            out.append({"kind": kind, "count": int(count), "message": f"{prefix}{count} {msg}"})
    for reason, count in sorted(st.undecodable.items()):
        out.append(
            {
                "kind": "undecodable",
                "count": count,
                "message": f"{count} packets skipped, undecodable: {reason}",
            }
        )
    for lt, count in sorted(st.unsupported.items()):
        out.append(
            {
                "kind": "unsupported_linktype",
                "count": count,
                "message": f"{count} packets on unsupported link type {linktype_name(lt)} skipped",
            }
        )
    if st.tunnels:
        kinds = ", ".join(f"{name} {n}" for name, n in sorted(st.tunnels.items()))
        total = sum(st.tunnels.values())
        out.append(
            {
                "kind": "decapsulated",
                "count": total,
                "message": f"{total} tunnelled packets opened ({kinds}): "
                "the analysis uses their inner IP/TCP headers",
            }
        )
    if st.copies or st.translated:
        out.append(captured_twice(st, book or AddressBook()))
    if st.ip_fragments:
        out.append(
            {
                "kind": "ip_fragments",
                "count": st.ip_fragments,
                "message": f"{st.ip_fragments} non-first IP fragments counted, not reassembled",
            }
        )
    if st.snap_truncated:
        out.append(
            {
                "kind": "snaplen_truncated",
                "count": st.snap_truncated,
                "message": f"{st.snap_truncated} TCP packets cut by the snaplen "
                "(headers kept, payload partly missing; still analysed)",
            }
        )
    return out


def captured_twice(st: DecodeStats, book: AddressBook) -> dict:
    """The warning for packets captured twice (pcapreset.capture.dedup), naming
    the address translations seen (the most frequent first)."""
    n = st.copies + st.translated
    msg = (
        f"{n} TCP packets captured twice (same IP ID, sequence numbers, flags and payload "
        "within 1 ms: several interfaces, a bridge or a mirror port), analysed once"
    )
    if st.translated:
        pairs = sorted(st.translated_pairs.items(), key=lambda kv: -kv[1])[:3]
        seen = ", ".join(f"{book.endpoint(a)} (= {book.endpoint(b)})" for (a, b), _ in pairs)
        msg += (
            f"; {st.translated} of them before and after address translation (NAT), "
            f"analysed with the addresses outside it: {seen}"
        )
    return {"kind": "captured_twice", "count": n, "message": msg}
