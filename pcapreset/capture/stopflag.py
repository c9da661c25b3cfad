"""stopflag: stop a live capture on SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGINT / SIGTERM while installed (main thread only), or by hand."""

    def __init__(self) -> None:
        self.stop = False
        self.signal: str | None = None
        self._old: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.stop

    def _handler(self, signum: int, _frame: object) -> None:
        self.stop = True
        self.signal = signal.Signals(signum).name

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
