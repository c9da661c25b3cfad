"""lifetime: a forked worker ends with the process that started it.

A worker forked by multiprocessing holds copies of every pipe end its parent
had, its own pipes' included, so when the parent is killed (SIGKILL, or
SIGTERM, whose default action skips every ``finally``) a worker blocked on a
pipe never sees end-of-file and would live on, holding the input open.
:func:`die_with_parent` asks Linux to send it SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing, and the worker
still ends once it reads end-of-file from pipes whose other copies are
closed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a forked child of process ``parent``: be killed when it dies, or
    exit now if it has died already (between the fork and this call)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)
