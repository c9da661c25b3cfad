"""cli: a thin click layer over the library. Library errors -> one-line messages."""

from __future__ import annotations

import os
import sys

import click

from . import __version__
from .api import analyze as analyze_files
from .api import streamed
from .cluster.command import fleet
from .engine import _malloc
from .engine.gcpause import no_gc_in_this_process
from .errors import PcapResetError
from .report import jsonout
from .report.columns import render_conns_csv
from .report.jsonreport import jsonl_report, jsonl_reset, write_json, write_jsonl
from .report.model import Report
from .report.progress import TerminalProgress
from .report.text import render_conns_text, write_text
from .textsafe import clean

EXAMPLES_ANALYZE = """
\b
Examples:
  pcapreset analyze backend.pcap
  pcapreset analyze backend.pcap -v              # evidence for every reset
  tcpdump -i any -w - port 3000 | pcapreset analyze -   # - : standard input
  pcapreset analyze rotated-*.pcap --format json # one timeline over several files
  pcapreset analyze nginx-side.pcapng.gz --port 3000
  pcapreset analyze --iface any --port 3000       # live, verdicts as they happen
  pcapreset analyze --iface any --port 3000 --duration 60 --write cap.pcap --format jsonl
  pcapreset analyze backend.pcap --nginx-log error.log --nginx-conf nginx.conf
  pcapreset analyze backend.pcap --plot plots/ --export tables/ --export-format csv
"""

EXAMPLES_CONNS = """
\b
Examples:
  pcapreset conns backend.pcap
  pcapreset conns backend.pcap --format csv > conns.csv
"""


