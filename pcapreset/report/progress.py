"""progress: the reading progress line on a terminal's stderr."""

from __future__ import annotations

import sys
import time


class TerminalProgress:
    """Progress on stderr when it is a terminal (and not --quiet): the share
    of the input read, packets and packets/s, at most every 0.2 s; a
    ``progress`` callback of :func:`pcapreset.analyze`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False
        self._t0 = time.monotonic()  # (made as the run starts)
        self._last = float("-inf")

    def __call__(self, done: int, total: int, packets: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        took = now - self._t0
        # (no rate from the first instants: the first batch alone would read
        # as billions of packets a second)
        rate = f" ({packets / took:,.0f}/s)" if took >= 0.1 else ""
        pct = f"{100 * done / total:5.1f}%" if total else ""
        sys.stderr.write(f"\r  reading {pct} {packets:,} packets{rate}   ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        """Clear the line (if one was shown)."""
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
