"""scripts/bench runs end to end and pcapreset (and tshark, when installed)
count exactly the generator's truth. No timing is asserted: benchmarks are
measured by `scripts/bench`, not by the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_small_run_counts_equal_truth(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "scripts" / "bench"), "--conns", "150", "--repeat", "1",
        "--formats", "pcap,sll2,pcapng,pcap.gz", "--workdir", str(tmp_path),
    ]  # fmt: skip
    if not shutil.which("tshark"):
        cmd.append("--no-tshark")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [
        line
        for line in out.splitlines()
        if line.split()[:1] in (["pcap"], ["sll2"], ["pcapng"], ["pcap.gz"])
    ]
    assert len(rows) == 4, out
    for row in rows:
        assert "pcapreset == truth" in row, row
        if shutil.which("tshark"):
            assert "tshark conns == truth" in row, row
    assert not list(tmp_path.glob("bench-*")), "generated files are removed unless --keep"