def _echo_json(obj: object) -> None:
    """``click.echo(json.dumps(obj, indent=2))``, streamed: no copy of a large
    report as one string (it was the peak of a long capture's memory); the
    same bytes as ``json.dump(obj, sys.stdout, indent=2)`` from a faster
    encoder (jsonout.py: 50 -> ~10 ms on the 1M bench capture)."""
    jsonout.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _echo_report_json(rep: Report) -> None:
    """``_echo_json(rep.to_json())``, the resets written one at a time (report.write_json)."""
    write_json(rep, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _echo_report_text(rep: Report, verbose: bool) -> None:
    """The text report, a line at a time (report.write_text)."""
    write_text(rep, sys.stdout, verbose=verbose)
    sys.stdout.flush()


#: input paths: no checks by click (an unreadable or missing file would be a
#: usage error, exit status 2): the readers say what is wrong, exit status 1
_INPUT = click.Path(readable=False)


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(clean(str(e).splitlines()[0]) if str(e) else type(e).__name__)


def _run(files, port, quiet, **options) -> Report:
    no_gc_in_this_process()  # a one-shot process
    _malloc.fix_thresholds()
    prog = TerminalProgress(enabled=not quiet and sys.stderr.isatty())
    try:
        # a one-shot process: reading/decoding may run in a forked child
        return analyze_files(list(files), port=port, progress=prog, pipelined=True, **options)
    except PcapResetError as e:
        raise _fail(e) from None
    finally:
        prog.close()


#: capture warnings left off stderr: notes, not problems (still in the report)
QUIET_WARNINGS = ("snaplen_truncated", "decapsulated")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pcapreset")
def main() -> None:
    """Explain TCP resets between nginx and its upstream backends.

    \b
    pcapreset analyze backend.pcap      who sent each RST, when, why, what to change
    pcapreset conns backend.pcap        every TCP connection (Zeek-style conn_state)
    pcapreset fleet caps/web1 caps/web2 many hosts' captures on Dask, one report
    pcapreset schema                    JSON Schema of `analyze --format json`
    pcapreset rules                     the table of rules that decides a cause

    \b
    Exit status: 0 done, 1 error (one line on stderr), 2 usage error,
    3 `analyze --fail-on-reset` found a reset.
    Shell completion (bash; zsh, fish likewise):
      eval "$(_PCAPRESET_COMPLETE=bash_source pcapreset)"
    """


def _table_modules(plot_dir, export_dir, export_format) -> None:
    """--plot / --export need pcapreset[notebook]: checked before the analysis
    runs, so a missing extra is a one-line hint instead of a late failure."""
    from .errors import require

    try:
        require("pcapreset.notebook.frames", "--export and --plot")
        if plot_dir:
            require("pcapreset.notebook.plots", "--plot")
        if export_dir and export_format == "parquet":
            require("pyarrow", "Parquet export", " (or --export-format csv)")
    except PcapResetError as e:
        raise _fail(e) from None


def _write_tables(rep, files, port, plot_dir, export_dir, export_format, quiet) -> None:
    """--plot / --export: pandas and matplotlib are imported only when asked for."""
    from .notebook.files import write_plots
    from .notebook.frames import from_report

    try:
        a = from_report(rep, list(files), port)
        paths = []
        if plot_dir:
            paths += write_plots(a, plot_dir)
        paths += a.export(export_dir, export_format) if export_dir else []
    except PcapResetError as e:
        raise _fail(e) from None
    if not quiet:
        for p in paths:
            click.echo(f"pcapreset: wrote {p}", err=True)


def _live_options(f):
    """--iface / --duration / --write: live capture instead of FILES (see live.py)."""
    import functools

    @functools.wraps(f)
    def wrapper(**kw):
        iface, duration, write = kw.pop("iface"), kw.pop("duration"), kw.pop("write")
        if iface is None:
            if duration is not None or write is not None:
                raise click.UsageError("--duration and --write need --iface (live capture)")
            if not kw["files"]:
                raise click.UsageError("give capture FILES, or --iface IFACE to capture live")
            return f(**kw)
        if kw["files"]:
            raise click.UsageError("give capture FILES or --iface, not both")
        unsupported = [k for k, v in kw.items() if v and k not in _LIVE_KEYS]
        if unsupported:
            opt = "--" + unsupported[0].replace("_dir", "").replace("_", "-")
            raise click.UsageError(f"{opt} works on capture files: use --write, then analyze it")
        rep = _analyze_live(
            iface, duration, write, kw["fmt"], kw["port"], kw["verbose"], kw["quiet"]
        )
        _exit_status(rep, kw["fail_on_reset"])

    for opt in reversed(_LIVE_OPTIONS):
        wrapper = opt(wrapper)
    return wrapper


_LIVE_KEYS = {"files", "fmt", "port", "verbose", "quiet", "export_format", "fail_on_reset"}
_LIVE_OPTIONS = [
    click.option("--iface", metavar="IFACE", help="Capture live on IFACE ('any': all)."),
    click.option("--duration", type=click.FloatRange(min=0), metavar="S",
                 help="Stop the live capture after S seconds (default: Ctrl-C)."),
    click.option("--write", type=click.Path(dir_okay=False), metavar="FILE",
                 help="Also save the live capture as a pcap FILE."),
]  # fmt: skip


def _analyze_live(iface, duration, write, fmt, port, verbose, quiet) -> Report:
    from .api import analyze_live
    from .report.stream import reset_line

    def on_reset(r: dict) -> None:
        if fmt == "jsonl":
            click.echo(jsonout.dumps(jsonl_reset(r)))
        elif fmt == "text":
            click.echo(clean(reset_line(r)))

    def on_ready() -> None:
        if not quiet:
            what = f"tcp port {port}" if port else "tcp"
            until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
            click.echo(f"pcapreset: capturing {what} on {iface} {until}", err=True)

    try:
        rep = analyze_live(iface, port, duration, write, on_reset=on_reset, on_ready=on_ready)
    except PcapResetError as e:
        raise _fail(e) from None
    live = rep.result.live or {}
    if not quiet:
        click.echo(
            f"pcapreset: {live.get('packets_received', 0):,} packets captured, "
            f"{live.get('kernel_drops', 0):,} dropped by the kernel",
            err=True,
        )
    if fmt == "json":
        _echo_report_json(rep)
    elif fmt == "jsonl":
        click.echo(jsonout.dumps(jsonl_report(rep.to_json())))
    else:
        click.echo("")
        _echo_report_text(rep, verbose)
    return rep


#: `pcapreset analyze --fail-on-reset`: the capture had a reset
EXIT_RESETS = 3
_EXIT_COMMON = """
\b
Exit status:
  0  done{}
  1  error: unreadable input, missing extra, failed capture (one line on stderr)
  2  usage error (bad option or argument)
"""
EXIT_CODES = _EXIT_COMMON.format(" (with --fail-on-reset: and no reset found)") + (
    f"  {EXIT_RESETS}  --fail-on-reset and at least one reset found\n"
)


def _exit_status(rep: Report, fail_on_reset: bool) -> None:
    if fail_on_reset and rep.resets:
        sys.stdout.flush()
        raise SystemExit(EXIT_RESETS)


@main.command(epilog=EXAMPLES_ANALYZE + EXIT_CODES)
@click.argument("files", nargs=-1, type=_INPUT, required=False)  # the reader explains
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "jsonl"]),
    default="text",
    show_default=True,
    help='jsonl: one JSON object per reset ("type": "reset"), then the report '
    '("type": "report"), one per line.',
)
@click.option("--port", type=int, help="Backend port: decides roles when the SYN was not captured.")
@click.option("-v", "--verbose", is_flag=True, help="Show the evidence of every reset.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no warnings on stderr.")
@click.option(
    "--plot", "plot_dir", type=click.Path(file_okay=False), metavar="DIR",
    help="Write PNG plots (resets over time, idle histogram, time-sequence graph) to DIR.",
)  # fmt: skip
@click.option(
    "--export", "export_dir", type=click.Path(file_okay=False), metavar="DIR",
    help="Write the connections / resets / findings tables to DIR.",
)  # fmt: skip
@click.option(
    "--export-format", type=click.Choice(["parquet", "csv"]), default="parquet",
    show_default=True, help="Table format for --export.",
)  # fmt: skip
@click.option(
    "--nginx-log", "nginx_log", multiple=True, type=_INPUT, metavar="FILE",
    help="nginx error.log (repeat for an access.log with $upstream_addr $upstream_status): "
    "tie each upstream error line to its reset.",
)  # fmt: skip
@click.option(
    "--nginx-conf", type=_INPUT, metavar="FILE",
    help="nginx.conf: use its upstream keepalive_timeout and proxy timeouts.",
)  # fmt: skip
@click.option(
    "--nginx-tz", metavar="ZONE",
    help="Time zone of error.log times (UTC, Europe/Berlin, +02:00); default: local.",
)  # fmt: skip
@click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Processes for connection tracking (0: automatic). Results do not depend on it.",
)  # fmt: skip
@click.option(
    "--fail-on-reset", is_flag=True,
    help=f"Exit with status {EXIT_RESETS} when the capture has a reset (for scripts and CI).",
)  # fmt: skip
@_live_options
def analyze(
    files, fmt, port, verbose, quiet, plot_dir, export_dir, export_format,
    nginx_log, nginx_conf, nginx_tz, jobs, fail_on_reset,
) -> None:  # fmt: skip
    """Analyse capture FILES: who reset each connection, when, why, what to change.

    FILES may be pcap, pcapng, or gzip/bzip2/xz-compressed; `-` reads standard
    input (pipes, FIFOs and /dev/stdin are read as streams, once)."""
    if plot_dir and streamed(files):
        raise click.UsageError(
            "--plot reads a connection's packets again: save the stream to a file first"
        )
    if plot_dir or export_dir:
        _table_modules(plot_dir, export_dir, export_format)
    rep = _run(
        files, port, quiet, nginx_log=nginx_log, nginx_conf=nginx_conf, nginx_tz=nginx_tz,
        jobs=jobs, evict=not (plot_dir or export_dir),  # the tables need every connection
    )  # fmt: skip
    if not quiet:
        for w in rep.result.warnings:
            if w["kind"] not in QUIET_WARNINGS:
                click.echo(f"pcapreset: warning: {clean(w['message'])}", err=True)
    if fmt == "jsonl":  # as live: one line per reset, then the whole report
        write_jsonl(rep, sys.stdout)
        sys.stdout.flush()
    elif fmt == "json":
        _echo_report_json(rep)
    else:
        _echo_report_text(rep, verbose)
    if plot_dir or export_dir:
        _write_tables(rep, files, port, plot_dir, export_dir, export_format, quiet)
    _exit_status(rep, fail_on_reset)


