"""Two calls into glibc's malloc (mallopt(3), malloc_trim(3)); elsewhere they
do nothing.

A long capture's analysis allocates arrays over every connection at its end
(ranks, per-server tables) and records for every reset, after hundreds of
MB of batches went through the heap. glibc returns freed heap memory to the
system only from the top of the heap, so blocks freed below long-lived
objects stay resident.
"""

from __future__ import annotations

#: mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():  # type: ignore[no-untyped-def]
    import ctypes

    return ctypes.CDLL(None)


def fix_thresholds(mmap_size: int = 64 << 20, trim_size: int = 8 << 20) -> None:
    """Fixed mmap and trim thresholds for a one-shot process (the CLI).

    glibc's defaults move: each large block freed raises the mmap threshold
    to its size (up to 32 MB) and the trim threshold to twice that. Fixed:
    blocks below ``mmap_size`` (a reader's 4 MiB chunks included) always
    come from the heap and are reused, and the heap's free top goes back to
    the system beyond ``trim_size``. Measured on the 10M bench capture: half
    the page faults of the defaults (37-39k vs 69-74k). A low mmap threshold
    (1 MiB) was tried and measured worse: every pcapng or gzip chunk became a
    new mapping (215k page faults on the 1M pcapng, 0.52 -> 0.87 s).
    """
    try:
        libc = _libc()
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_size)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_size)
    except (OSError, AttributeError):
        pass


def trim() -> None:
    """Give the free pages anywhere in the heap back to the system (between
    the run and the report: ~4 MB less peak on the 10M bench capture)."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass
