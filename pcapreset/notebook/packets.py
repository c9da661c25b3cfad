"""packets: one connection's packets as a table, read again from the capture files.

Only per-connection state is kept from the main pass; :func:`packets_frame`
re-reads the capture for the packets of one connection when asked
(:meth:`pcapreset.notebook.frames.Analysis.packets`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from ..capture.decode import Decoder
from ..capture.instream import display_name, is_stream
from ..capture.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpBatch
from ..capture.timeline import decoded_timeline, open_readers
from ..errors import PcapResetError
from ..report.model import Report, require_all_conns
from .dtypes import DIRECTIONS, _cat, _utc

M32 = 0xFFFFFFFF


def _flag_text(flags: int) -> str:
    """tcpdump's flag letters: S F R P U E W, '.' for ACK."""
    out = "".join(
        ch
        for bit, ch in (
            (SYN, "S"),
            (FIN, "F"),
            (RST, "R"),
            (PSH, "P"),
            (URG, "U"),
            (ECE, "E"),
            (CWR, "W"),
        )
        if flags & bit
    )
    return out + "." if flags & ACK else out or "none"


def _conn_batches(
    paths: Sequence[str], dec: Decoder, keys: tuple[int, int], skip: int, count: int
) -> Iterator[TcpBatch]:
    """Packets ``skip`` .. ``skip + count`` of the 4-tuple ``keys``, in engine order.

    The engine gives every packet of a 4-tuple to its current incarnation, and
    incarnations follow each other in stream order; so one connection is a
    contiguous run of its 4-tuple's packets. Selecting by position (not by
    time) is exact even when timestamps go backwards. Reading stops early.
    """
    a, b = keys
    readers = open_readers(paths)
    seen = 0
    try:
        for tb in decoded_timeline(readers, dec):
            idx = np.nonzero(((tb.src == a) & (tb.dst == b)) | ((tb.src == b) & (tb.dst == a)))[0]
            lo, hi = max(skip - seen, 0), min(skip + count - seen, len(idx))
            seen += len(idx)
            if lo < hi:
                yield tb.take(idx[lo:hi])
            if seen >= skip + count:
                return
    finally:
        for r in readers:
            r.close()


def _position(rep: Report, conn_id: int) -> tuple[int, int]:
    """(packets of earlier incarnations of the same 4-tuple, packets of this one)."""
    c = rep.result.conns[conn_id]
    pair = {c.client, c.server}
    before = sum(
        o.packets
        for o in rep.result.conns[:conn_id]
        if o.client in pair and {o.client, o.server} == pair
    )
    return before, c.packets


def _relative(seq: np.ndarray, base: int | None) -> np.ndarray:
    """Sequence numbers relative to ``base``, signed (wrap-around safe)."""
    if base is None:
        return np.zeros(len(seq), dtype="int64")
    rel = (seq - base) & M32
    return np.where(rel >= 1 << 31, rel - (1 << 32), rel)


def _isn_or_first(seq: np.ndarray, flags: np.ndarray, mask: np.ndarray) -> int | None:
    syn = mask & ((flags & SYN) != 0)
    if syn.any():
        return int(seq[np.argmax(syn)])
    if mask.any():
        return int(seq[np.argmax(mask)])
    return None


def packets_frame(paths: Sequence[str], rep: Report, conn_id: int) -> pd.DataFrame:
    """Re-read ``paths`` and return connection ``conn_id``'s packets."""
    require_all_conns(rep.result)
    conns = rep.result.conns
    if not 0 <= conn_id < len(conns) or conns[conn_id].id != conn_id:
        raise PcapResetError(f"no connection with id {conn_id} (0..{len(conns) - 1})")
    c = conns[conn_id]
    streams = [p for p in paths if is_stream(p)]
    if streams:
        raise PcapResetError(
            f"{display_name(streams[0])} was read as a stream: its packets cannot be read "
            "again (save it to a file)"
        )
    dec = Decoder(rep.result.book)  # same address ids as the main pass
    parts = list(_conn_batches(paths, dec, (c.client, c.server), *_position(rep, conn_id)))
    cols = {
        f: np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0, "int64")
        for f in (
            "ts",
            "src",
            "seq",
            "ack",
            "flags",
            "win",
            "plen",
            "pcap",
            "ttl",
            "ipid",
            "optlen",
            "frame",
        )
    }
    ts = cols["ts"].astype("float64")
    from_client = cols["src"] == c.client
    seq, ack, flags = cols["seq"], cols["ack"], cols["flags"]
    base_c = _isn_or_first(seq, flags, from_client)
    base_s = _isn_or_first(seq, flags, ~from_client)
    rel_seq = np.where(from_client, _relative(seq, base_c), _relative(seq, base_s))
    # an ACK number lives in the peer's sequence space
    rel_ack = np.where(from_client, _relative(ack, base_s), _relative(ack, base_c)).astype(float)
    rel_ack[(flags & ACK) == 0] = np.nan
    file_idx = cols["frame"] >> 40
    return pd.DataFrame(
        {
            "ts": _utc(ts),
            "rel_time_s": ts - c.start,
            "direction": _cat(np.where(from_client, "client", "server"), DIRECTIONS),
            "flags": pd.array([_flag_text(int(f)) for f in flags], dtype="string"),
            "tcp_flags": flags.astype("int16"),
            "seq": seq,
            "ack": ack,
            "rel_seq": rel_seq,
            "rel_ack": rel_ack,
            "payload_bytes": cols["plen"],
            "captured_payload_bytes": cols["pcap"],
            "window": cols["win"],
            "ttl": cols["ttl"].astype("int16"),
            "ip_id": cols["ipid"],
            "tcp_options_bytes": cols["optlen"].astype("int16"),
            "file": pd.array([paths[i] for i in file_idx], dtype="string"),
            "frame_no": cols["frame"] & ((1 << 40) - 1),
        }
    )
