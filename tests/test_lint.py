"""The package stays lint-clean, format-clean and type-clean.

Runs the same commands a developer runs (configured in pyproject.toml) from the
repository root, through the test interpreter (``sys.executable -m TOOL``), and
fails with the tool's own output. A tool that is not installed skips its test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: generous: mypy's first run without a cache takes tens of seconds on a busy box
TIMEOUT_S = 600

CHECKS = {
    "ruff check": ("ruff", ["check", "pcapreset", "tests", "scripts"]),
    "ruff format": ("ruff", ["format", "--check", "pcapreset", "tests"]),
    "mypy": ("mypy", ["pcapreset"]),
}


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed in {sys.executable} (pip install -e '.[dev]')")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_clean(name: str) -> None:
    tool, args = CHECKS[name]
    proc = _run(tool, args)
    assert proc.returncode == 0, (
        f"`{tool} {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )
