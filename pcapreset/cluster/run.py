"""cluster.run: many hosts' captures analysed on a Dask cluster, one host per task.

    >>> import pcapreset
    >>> fr = pcapreset.fleet(["caps/web1", "caps/web2/backend.pcap*"])
    >>> fr.to_json()["totals"]["by_cause"]
    >>> fr.resets_frame().groupby(["host", "cause"]).size()

A *host* is a directory (every capture file in it, an nginx ``error.log`` beside
them) or a glob / file name of its rotated capture set; ``NAME=SPEC`` names it.
Each host's files are one timeline, analysed by :func:`pcapreset.analyze` on a
Dask worker; the merged report is :class:`pcapreset.cluster.merge.FleetReport`.
Dask and distributed are imported only here (the ``fleet`` extra).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PcapResetError
from .merge import FleetReport

#: first bytes of a capture file or of a compressed one (sources.py reads them)
CAPTURE_MAGICS = (
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a", b"\x1f\x8b", b"BZh", b"\xfd7zXZ",
)  # fmt: skip
#: names that make a file in a host directory a capture whatever its first bytes
CAPTURE_NAME = re.compile(r"\.(pcap|pcapng|cap|dmp)(\d*)(\.(gz|bz2|xz))?\d*$", re.IGNORECASE)
#: nginx error logs beside the captures (rotated: error.log.1)
ERROR_LOG = re.compile(r"^error\.log(\.\d+)?$")
#: seconds to wait for a scheduler given by address
CONNECT_TIMEOUT_S = 10


class FleetError(PcapResetError):
    """The fleet cannot run at all (no Dask, no scheduler, no host given)."""


@dataclass
class Host:
    """One host's capture set: the files read as one timeline."""

    name: str
    spec: str
    files: list[str] = field(default_factory=list)
    nginx_logs: list[str] = field(default_factory=list)
    error: str | None = None  # set when the spec matches no capture

    @property
    def size_bytes(self) -> int:
        total = 0
        for f in self.files:
            try:
                total += os.path.getsize(f)
            except OSError:
                pass
        return total


def _natural(path: str) -> list:
    """Sort key: capture.pcap2 before capture.pcap10 (tcpdump -C numbering)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _looks_like_capture(path: str) -> bool:
    if CAPTURE_NAME.search(os.path.basename(path)):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return False
    return head.startswith(CAPTURE_MAGICS)


def _error_logs(directory: str) -> list[str]:
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    return sorted((os.path.join(directory, n) for n in names if ERROR_LOG.match(n)), key=_natural)


def host_from_spec(spec: str, nginx_logs: bool = True) -> Host:
    """The :class:`Host` a command-line argument names (see the module doc)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or os.sep in name or glob.has_magic(name):
        name, path = "", spec
    if os.path.isdir(path):
        d = os.path.normpath(path)
        entries = sorted(os.listdir(d), key=_natural)
        files = [
            os.path.join(d, n)
            for n in entries
            if not n.startswith(".")
            and not ERROR_LOG.match(n)
            and os.path.isfile(os.path.join(d, n))
            and _looks_like_capture(os.path.join(d, n))
        ]
        host = Host(name or os.path.basename(os.path.abspath(d)), spec, files)
        logs_dir = d
        if not files:
            host.error = f"{path}: no capture file in this directory"
    else:
        files = sorted(glob.glob(path), key=_natural) if glob.has_magic(path) else [path]
        files = [f for f in files if os.path.isfile(f) and not ERROR_LOG.match(os.path.basename(f))]
        logs_dir = os.path.dirname(files[0]) if files else os.path.dirname(path)
        host = Host(name or os.path.basename(os.path.abspath(logs_dir or ".")), spec, files)
        if not files:
            what = "no file matches" if glob.has_magic(path) else "no such file"
            host.error = f"{path}: {what}"
    if nginx_logs and host.files:
        host.nginx_logs = _error_logs(logs_dir)
    return host


def hosts_from_specs(specs: Sequence[str], nginx_logs: bool = True) -> list[Host]:
    """One :class:`Host` per spec; a name given twice gets the spec as its name."""
    return _unique_names([host_from_spec(s, nginx_logs) for s in specs])


def _unique_names(hosts: list[Host]) -> list[Host]:
    counts: dict[str, int] = {}
    for h in hosts:
        counts[h.name] = counts.get(h.name, 0) + 1
    seen: set[str] = set()
    for h in hosts:
        if counts[h.name] > 1:
            h.name = h.spec
        base, k = h.name, 1
        while h.name in seen:
            k += 1
            h.name = f"{base}#{k}"
        seen.add(h.name)
    return hosts


# ------------------------------------------------------------ on a worker
def analyze_host(host: Host, options: dict[str, Any]) -> dict:
    """Analyse one host's capture set (on a Dask worker): its fleet entry.

    Never raises: a host that cannot be analysed is returned as failed with a
    one-line reason, so one bad host never sinks the fleet.
    """
    from ..api import analyze

    t0, c0 = time.perf_counter(), time.process_time()
    out: dict[str, Any]
    try:
        rep = analyze(host.files, nginx_log=host.nginx_logs or None, **options)
        out = {"status": "ok", "report": rep.to_json()}
    except PcapResetError as e:
        out = {"status": "failed", "error": _one_line(e)}
    except Exception as e:  # noqa: BLE001 - a bug in one host's analysis stays in that host
        out = {"status": "failed", "error": f"internal error: {type(e).__name__}: {_one_line(e)}"}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["cpu_s"] = round(time.process_time() - c0, 3)  # (this worker process's CPU time)
    out["worker"] = _worker_address()
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


