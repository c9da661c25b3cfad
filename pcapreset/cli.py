"""cli: a thin click layer over the library. Library errors -> one-line messages."""

from __future__ import annotations

import csv
import io
import json
import sys
from importlib import resources

import click

from . import __version__
from .api import analyze as analyze_files
from .errors import PcapResetError
from .report import Report, render_conns_text, render_text

EXAMPLES_ANALYZE = """
\b
Examples:
  pcapreset analyze backend.pcap
  pcapreset analyze backend.pcap -v              # evidence for every reset
  pcapreset analyze rotated-*.pcap --format json # one timeline over several files
  pcapreset analyze nginx-side.pcapng.gz --port 3000
"""

EXAMPLES_CONNS = """
\b
Examples:
  pcapreset conns backend.pcap
  pcapreset conns backend.pcap --format csv > conns.csv
"""


class _Progress:
    """Progress on stderr when it is a terminal (and not --quiet)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int, packets: int) -> None:
        if not self.enabled:
            return
        import time

        now = time.monotonic()
        if now - self._last < 0.2:
            return
        if not self._last:
            self._t0 = now
        self._last = now
        rate = packets / max(now - self._t0, 1e-6)
        pct = f"{100 * done / total:5.1f}%" if total else ""
        sys.stderr.write(f"\r  reading {pct} {packets:,} packets ({rate:,.0f}/s)   ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _run(files, port, quiet) -> Report:
    prog = _Progress(enabled=not quiet and sys.stderr.isatty())
    try:
        return analyze_files(list(files), port=port, progress=prog)
    except PcapResetError as e:
        raise _fail(e) from None
    finally:
        prog.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pcapreset")
def main() -> None:
    """Explain TCP resets between nginx and its upstream backends.

    \b
    pcapreset analyze backend.pcap      who sent each RST, when, why, what to change
    pcapreset conns backend.pcap        every TCP connection (Zeek-style conn_state)
    pcapreset schema                    JSON Schema of `analyze --format json`
    pcapreset rules                     the table of rules that decides a cause
    """


@main.command(epilog=EXAMPLES_ANALYZE)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False), required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--port", type=int, help="Backend port: decides roles when the SYN was not captured.")
@click.option("-v", "--verbose", is_flag=True, help="Show the evidence of every reset.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no warnings on stderr.")
def analyze(files, fmt, port, verbose, quiet) -> None:
    """Analyse capture FILES: who reset each connection, when, why, what to change."""
    rep = _run(files, port, quiet)
    if not quiet:
        for w in rep.result.warnings:
            if w["kind"] not in ("snaplen_truncated",):
                click.echo(f"pcapreset: warning: {w['message']}", err=True)
    if fmt == "json":
        click.echo(json.dumps(rep.to_json(), indent=2))
    else:
        click.echo(render_text(rep, verbose=verbose), nl=False)


@main.command(epilog=EXAMPLES_CONNS)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False), required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)
@click.option("--port", type=int, help="Backend port: decides roles when the SYN was not captured.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def conns(files, fmt, port, quiet) -> None:
    """List every TCP connection in capture FILES."""
    rep = _run(files, port, quiet)
    rows = rep.conn_rows()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        fields = list(rows[0]) if rows else ["client", "server"]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
    else:
        click.echo(render_conns_text(rows), nl=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of `pcapreset analyze --format json`."""
    click.echo(resources.files("pcapreset").joinpath("report.schema.json").read_text())


@main.command()
def rules() -> None:
    """Print the rules table (first match wins)."""
    from .rules import table_text

    click.echo(table_text())


if __name__ == "__main__":  # pragma: no cover
    main()
