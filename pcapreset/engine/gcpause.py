"""gcpause: the one place that pauses Python's cyclic garbage collector.

The flow tracker allocates many small long-lived objects (connections, their
directions, exchanges, RST events); the cyclic GC would rescan them again and
again (~10-15 % of a run) while nothing in a run builds garbage cycles that
need collecting before it ends: reference counting frees the rest.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while connections are built and reported (then as before)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def no_gc_in_this_process() -> None:
    """Turn the cyclic GC off for good: for a process that ends with its job
    (the CLI, a shard worker, the reader child), where it would only rescan
    the connection graph before exit."""
    gc.disable()


def collect_young() -> None:
    """Collect the youngest generation now, collector paused or not: for a
    live capture, which runs for hours with it paused. Garbage cycles made
    since the last call (a verdict stream's look at the capture) are freed;
    the objects that survive move on and are not scanned again."""
    gc.collect(0)
