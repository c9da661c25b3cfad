"""The three plots: what is drawn is checked on the Figure's artists (real lab captures)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import pcapreset
from pcapreset.notebook.plots import CAUSE_COLORS, idle_histogram, resets_over_time, time_sequence

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"
RACE = SAMPLES / "keepalive_race_node" / "backend.pcap"
CRASH = SAMPLES / "backend_crash" / "backend.pcap"


@pytest.fixture(scope="module")
def race() -> pcapreset.Analysis:
    if not RACE.exists():
        pytest.skip("keepalive_race_node sample capture not present")
    return pcapreset.load(RACE)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _bar_total(ax) -> float:  # type: ignore[no-untyped-def]
    return sum(p.get_height() for c in ax.containers for p in c)


def test_resets_over_time_counts_every_reset_in_its_cause_colour() -> None:
    if not CRASH.exists():
        pytest.skip("backend_crash sample capture not present")
    a = pcapreset.load(CRASH)
    fig = a.plot_resets_over_time()
    ax = fig.axes[0]
    assert _bar_total(ax) == len(a.resets)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    counts = a.resets["cause"].value_counts()
    assert labels == [f"{c} ({counts[c]})" for c in ("backend_crash", "connection_refused")]
    # each cause's bars have that cause's colour, and hold that cause's count
    for cause, container in zip(
        ("backend_crash", "connection_refused"), ax.containers, strict=True
    ):
        colours = {tuple(np.round(p.get_facecolor()[:3], 3)) for p in container}
        assert len(colours) == 1
        assert np.allclose(next(iter(colours)), _rgb(CAUSE_COLORS[cause]), atol=1e-3)
    # the crash resets (all within one instant) sit in one bin, before the refused connects
    first = [p.get_height() for p in ax.containers[0]]
    assert max(first) == counts["backend_crash"]
    # x axis spans the capture, not only the resets
    lo, hi = ax.get_xlim()
    cap = a.capture
    assert mdates.num2date(lo).timestamp() <= cap["first_ts"] + 1e-3
    assert mdates.num2date(hi).timestamp() >= cap["last_ts"] - 1e-3
    assert _png(fig)[:4] == b"\x89PNG"


def _rgb(hexcolour: str) -> tuple[float, float, float]:
    h = hexcolour.lstrip("#")
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def test_idle_histogram_marks_both_timeouts(race: pcapreset.Analysis) -> None:
    fig = race.plot_idle_histogram()
    ax = fig.axes[0]
    vlines = {ln.get_label(): ln.get_xdata()[0] for ln in ax.lines}
    backend = race.summary["server_idle_timeout_s"]
    nginx = race.summary["nginx_keepalive_timeout_s"]
    assert vlines == {
        f"backend idle timeout (inferred) {backend:g} s": backend,
        f"nginx keepalive_timeout {nginx:g} s": nginx,
    }
    assert _bar_total(ax) == race.resets["idle_before_s"].notna().sum()
    # the bars sit at the idle times: the tallest bin contains the backend's timeout area
    bars = [p for c in ax.containers for p in c if p.get_height() > 0]
    xs = [(p.get_x(), p.get_x() + p.get_width()) for p in bars]
    for idle in race.resets["idle_before_s"]:
        assert any(lo <= idle <= hi for lo, hi in xs)
    assert ax.get_xlim()[1] >= nginx  # both marks are visible


def test_idle_histogram_without_timeouts_or_resets() -> None:
    empty = pd.DataFrame({"idle_before_s": pd.Series([], dtype=float), "cause": []})
    fig = idle_histogram(empty, None, None)
    assert not fig.axes[0].lines
    assert "no reset" in fig.axes[0].texts[0].get_text()
    fig2 = resets_over_time(empty.assign(ts=pd.Series([], dtype="datetime64[ns, UTC]")))
    assert "no TCP resets" in fig2.axes[0].texts[0].get_text()
    assert _png(fig)[:4] == _png(fig2)[:4] == b"\x89PNG"


def test_time_sequence_marks_the_rst_where_it_was_sent(race: pcapreset.Analysis) -> None:
    cid = int(race.resets["conn_id"].iloc[0])
    p = race.packets(cid)
    fig = race.plot_time_sequence(cid)
    ax = fig.axes[0]
    rst_line = next(ln for ln in ax.lines if ln.get_label() == "RST")
    rst = p[p["flags"].str.contains("R")]
    assert np.allclose(rst_line.get_xdata(), rst["rel_time_s"])
    assert np.allclose(rst_line.get_ydata(), rst["rel_seq"])
    notes = [t.get_text() for t in ax.texts]
    assert notes == [f"RST from server\n{race.resets['cause'].iloc[0]}"]
    # one vertical bar per data segment, from seq to seq + len
    segs = np.concatenate([c.get_segments() for c in ax.collections])
    data = p[p["payload_bytes"] > 0]
    assert len(segs) == len(data)
    assert sorted(s[1, 1] - s[0, 1] for s in segs) == sorted(data["payload_bytes"])
    assert str(cid) in ax.get_title()
    assert _png(fig)[:4] == b"\x89PNG"


def test_time_sequence_default_and_empty(race: pcapreset.Analysis) -> None:
    fig = race.plot_time_sequence()
    assert f"connection {int(race.resets['conn_id'].iloc[0])}:" in fig.axes[0].get_title()
    empty = time_sequence(race.packets(0).iloc[:0])
    assert empty.axes[0].texts[0].get_text() == "no packets"


def test_plots_work_headless_without_pyplot(tmp_path: Path) -> None:
    if not RACE.exists():
        pytest.skip("keepalive_race_node sample capture not present")
    code = (
        "import sys, pcapreset\n"
        "from pcapreset.notebook.files import write_plots\n"
        f"paths = write_plots(pcapreset.load({str(RACE)!r}), {str(tmp_path)!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "print(len(paths))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
    assert len(list(tmp_path.glob("*.png"))) == 3
