"""The command line (click's CliRunner) on the real lab captures in sample_pcaps/."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import REPO, ether, ng_idb, ng_shb, pcap_bytes, sample_captures, tcp, write

from pcapreset import __version__, analyze
from pcapreset.cli import main
from pcapreset.report.columns import CONN_COLUMNS, csv_time
from pcapreset.report.jsonreport import write_json, write_jsonl

CAPS = sample_captures()
#: folder name -> its backend-side capture
SAMPLES_BY_NAME = {p.parent.name: p for p in CAPS if p.name == "backend.pcap"}
needs_samples = pytest.mark.skipif(not CAPS, reason="no captures in sample_pcaps/ yet")
ids = {"ids": lambda p: f"{p.parent.name}/{p.name}"}


def run(*args: str):
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"traceback from {args}") from res.exception
    return res


@pytest.fixture(scope="module")
def schema() -> dict:
    res = run("schema")
    assert res.exit_code == 0
    return json.loads(res.stdout)


@needs_samples
@pytest.mark.parametrize("path", CAPS, **ids)
def test_analyze_text_fits_80_columns(path):
    for args in ((), ("-v",)):
        res = run("analyze", *args, str(path))
        assert res.exit_code == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines and lines[0].startswith("capture") and path.name in lines[0]
        too_long = [ln for ln in lines if len(ln) > 80]
        assert not too_long, too_long[0]


@needs_samples
@pytest.mark.parametrize("path", CAPS, **ids)
def test_json_validates_and_matches_text(path, schema):
    res = run("analyze", "--format", "json", str(path))
    assert res.exit_code == 0
    rep = json.loads(res.stdout)
    jsonschema.validate(rep, schema)
    assert isinstance(rep["flows"], int)
    text = run("analyze", str(path)).stdout
    assert f"{rep['capture']['packets']:,} packets" in text
    for r in rep["resets"]:
        assert r["cause"] in text


@needs_samples
@pytest.mark.parametrize("path", CAPS, **ids)
def test_json_is_json_dump_of_the_report(path):
    """The CLI writes the resets one at a time (report.write_json): the bytes
    are those of json.dumps(report, indent=2), whatever the report holds."""
    rep = analyze(path, evict=False, nginx_log=path.parent / "error.log", nginx_tz="UTC")
    for r in (rep, analyze(path)):
        out = io.StringIO()
        write_json(r, out)
        assert out.getvalue() == json.dumps(r.to_json(), indent=2)
    assert (
        run("analyze", "--format", "json", str(path)).stdout
        == json.dumps(analyze(path).to_json(), indent=2) + "\n"
    )


@needs_samples
@pytest.mark.parametrize("path", CAPS, **ids)
def test_jsonl_is_each_reset_then_the_report(path):
    """``--format jsonl`` offline writes each reset's line and then the whole
    report on one line (report.write_jsonl), each with its ``type`` first:
    the bytes of json.dumps of each reset's dict and of the report."""
    rep = analyze(path, evict=False, nginx_log=path.parent / "error.log", nginx_tz="UTC")
    for r in (rep, analyze(path)):
        j = r.to_json()
        want = "".join(json.dumps({"type": "reset", **x}) + "\n" for x in j["resets"])
        want += json.dumps({"type": "report", **j}) + "\n"
        out = io.StringIO()
        write_jsonl(r, out)
        assert out.getvalue() == want
        assert want.count("\n") == len(j["resets"]) + 1
    j = analyze(path).to_json()
    lines = run("analyze", "--format", "jsonl", str(path)).stdout.splitlines()
    got = [json.loads(x) for x in lines]
    assert [x.pop("type") for x in got] == ["reset"] * len(j["resets"]) + ["report"]
    assert got == [*j["resets"], j]


@needs_samples
def test_verbose_adds_the_evidence():
    with_resets = []
    for p in CAPS:
        rep = json.loads(run("analyze", "--format", "json", str(p)).stdout)
        if rep["resets"]:
            with_resets.append((p, rep))
    assert with_resets, "no sample capture has a reset"
    for p, rep in with_resets:
        plain = run("analyze", str(p)).stdout
        verbose = run("analyze", "-v", str(p)).stdout
        assert len(verbose.splitlines()) > len(plain.splitlines())
        first = rep["resets"][0]["evidence"][0]
        # evidence lines are wrapped at 80 columns: compare the first words
        assert " ".join(first.split()[:4]) in " ".join(verbose.split())
        assert " ".join(first.split()[:4]) not in " ".join(plain.split())


