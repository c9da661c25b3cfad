"""pcapwriter: the ``--write`` file of a live capture, a nanosecond pcap written batch by batch."""

from __future__ import annotations

import os
import struct
from typing import IO

from ..errors import CaptureSourceError
from .outfile import open_output

LINKTYPE_LINUX_SLL2 = 276
SNAPLEN = 65535  # libpcap's compiled filter accepts this many bytes per packet
SLL2_HDR = 20
PCAP_NS_MAGIC = 0xA1B23C4D


class PcapWriter:
    """A nanosecond pcap (LINUX_SLL2, or Ethernet) written batch by batch, flushed each time."""

    def __init__(
        self, path: str, snaplen: int = SNAPLEN, linktype: int = LINKTYPE_LINUX_SLL2
    ) -> None:
        try:
            self._fh: IO[bytes] = open_output(path)  # (closed in close())
        except OSError as e:
            raise CaptureSourceError(f"{path}: cannot write: {e.strerror or e}") from None
        self.path = path
        link_hdr = SLL2_HDR if linktype == LINKTYPE_LINUX_SLL2 else 0
        hdr = struct.pack("<IHHiIII", PCAP_NS_MAGIC, 2, 4, 0, 0, snaplen + link_hdr, linktype)
        self._fh.write(hdr)
        self._fh.flush()

    def write(self, records: bytes | memoryview) -> None:
        self._fh.write(records)
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
