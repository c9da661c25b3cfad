"""timeline: capture files opened, decoded, and merged into one timeline."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import CaptureError
from .decode import Decoder
from .sources import CaptureReader
from .tcp import SUPPORTED_LINKTYPES, TcpBatch, concat, linktype_name


def open_readers(paths: Sequence[str]) -> list[CaptureReader]:
    if not paths:
        raise CaptureError("no capture file given")
    readers = []
    try:
        for i, p in enumerate(paths):
            r = CaptureReader(os.fspath(p), file_index=i)
            readers.append(r)
            lts = r.info.linktypes
            if r.info.file_format.startswith("pcap") and r.info.file_format != "pcapng":
                if lts and lts[0] not in SUPPORTED_LINKTYPES:
                    raise CaptureError(
                        f"{p}: unsupported link type {linktype_name(lts[0])}; "
                        "pcapreset reads Ethernet, Linux cooked (SLL/SLL2), raw IP and BSD loopback"
                    )
    except BaseException:
        for r in readers:
            r.close()
        raise
    return readers


def probe_inputs(paths: Sequence[str]) -> int:
    """Open every input once, so bad input fails fast with the usual one-line
    error before any worker process starts; returns their total size in bytes."""
    readers = open_readers(paths)
    total = sum(r.size for r in readers)
    for r in readers:
        r.close()
    return total


def decoded_timeline(readers: list[CaptureReader], dec: Decoder) -> Iterator[TcpBatch]:
    """Every reader's frames, decoded, merged into one timeline."""
    return merge_by_time([_decoded(r, dec) for r in readers])


def _decoded(reader: CaptureReader, dec: Decoder) -> Iterator[TcpBatch]:
    for fb in reader.batches():
        yield dec.decode(fb)


def merge_by_time(streams: list[Iterator[TcpBatch]]) -> Iterator[TcpBatch]:
    """Merge per-file batch streams into one timeline (watermark merge).

    Files that do not overlap in time (rotated sets) pass through unsorted;
    overlapping ones are interleaved by timestamp, batch by batch.
    """
    if len(streams) == 1:
        yield from streams[0]
        return
    pending: list[TcpBatch | None] = []

    def pull(it: Iterator[TcpBatch]) -> TcpBatch | None:
        for b in it:
            if len(b):
                return b
        return None

    pending = [pull(s) for s in streams]
    while True:
        live = [i for i, b in enumerate(pending) if b is not None]
        if not live:
            return
        wm = min(float(pending[i].ts.max()) for i in live)  # type: ignore[union-attr]
        parts = []
        for i in live:
            b = pending[i]
            assert b is not None
            m = b.ts <= wm
            if m.all():
                parts.append(b)
                pending[i] = pull(streams[i])
            elif m.any():
                parts.append(b.take(np.nonzero(m)[0]))
                pending[i] = b.take(np.nonzero(~m)[0])
        if not parts:
            continue
        if len(parts) == 1:
            yield parts[0]
            continue
        merged = concat(parts)
        order = np.argsort(merged.ts, kind="stable")
        yield merged.take(order)