@main.command(epilog=EXAMPLES_CONNS + _EXIT_COMMON.format(""))
@click.argument("files", nargs=-1, type=_INPUT, required=True)  # the reader explains
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)
@click.option("--port", type=int, help="Backend port: decides roles when the SYN was not captured.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Processes for connection tracking (0: automatic).",
)  # fmt: skip
def conns(files, fmt, port, quiet, jobs) -> None:
    """List every TCP connection in capture FILES."""
    rep = _run(files, port, quiet, jobs=jobs, evict=False)
    rows = rep.conn_rows()
    if fmt == "json":
        _echo_json(rows)
    elif fmt == "csv":
        click.echo(render_conns_csv(rows), nl=False)
    else:
        click.echo(render_conns_text(rows), nl=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of `pcapreset analyze --format json`."""
    from importlib import resources

    click.echo(resources.files("pcapreset.report").joinpath("report.schema.json").read_text())


@main.command()
def rules() -> None:
    """Print the rules table (first match wins)."""
    from .interpret.rules import table_text

    click.echo(table_text())


main.add_command(fleet)


def run() -> None:
    """The ``pcapreset`` console script: :func:`main`, then leave without
    tearing the heap down.

    Python's shutdown frees every object left (after ``analyze`` of a large
    capture: the report and the connections it lists) and runs a last cyclic
    GC pass over them: ~30 ms of a ~0.55 s run on the 1M bench capture. Once
    click has finished (it always ends in ``SystemExit``) and stdout and
    stderr are flushed, nothing is left to do, so the process ends with
    ``os._exit``. If flushing fails (a closed pipe), or the exit status is
    not a number, the ordinary exit does its usual reporting instead.
    In-process callers (tests, ``CliRunner``) call :func:`main` and are not
    affected.
    """
    try:
        main()
    except SystemExit as e:
        code = e.code
        if code is None or (isinstance(code, int) and not isinstance(code, bool)):
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:  # noqa: BLE001 - the ordinary exit reports it
                raise e from None
            os._exit(code or 0)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
