"""cluster.command: the ``pcapreset fleet`` command (a thin click layer over cluster.run)."""

from __future__ import annotations

import sys
import time

import click

from ..errors import PcapResetError

EXAMPLES_FLEET = """
\b
Examples:
  pcapreset fleet caps/web1 caps/web2 caps/web3     # a directory per host
  pcapreset fleet 'caps/*/'                         # the same, by a glob of directories
  pcapreset fleet 'web1=/data/web1/backend.pcap*'   # a host's rotated set, named
  pcapreset fleet caps/* --scheduler tcp://dask-scheduler:8786 --format json
"""


class _FleetProgress:
    """Hosts done so far, on stderr when it is a terminal (and not --quiet)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False
        self.failed = 0
        self._t0 = time.monotonic()

    def __call__(self, done: int, total: int, entry: dict) -> None:
        self.failed += entry["status"] != "ok"
        if not self.enabled:
            return
        took = time.monotonic() - self._t0
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"  hosts {done}/{total} done{failed}, {took:.0f} s; last: {entry['host']}"
        sys.stderr.write("\r" + line[:78].ljust(78))
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()


@click.command(epilog=EXAMPLES_FLEET)
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--scheduler", metavar="ADDRESS",
    help="Dask scheduler to use (tcp://host:8786; its workers must see the same paths). "
    "Default: a local cluster on this machine.",
)  # fmt: skip
@click.option(
    "--workers", type=click.IntRange(min=1), metavar="N",
    help="Worker processes of the local cluster (default: one per CPU).",
)  # fmt: skip
@click.option("--port", type=int, help="Backend port: decides roles when the SYN was not captured.")
@click.option(
    "--nginx-tz", metavar="ZONE",
    help="Time zone of the hosts' error.log times (UTC, Europe/Berlin); default: local.",
)  # fmt: skip
@click.option(
    "--no-nginx-log", is_flag=True, help="Ignore the error.log files beside the captures."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress and no warnings on stderr.")
def fleet(hosts, fmt, scheduler, workers, port, nginx_tz, no_nginx_log, quiet) -> None:
    """Analyse many hosts' captures on Dask, one merged report.

    Each HOST is a directory (its capture files, rotated sets included, are one
    timeline; an nginx error.log beside them is used as --nginx-log), or a
    file name or glob of one host's rotated set; NAME=HOST names it. A host
    whose captures cannot be read is listed with the reason; the others are
    still analysed.
    """
    from .run import fleet as run_fleet

    if scheduler is not None and workers is not None:
        raise click.UsageError("--workers sizes the local cluster: not with --scheduler")
    prog = _FleetProgress(enabled=not quiet and sys.stderr.isatty())
    try:
        fr = run_fleet(
            list(hosts), scheduler=scheduler, workers=workers, port=port, nginx_tz=nginx_tz,
            nginx_logs=not no_nginx_log, progress=prog,
        )  # fmt: skip
    except PcapResetError as e:
        text = str(e).strip()
        raise click.ClickException(text.splitlines()[0] if text else type(e).__name__) from None
    finally:
        prog.close()
    if fmt == "json":
        from ..report import jsonout

        jsonout.dump(fr.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        for line in fr.text_lines():
            click.echo(line)
    sys.stdout.flush()
    failed = len(fr.failed)
    if failed and not quiet:
        click.echo(f"pcapreset: {failed} of {len(fr.hosts)} hosts failed (listed above)", err=True)
    if failed == len(fr.hosts):
        sys.exit(1)