@needs_samples
@pytest.mark.parametrize("path", CAPS, **ids)
def test_conns_text_json_csv_agree(path):
    js = run("conns", "--format", "json", str(path))
    assert js.exit_code == 0
    rows = json.loads(js.stdout)
    flows = json.loads(run("analyze", "--format", "json", str(path)).stdout)["flows"]
    assert len(rows) == flows
    cs = run("conns", "--format", "csv", str(path))
    reader = csv.DictReader(io.StringIO(cs.stdout))
    assert reader.fieldnames == list(CONN_COLUMNS)
    got = list(reader)
    assert len(got) == len(rows)
    for a, b in zip(got, rows, strict=True):
        assert a["client"] == b["client"] and a["server"] == b["server"]
        assert a["conn_state"] == b["conn_state"] and a["history"] == b["history"]
        assert int(a["resets"]) == b["resets"] and int(a["packets"]) == b["packets"]
        assert float(a["duration_s"]) == b["duration_s"] == round(b["end"] - b["start"], 6)
        assert a["start"] == csv_time(b["start"]) and a["start"].endswith("Z")
    text = run("conns", str(path)).stdout
    lines = text.splitlines()
    assert len(lines) == len(rows) + 1  # the header, then one line per connection
    for r, line in zip(rows, lines[1:], strict=True):
        assert line.startswith(r["client"][:21])


def test_conns_csv_header_without_connections(tmp_path):
    p = write(tmp_path / "arp.pcap", pcap_bytes([(1.0, ether(b"\0" * 28, 0x0806))]))
    res = run("conns", "--format", "csv", str(p))
    assert res.exit_code == 0
    header = res.stdout.splitlines()[0].split(",")
    assert header == list(CONN_COLUMNS)


def test_help_shows_examples():
    for cmd in ("analyze", "conns"):
        res = run(cmd, "--help")
        assert res.exit_code == 0
        assert "Examples:" in res.stdout and f"pcapreset {cmd} backend.pcap" in res.stdout
    top = run("--help")
    assert "analyze" in top.stdout and "conns" in top.stdout


