"""textsafe: what the text outputs may print of untrusted values.

Capture data (HTTP headers, server names), nginx logs and nginx.conf are
written by others; printed raw, their control characters would reach the
user's terminal (ESC sequences that clear the screen, set the window title,
or plant OSC 8 links). :func:`clean` makes any string printable; :func:`utc`
formats a capture time that may lie beyond what the platform's ``time_t``
or the calendar holds (a damaged record).
"""

from __future__ import annotations

import re
import time

#: C0 and C1 controls and DEL (tab included: a report line's layout is ours)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}"


def clean(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


def utc(fmt: str, ts: float) -> str:
    """``time.strftime(fmt)`` of epoch seconds ``ts`` in UTC, or ``@<ts>``
    when no calendar date fits (beyond time_t or year 9999, NaN)."""
    try:
        return time.strftime(fmt, time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"@{ts:.0f}" if ts == ts else "@?"
