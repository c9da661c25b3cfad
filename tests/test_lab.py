"""One short real lab run: nginx + the Python socket backend in network namespaces.

3 connects while the backend is down (refused), then 3 responses closed with SO_LINGER 0.
The capture is analysed with `python -m pcapreset analyze --format json` and checked against
the lab's OWN logs (client log, nginx error.log, backend log) -- not against labels derived
from pcapreset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import pcapreset_lab as lab  # noqa: E402

pytestmark = pytest.mark.lab


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab test needs root (network namespaces); run `make test` as root"
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        return "iproute2 (ip) not installed"
    lab.ensure_deps(log=lambda *a: None)  # installs nginx/tcpdump/... when missing (root)
    probe = f"prl-probe-{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if p.returncode != 0:
        return f"cannot create network namespaces: {p.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    missing = [m for m in lab.prerequisites() if not m.startswith("root")]
    if missing:
        return f"missing system tools (scripts/install-sysdeps installs them): {missing}"
    return None


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("lab")
    try:
        labels = lab.run_scenario("refused_then_linger", out, log=lambda *a: None)
    finally:
        lab.cleanup_all()
    return out / "refused_then_linger", labels


def _analyze(pcap: Path) -> dict:
    p = subprocess.run(
        [sys.executable, "-m", "pcapreset", "analyze", "--format", "json", str(pcap)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert p.returncode == 0, f"pcapreset analyze failed: {p.stderr[-2000:]}"
    return json.loads(p.stdout)


def test_lab_cleans_up(lab_run):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"prl-{os.getpid()}" not in out


def test_lab_logs_and_wire_agree(lab_run):
    folder, labels = lab_run
    backend_log = lab.read_jsonl(folder / "backend.log")
    lingers = [e for e in backend_log if e["event"] == "closed with SO_LINGER 0"]
    refused_lines = [
        ln
        for ln in (folder / "error.log").read_text().splitlines()
        if "connect() failed (111" in ln
    ]
    assert len(lingers) == 3
    assert len(refused_lines) == 3
    # the lab's independent reader sees the same on the wire
    causes = [c["cause"] for c in labels["connections"] if c["has_rst"]]
    assert sorted(causes) == ["abortive_close"] * 3 + ["connection_refused"] * 3
    assert labels["captures"]["backend.pcap"]["linktype"] in (113, 276)
    assert labels["captures"]["nginx.pcap"]["linktype"] == 1


@pytest.mark.parametrize("capture", ["backend.pcap", "nginx.pcap"])
def test_pcapreset_matches_lab_log(lab_run, capture):
    folder, _labels = lab_run
    backend_log = lab.read_jsonl(folder / "backend.log")
    linger_peers = {e["peer"] for e in backend_log if e["event"] == "closed with SO_LINGER 0"}
    n_refused = sum(
        1
        for ln in (folder / "error.log").read_text().splitlines()
        if re.search(r"connect\(\) failed \(111", ln)
    )
    res = _analyze(folder / capture)
    resets = res["resets"]
    # one RST event per refused connect and per SO_LINGER 0 close, nothing else
    assert len(resets) == n_refused + len(linger_peers), resets
    refused = [r for r in resets if r["cause"] == "connection_refused"]
    assert len(refused) == n_refused
    assert all(r["sender"] == "server" for r in refused)
    linger = [r for r in resets if r["client"] in linger_peers]
    assert len(linger) == len(linger_peers)
    assert all(r["sender"] == "server" for r in linger)
    assert all(r["cause"] == "abortive_close" for r in linger)
    assert all(r["server"] == "10.77.3.2:3000" for r in resets)
