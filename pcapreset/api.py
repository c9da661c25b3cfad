"""The library API: what the CLI and notebooks call."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .engine import Progress, run
from .report import Report, build


def _paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def analyze(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    port: int | None = None,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Read capture file(s), rebuild connections, classify every reset.

    Raises :class:`pcapreset.errors.PcapResetError` (never anything else on
    bad input).
    """
    res = run(_paths(paths), port=port, progress=progress)
    return build(res, nginx_keepalive_s=nginx_keepalive_s, nginx_from_conf=nginx_from_conf)
