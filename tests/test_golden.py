"""Golden outputs: the stable part of `pcapreset analyze --format json` per sample capture.

For every ``sample_pcaps/<scenario>/<capture>.pcap`` there is a
``tests/golden/<scenario>__<capture>.json`` holding what must not change by
accident: the vantage point, the flow count, each reset's client / server /
sender / cause / phase / rule / RST packet count, the findings' causes and
counts, the counts by cause and sender, and the inferred idle timeout (to 0.1 s)
with what it rests on. Timestamps, evidence sentences and confidences are left
out.

When a change in evidence/rules is *meant* to change verdicts, regenerate and
review the diff::

    .venv/bin/python scripts/regen-golden          # all sample captures
    git diff tests/golden/

The accuracy test runs ``scripts/evaluate`` (labels written by the lab from its
own logs) and requires cause and sender accuracy >= 0.95 with every scenario ok.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAB_PENDING

import pcapreset

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_pcaps"
GOLDEN = Path(__file__).resolve().parent / "golden"


def captures() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*/*.pcap") if (p.parent / "labels.json").exists())


def golden_path(capture: Path) -> Path:
    return GOLDEN / f"{capture.parent.name}__{capture.stem}.json"


def stable_view(j: dict) -> dict:
    """The part of the JSON report a golden file pins down."""
    s = j["summary"]
    to = s.get("server_idle_timeout_s")
    return {
        "vantage": j["capture"]["vantage"]["where"],
        "flows": j["flows"],
        "resets": [
            {
                k: r[k]
                for k in ("client", "server", "sender", "cause", "phase", "rule", "rst_packets")
            }  # fmt: skip
            for r in j["resets"]
        ],
        "findings": sorted((f["cause"], f["count"]) for f in j["findings"]),
        "by_cause": s["by_cause"],
        "by_sender": s["by_sender"],
        "server_idle_timeout_s": None if to is None else round(to, 1),
        "server_idle_timeout_basis": s.get("server_idle_timeout_basis"),
    }


def current(capture: Path) -> dict:
    return json.loads(json.dumps(stable_view(pcapreset.analyze(capture).to_json())))


@pytest.mark.parametrize("capture", captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden(capture: Path) -> None:
    g = golden_path(capture)
    if not g.exists():
        pytest.fail(f"no golden file {g.name}: run scripts/regen-golden and review it")
    assert current(capture) == json.loads(g.read_text())


def test_every_golden_file_has_its_capture() -> None:
    names = {golden_path(c).name for c in captures()}
    stale = sorted(p.name for p in GOLDEN.glob("*.json") if p.name not in names)
    assert not stale, f"golden files without a sample capture: {stale}"


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate"), *args],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip


def test_evaluate_accuracy_on_the_lab_captures() -> None:
    p = _evaluate("--min-accuracy", "0.95", *(f"--exclude={n}" for n in sorted(LAB_PENDING)))
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("evaluate:")]
    assert line, p.stdout[-2000:] + p.stderr[-2000:]
    fields = dict(kv.split("=") for kv in line[-1].split()[1:])
    assert float(fields["cause_accuracy"]) >= 0.95, p.stdout[-3000:]
    assert float(fields["sender_accuracy"]) >= 0.95, p.stdout[-3000:]
    ok, total = fields["scenarios_ok"].split("/")
    assert ok == total, p.stdout[-3000:]
    assert p.returncode == 0


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="classifier to-do (issue 17)"))
     for n in sorted(LAB_PENDING)],
)  # fmt: skip
def test_pending_lab_scenario(scenario: str) -> None:
    """A scenario the classifier does not get right yet; passes (and so fails the strict
    xfail) once it is ok: then remove it from conftest.LAB_PENDING."""
    p = _evaluate("--scenario", scenario)
    line = [ln for ln in p.stdout.splitlines() if ln.strip().startswith(scenario)]
    assert line and line[-1].rstrip().endswith(" ok"), p.stdout[-3000:]