@pytest.mark.parametrize(
    "name,content",
    [
        ("empty.pcap", b""),
        ("notes.txt", b"this is not a capture\n" * 3),
        ("three.pcap", b"\xd4\xc3\xb2"),
        ("cap.pcap.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 30),
        ("token.pcap", pcap_bytes([(1.0, b"\0" * 40)], linktype=6)),
        ("ng-unsupported.pcapng", ng_shb() + ng_idb(147)
         + b"".join([__import__("conftest").ng_epb(0, 1, b"x" * 20)])),
    ],
)  # fmt: skip
def test_bad_input_is_one_error_line(tmp_path, name, content):
    p = write(tmp_path / name, content)
    for cmd in ("analyze", "conns"):
        res = run(cmd, str(p))
        assert res.exit_code != 0
        err = res.stderr.splitlines()
        assert len(err) == 1 and err[0].startswith("Error: "), res.stderr
        assert str(p) in err[0] or "unsupported link type" in err[0]
        assert res.stdout == ""


def test_missing_file_and_directory_are_one_error_line(tmp_path):
    for p in (tmp_path / "missing.pcap", tmp_path):
        res = run("analyze", str(p))
        assert res.exit_code != 0
        err = res.stderr.splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and str(p) in err[0]


def test_mid_file_damage_warns_on_stderr_and_still_reports(tmp_path):
    pk = ether(tcp(flags=0x02))  # not IP: just a frame to count
    recs = [(1.0 + i, pk) for i in range(6)]
    data = pcap_bytes(recs)
    cut = 24 + 3 * (16 + len(pk))
    p = write(tmp_path / "d.pcap", data[:cut] + b"\xff" * 99 + data[cut:])
    res = run("analyze", "--format", "json", str(p))
    assert res.exit_code == 0
    rep = json.loads(res.stdout)
    assert rep["capture"]["packets"] == 6
    warn = [w for w in rep["capture"]["warnings"] if w["kind"] == "damaged_bytes"]
    assert warn and warn[0]["count"] == 99
    assert f"pcapreset: warning: {warn[0]['message']}" in res.stderr.splitlines()
    quiet = run("analyze", "-q", "--format", "json", str(p))
    assert quiet.stderr == ""


def test_python_dash_m_version():
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", "--version"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    assert __version__ in out.stdout and "pcapreset" in out.stdout


@needs_samples
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_console_script_exit(fmt):
    """cli.run (the console script, which leaves with os._exit): the same
    output and status as main() in-process, everything flushed."""
    p = CAPS[0]
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", "--format", fmt, str(p)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    res = run("analyze", "--format", fmt, str(p))
    assert (out.returncode, out.stdout) == (res.exit_code, res.stdout) == (0, out.stdout)
    assert out.stdout.endswith("\n")


def test_console_script_error_status(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", str(tmp_path / "missing.pcap")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("Error: ") and out.stdout == ""
    usage = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", "--format", "xml", "x.pcap"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert usage.returncode == 2 and "Invalid value" in usage.stderr


def test_package_import_leaves_numpy_to_the_console_script():
    """__main__.main must run before numpy is imported (it keeps OpenBLAS to
    one thread); importing the package alone does not import numpy."""
    code = (
        "import sys, pcapreset; assert 'numpy' not in sys.modules; "
        "from pcapreset import analyze; assert 'numpy' in sys.modules"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ progress
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_progress_on_a_terminal(monkeypatch, capsys):
    """Bytes read of the total and packets/s on stderr, at most every 0.2 s,
    no rate from the first instants (the first batch alone is not a rate),
    and the line cleared at the end."""
    import time

    from pcapreset.report.progress import TerminalProgress

    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    p = TerminalProgress(enabled=True)
    clock.t += 0.01
    p(4 << 20, 100 << 20, 5_000)
    first = capsys.readouterr().err
    assert first.startswith("\r  reading") and "4.0%" in first and "5,000 packets" in first
    assert "/s" not in first
    clock.t += 0.1
    p(8 << 20, 100 << 20, 10_000)  # (within 0.2 s of the last line: skipped)
    assert capsys.readouterr().err == ""
    clock.t += 0.89  # 1.0 s since the start
    p(50 << 20, 100 << 20, 1_000_000)
    line = capsys.readouterr().err
    assert "50.0%" in line and "1,000,000 packets (1,000,000/s)" in line
    p.close()
    assert capsys.readouterr().err.strip() == ""


def test_progress_silent_when_disabled(capsys):
    from pcapreset.report.progress import TerminalProgress

    p = TerminalProgress(enabled=False)
    p(1, 2, 3)
    p.close()
    assert capsys.readouterr().err == ""


def test_no_progress_without_a_terminal_or_with_quiet(monkeypatch, tmp_path):
    """CliRunner's stderr is not a terminal; --quiet wins even on one."""
    import pcapreset.cli as cli

    made: list[bool] = []
    real = cli.TerminalProgress

    def spy(enabled: bool):
        made.append(enabled)
        return real(enabled)

    monkeypatch.setattr(cli, "TerminalProgress", spy)
    cap = sample_captures()[0]
    r = CliRunner().invoke(main, ["analyze", str(cap)])
    assert r.exit_code == 0 and made == [False]
    # the runner's stderr made to look like a terminal: progress, unless --quiet
    import click.testing

    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    for args, want in ((["analyze", str(cap)], True), (["analyze", "--quiet", str(cap)], False)):
        made.clear()
        assert CliRunner().invoke(main, args).exit_code == 0
        assert made == [want], args


@needs_samples
def test_fail_on_reset_exit_status():
    """--fail-on-reset: 3 when the capture has a reset (after the full output), else 0."""
    with_rst = SAMPLES_BY_NAME["keepalive_race_node"]
    res = run("analyze", "--fail-on-reset", "--format", "json", str(with_rst))
    assert res.exit_code == 3
    assert json.loads(res.stdout)["resets"]  # the report is written first
    assert run("analyze", "--format", "json", str(with_rst)).exit_code == 0
    quiet = [p for p in CAPS if not analyze(p).resets]
    if quiet:
        assert run("analyze", "--fail-on-reset", "-q", str(quiet[0])).exit_code == 0
    # the console script keeps the status (os._exit path in cli.run)
    out = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", "--fail-on-reset", "-q", str(with_rst)],
        capture_output=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 3 and b"keepalive_race" in out.stdout


def test_exit_codes_and_completion_are_in_help():
    for args in (["--help"], ["analyze", "--help"], ["conns", "--help"]):
        text = run(*args).stdout
        assert "Exit status" in text and "usage error" in text, args
    assert "3  --fail-on-reset" in run("analyze", "--help").stdout
    assert "_PCAPRESET_COMPLETE=bash_source pcapreset" in run("--help").stdout


def test_shell_completion_as_documented():
    """`_PCAPRESET_COMPLETE=bash_source pcapreset` prints a completion script,
    and that script's requests complete subcommands and options."""
    r = CliRunner().invoke(main, [], prog_name="pcapreset",
                           env={"_PCAPRESET_COMPLETE": "bash_source"})  # fmt: skip
    assert r.exit_code == 0 and "complete -o nosort -F" in r.stdout and "pcapreset" in r.stdout
    env = {"_PCAPRESET_COMPLETE": "bash_complete", "COMP_WORDS": "pcapreset ana", "COMP_CWORD": "1"}
    r = CliRunner().invoke(main, [], prog_name="pcapreset", env=env)
    assert "analyze" in r.stdout
    env |= {"COMP_WORDS": "pcapreset analyze --fail", "COMP_CWORD": "2"}
    r = CliRunner().invoke(main, [], prog_name="pcapreset", env=env)
    assert "--fail-on-reset" in r.stdout


@needs_samples
@pytest.mark.parametrize("name", ["keepalive_race_node", "keepalive_race_node_ipv6"])
def test_conns_csv_is_the_export_csv(name, tmp_path):
    """`conns --format csv` and `--export-format csv`'s connections.csv: the
    same columns, the same time format, the same bytes."""
    path = SAMPLES_BY_NAME[name]
    conns = run("conns", "--format", "csv", str(path)).stdout
    res = run("analyze", "-q", str(path), "--export", str(tmp_path), "--export-format", "csv")
    assert res.exit_code == 0
    assert conns == (tmp_path / "connections.csv").read_text()
    header = conns.splitlines()[0].split(",")
    assert header == list(CONN_COLUMNS)
    row = next(csv.DictReader(io.StringIO(conns)))
    assert row["start"].endswith("Z") and "T" in row["start"]
