"""The library API: what the CLI and notebooks call."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .capture.instream import is_stream
from .engine import _malloc
from .engine.gcpause import collect_young, paused_gc
from .engine.run import Progress, auto_jobs, run
from .report.build import build
from .report.model import Report


def _paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def streamed(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The inputs that are streams (``-``, pipes, FIFOs): read once, forwards."""
    return [p for p in (str(os.fspath(x)) for x in paths) if is_stream(p)]


def analyze(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    port: int | None = None,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
    progress: Progress | None = None,
    nginx_log: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    nginx_conf: str | os.PathLike | None = None,
    nginx_tz: str | None = None,
    jobs: int = 0,
    pipelined: bool = False,
    evict: bool = True,
) -> Report:
    """Read capture file(s), rebuild connections, classify every reset.

    ``jobs``: processes for connection tracking (0 = automatic: 1 for small
    inputs, up to 4 CPUs for large ones); the result does not depend on it.

    ``evict`` (default): memory stays flat however long the capture, because
    connections that are over and took no part in a reset or finding are
    summarised and dropped as the capture is read; the report is the same,
    but ``rep.result.conns`` holds only the connections kept (the others are
    counted in ``rep.result.rollup``). ``evict=False`` keeps every connection
    (needed for per-connection tables: :func:`pcapreset.load`,
    :meth:`Report.conn_rows`).

    ``nginx_log``: nginx error.log / access.log file(s) to tie to the resets
    (report section ``nginx_log``; error.log times read in ``nginx_tz``, e.g.
    "UTC" or "Europe/Berlin"). ``nginx_conf``: nginx.conf whose upstream
    keepalive_timeout the recommendations use (section ``nginx_conf``).

    Raises :class:`pcapreset.errors.PcapResetError` (never anything else on
    bad input).
    """
    # the nginx modules (zoneinfo, ~5 ms) are imported only when asked for
    logs, conf = None, None
    if nginx_log:
        from .nginx import parse as nginx_parse

        logs = nginx_parse.load(_paths(nginx_log), nginx_tz)
    if nginx_conf is not None:
        from .nginx import conf as nginxconf

        conf = nginxconf.load_conf(nginx_conf)
    ps = _paths(paths)
    with paused_gc():
        return _analyze(
            ps, port, progress, jobs, logs, conf, nginx_keepalive_s, nginx_from_conf, pipelined,
            evict,
        )  # fmt: skip


def _analyze(
    ps, port, progress, jobs, logs, conf, nginx_keepalive_s, nginx_from_conf, pipelined=False,
    evict=False,
) -> Report:  # fmt: skip
    res = run(
        ps,
        port=port,
        progress=progress,
        jobs=jobs if jobs > 0 else auto_jobs(ps),
        pipelined=pipelined,
        evict=evict,
    )
    server_keys = {c.server for c in res.conns}
    if res.rollup is not None:
        server_keys |= res.rollup.server_set
    servers = {res.book.endpoint(k) for k in server_keys}
    ka = conf.keepalive_timeout_s(servers) if conf is not None else None
    if ka is not None and nginx_keepalive_s is None:
        nginx_keepalive_s, nginx_from_conf = ka[0], True
    _malloc.trim()  # what the run freed, before the report allocates its records
    rep = build(res, nginx_keepalive_s=nginx_keepalive_s, nginx_from_conf=nginx_from_conf)
    if conf is not None:
        from .nginx import conf as nginxconf

        rep.tls_upstream = any(
            st.args[:1] and st.args[0].startswith("https://") for st in conf.get("proxy_pass")
        )
        rep.evidence |= conf.evidence()
        rep.extra["nginx_conf"] = conf.as_dict(servers)
        rep.extra.setdefault("_text_lines", []).extend(nginxconf.text_lines(conf, servers))
    if logs is not None:
        from .nginx import log as nginxlog

        if any("upstream sent too big header" in e.message for e in logs.errors):
            rep.evidence.add("too_big_header")

        nginxlog.attach(rep, logs)
    return rep


def analyze_live(
    iface: str = "any",
    port: int | None = None,
    duration_s: float | None = None,
    write: str | os.PathLike | None = None,
    on_reset: Callable[[dict], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    bpf_filter: str | None = None,
    verdict_delay_s: float = 0.5,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """Capture on ``iface`` until Ctrl-C / SIGTERM / ``duration_s``; classify every reset.

    ``on_reset`` gets each reset (as in the JSON report) once its verdict is
    the final report's (:class:`pcapreset.report.stream.VerdictStream`: when
    its connection is over and nothing still to come can change it, at the
    earliest ``verdict_delay_s`` after it; the others when the capture stops);
    ``write`` also saves the packets as a pcap. Raises
    :class:`pcapreset.errors.CaptureSourceError` when capturing is not possible.
    """
    from .capture.live import LiveCapture
    from .capture.stopflag import StopFlag
    from .engine.evictor import EVICT_SLACK_S
    from .engine.run import run_batches
    from .report.stream import VerdictStream

    cap = LiveCapture(iface, port, bpf_filter, os.fspath(write) if write else None)
    flag = StopFlag()
    stream = VerdictStream(
        on_reset or (lambda _r: None), delay_s=verdict_delay_s, over_slack_s=EVICT_SLACK_S
    )

    def stop() -> bool:
        return flag() or (should_stop is not None and should_stop())

    def on_batch(ft, dec, rollup) -> None:
        stream.tick(ft, dec, rollup)
        collect_young()

    flag.install()
    try:
        if on_ready is not None:
            on_ready()
        with paused_gc():
            res = run_batches(
                cap.batches(stop, duration_s), [cap.info], port, on_rst=stream.on_rst,
                on_batch=on_batch,
            )  # fmt: skip
            stream.flush()  # the resets whose verdict needed the whole capture
    finally:
        flag.restore()
        cap.close()
    if flag.signal:
        cap.stats.stop_reason = flag.signal
    res.live = cap.report()
    with paused_gc():
        return build(res)