# ------------------------------------------------------------ on the client
def _connect(scheduler: Any, workers: int | None) -> tuple[Any, Any, str]:
    """(client, local cluster or None, where) for ``scheduler`` (None: a local cluster)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise FleetError(
            "fleet analysis needs Dask: pip install 'pcapreset[fleet]' (dask, distributed)"
        ) from None
    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, None, str(getattr(scheduler.scheduler, "address", "a Dask client"))
    if scheduler:
        _reachable(scheduler)
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None, scheduler
        except (OSError, TimeoutError, ValueError) as e:
            raise FleetError(
                f"cannot reach the Dask scheduler {scheduler}: {_one_line(e)}"
            ) from None
    n = workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # (no dashboard; the scheduler's health/metrics server on any free port, not 8787)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )
    return Client(cluster), cluster, "local cluster"


def _reachable(address: str) -> None:
    """Fail fast with one line when a tcp:// scheduler refuses connections
    (the Dask client would retry until its timeout, logging each try)."""
    scheme, sep, rest = address.rpartition("://")
    if sep and scheme not in ("tcp", "tls"):
        return  # another transport (inproc, ucx): the client says what it thinks
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise FleetError(f"{address}: not a scheduler address (tcp://host:port)") from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise FleetError(f"cannot reach the Dask scheduler {address}: {reason}") from None


def fleet(
    hosts: Sequence[str | os.PathLike | Host],
    scheduler: Any = None,
    workers: int | None = None,
    port: int | None = None,
    nginx_tz: str | None = None,
    nginx_logs: bool = True,
    progress: Callable[[int, int, dict], None] | None = None,
) -> FleetReport:
    """Analyse every host's capture set on Dask and merge the results.

    ``hosts``: directories, globs or file names (``NAME=SPEC`` names a host),
    or :class:`Host` objects. ``scheduler``: None for a ``LocalCluster`` on this
    machine (``workers`` processes, default one per CPU), a scheduler address
    (``"tcp://host:8786"``; its workers must see the same paths) or a
    ``distributed.Client``. ``port``, ``nginx_tz``: as for :func:`pcapreset.analyze`.
    ``nginx_logs``: use an ``error.log`` found beside a host's captures.
    ``progress(done, total, entry)`` is called as each host finishes.

    Raises :class:`FleetError` when nothing can run (no host, no Dask, no
    scheduler); a host whose captures fail is listed in the report's ``failed``.
    """
    if not hosts:
        raise FleetError("no host given")
    hs = _unique_names(
        [h if isinstance(h, Host) else host_from_spec(os.fspath(h), nginx_logs) for h in hosts]
    )
    options: dict[str, Any] = {"port": port, "nginx_tz": nginx_tz, "jobs": 1}
    t0 = time.perf_counter()
    entries: dict[str, dict] = {}
    runnable = [h for h in hs if h.error is None]
    for h in hs:
        if h.error is not None:
            entries[h.name] = {
                "status": "failed", "error": h.error, "seconds": 0.0, "cpu_s": 0.0, "worker": None,
            }  # fmt: skip
    client, cluster, where = _connect(scheduler, workers) if runnable else (None, None, "none")
    start_s = time.perf_counter() - t0
    n_workers = 0
    try:
        if client is not None:
            entries.update(_run(client, runnable, options, len(hs), len(entries), progress))
            n_workers = len(client.scheduler_info().get("workers", {}))
    finally:
        if client is not None and client is not scheduler:  # ours, not the caller's
            client.close()
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - t0
    return FleetReport.merge(
        [(h, entries[h.name]) for h in hs],
        scheduler=where,
        workers=n_workers,
        wall_s=wall,
        start_s=start_s,
    )


def _run(client, hosts: list[Host], options, total: int, done: int, progress) -> dict[str, dict]:
    from distributed import as_completed

    # the largest hosts first: the last host to finish bounds the wall time
    futures = {
        client.submit(
            analyze_host, h, options, key=f"pcapreset-host-{i}-{h.name}", pure=False,
            priority=h.size_bytes, retries=0,
        ): h
        for i, h in enumerate(sorted(hosts, key=lambda h: -h.size_bytes))
    }  # fmt: skip
    out: dict[str, dict] = {}
    for fut in as_completed(list(futures)):
        h = futures[fut]
        try:
            entry = fut.result()
        except Exception as e:  # noqa: BLE001 - a worker that died with this host
            entry = {
                "status": "failed",
                "error": f"worker lost: {type(e).__name__}: {_one_line(e)}",
                "seconds": None,
                "cpu_s": None,
                "worker": None,
            }
        out[h.name] = entry
        done += 1
        if progress is not None:
            progress(done, total, {"host": h.name, **entry})
        fut.release()
    return out
