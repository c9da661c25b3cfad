"""The lean core and its named extras: `analyze`/`conns` need numpy and click
only; a missing extra is a one-line hint naming it, never a traceback.

A missing module is simulated with ``sys.modules[name] = None`` (``import``
then raises ImportError), the pcapreset modules that import it dropped so
they import again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, SAMPLES

from pcapreset.cli import main

DEMO = str(SAMPLES / "keepalive_race_node" / "backend.pcap")


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)
    import pcapreset.notebook

    for m in ("frames", "plots"):
        monkeypatch.delitem(sys.modules, f"pcapreset.notebook.{m}", raising=False)
        monkeypatch.delattr(pcapreset.notebook, m, raising=False)


def _fails_with_hint(args: list[str], hint: str) -> str:
    res = CliRunner().invoke(main, args)
    assert isinstance(res.exception, SystemExit), res.exception  # no traceback
    assert res.exit_code == 1
    err = res.stderr.strip()
    assert err.count("\n") == 0, err  # one line
    assert hint in err, err
    return err


def test_export_without_pandas_names_the_notebook_extra(monkeypatch, tmp_path: Path) -> None:
    _without(monkeypatch, "pandas")
    err = _fails_with_hint(
        ["analyze", DEMO, "--export", str(tmp_path / "t")], "pip install 'pcapreset[notebook]'"
    )
    assert "pandas" in err
    # checked before the analysis: nothing written, no report printed first
    assert not (tmp_path / "t").exists()


def test_plot_without_matplotlib_names_the_notebook_extra(monkeypatch, tmp_path: Path) -> None:
    _without(monkeypatch, "matplotlib", "matplotlib.figure")
    err = _fails_with_hint(
        ["analyze", DEMO, "--plot", str(tmp_path / "p")], "pip install 'pcapreset[notebook]'"
    )
    assert "matplotlib" in err


def test_parquet_without_pyarrow_names_the_extra_and_the_csv_way(monkeypatch, tmp_path) -> None:
    # (pandas stays loaded: it uses an installed pyarrow internally, so only
    # the check before writing sees pyarrow missing)
    _without(monkeypatch, "pyarrow")
    err = _fails_with_hint(
        ["analyze", DEMO, "--export", str(tmp_path / "t")], "pip install 'pcapreset[notebook]'"
    )
    assert "pyarrow" in err and "--export-format csv" in err


def test_load_without_pandas_is_a_library_error_with_the_hint(monkeypatch) -> None:
    import pcapreset
    from pcapreset.errors import PcapResetError

    _without(monkeypatch, "pandas")
    with pytest.raises(PcapResetError, match=r"pip install 'pcapreset\[notebook\]'") as e:
        pcapreset.load(DEMO)
    assert isinstance(e.value, ImportError)  # `except ImportError` still catches it


def test_live_filter_without_scapy_names_the_live_extra(monkeypatch) -> None:
    from pcapreset.capture import live
    from pcapreset.errors import CaptureSourceError

    monkeypatch.setitem(sys.modules, "scapy.arch.common", None)
    with pytest.raises(CaptureSourceError, match=r"pip install 'pcapreset\[live\]'"):
        live.compile_bpf("tcp port 3000")


def test_analyze_and_conns_import_no_extra() -> None:
    """The core commands never import pandas, matplotlib, pyarrow, scapy or dpkt."""
    code = (
        "import sys, json; from click.testing import CliRunner; from pcapreset.cli import main\n"
        f"a = CliRunner().invoke(main, ['analyze', {DEMO!r}, '--format', 'json'])\n"
        f"c = CliRunner().invoke(main, ['conns', {DEMO!r}, '--format', 'csv'])\n"
        "extra = ('pandas', 'matplotlib', 'pyarrow', 'scapy', 'dpkt')\n"
        "print(json.dumps([a.exit_code, c.exit_code, sorted(m for m in sys.modules "
        "if m.split('.')[0] in extra)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert json.loads(out.stdout) == [0, 0, []]
