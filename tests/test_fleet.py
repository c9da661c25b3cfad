"""Fleet analysis on Dask (pcapreset.cluster: run, merge, text, `pcapreset fleet`) on the
sample captures laid out as hosts, with a distributed.LocalCluster."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLES

import pcapreset
from pcapreset.cli import main
from pcapreset.cluster import run as fleetrun
from pcapreset.cluster.run import host_from_spec, hosts_from_specs
from pcapreset.interpret.rules import CAUSES

distributed = pytest.importorskip("distributed")

SCENARIOS = sorted(p.parent.name for p in SAMPLES.glob("*/backend.pcap"))
needs_samples = pytest.mark.skipif(not SCENARIOS, reason="no captures in sample_pcaps/")


def split_pcap(src: Path, dst1: Path, dst2: Path) -> int:
    """Write a little-endian pcap's records in two files (a rotated set of two);
    returns the records in the first."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    hdr, at, starts = data[:24], 24, []
    while at + 16 <= len(data):
        starts.append(at)
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
    cut = starts[len(starts) // 2]
    dst1.write_bytes(data[:cut])
    dst2.write_bytes(hdr + data[cut:])
    return len(starts) // 2


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def fleet_specs(tmp_path_factory) -> list[str]:
    """Every sample scenario as two hosts: its backend side (a directory with
    backend.pcap and error.log) and its nginx side (a glob); a host whose set
    is mixed/backend.pcap rotated into two files; a host with garbage."""
    root = tmp_path_factory.mktemp("fleet")
    specs = []
    for name in SCENARIOS:
        d = root / f"{name}-backend"
        d.mkdir()
        shutil.copy(SAMPLES / name / "backend.pcap", d)
        shutil.copy(SAMPLES / name / "labels.json", d)  # not a capture: skipped
        if (SAMPLES / name / "error.log").exists():
            shutil.copy(SAMPLES / name / "error.log", d)
        specs += [str(d), f"{name}-nginx={SAMPLES / name}/ngin*.pcap"]
    rot = root / "rotated"
    rot.mkdir()
    split_pcap(SAMPLES / "mixed" / "backend.pcap", rot / "cap.pcap1", rot / "cap.pcap2")
    broken = root / "broken"
    broken.mkdir()
    (broken / "capture.pcap").write_bytes(b"this is no capture at all, " * 40)
    return specs + [str(rot), str(broken)]


PROGRESS: list[tuple[int, int, str, str]] = []


@pytest.fixture(scope="module")
def report(cluster, fleet_specs):
    """The fleet run on a scheduler given by its address."""
    return pcapreset.fleet(
        fleet_specs,
        scheduler=cluster.scheduler_address,
        nginx_tz="UTC",
        progress=lambda done, total, e: PROGRESS.append((done, total, e["host"], e["status"])),
    )


@needs_samples
def test_progress_as_hosts_finish(report):
    n = len(report.hosts)
    assert [(d, t) for d, t, _h, _s in PROGRESS] == [(i, n) for i in range(1, n + 1)]
    assert sorted(h for _d, _t, h, _s in PROGRESS) == sorted(h["host"] for h in report.hosts)
    assert [h for _d, _t, h, s in PROGRESS if s == "failed"] == ["broken"]
    assert all(h["worker"].startswith("tcp://") for h in report.ok)
    assert all(h["cpu_s"] >= 0 and h["seconds"] > 0 for h in report.ok)


@needs_samples
def test_verdicts_equal_per_file_analyze(report):
    ok = {h["host"]: h for h in report.ok}
    assert len(ok) == 2 * len(SCENARIOS) + 1
    for h in ok.values():
        rep = pcapreset.analyze(h["files"], nginx_log=h["nginx_logs"] or None, nginx_tz="UTC")
        js = rep.to_json()
        assert h["resets"] == js["resets"], h["host"]
        assert h["summary"] == js["summary"], h["host"]
        assert h["findings"] == js["findings"], h["host"]
        assert (h["packets"], h["flows"]) == (js["capture"]["packets"], js["flows"])
    # the backend hosts took error.log from their directory, the nginx ones from beside the glob
    assert all(len(h["nginx_logs"]) == 1 for h in ok.values() if h["host"] != "rotated")
    assert sum(h["summary"]["resets"] for h in ok.values()) > 50


@needs_samples
def test_rotated_set_is_one_timeline(report):
    (rot,) = [h for h in report.ok if h["host"] == "rotated"]
    assert [Path(f).name for f in rot["files"]] == ["cap.pcap1", "cap.pcap2"]
    whole = pcapreset.analyze(SAMPLES / "mixed" / "backend.pcap").to_json()
    key = ("client", "server", "ts", "cause", "sender", "phase", "confidence")
    assert [tuple(r[k] for k in key) for r in rot["resets"]] == [
        tuple(r[k] for k in key) for r in whole["resets"]
    ]
    assert rot["resets"] and rot["flows"] == whole["flows"]


@needs_samples
def test_broken_host_listed_with_reason(report):
    assert report.failed == [
        {
            "host": "broken",
            "files": [report.failed[0]["files"][0]],
            "error": report.failed[0]["error"],
        }
    ]
    err = report.failed[0]["error"]
    assert "capture.pcap" in err and "not a pcap" in err and "\n" not in err
    t = report.totals()
    assert (t["hosts"], t["analysed"], t["failed"]) == (2 * len(SCENARIOS) + 2, t["hosts"] - 1, 1)


@needs_samples
def test_totals_and_servers_add_up(report):
    t = report.totals()
    by_cause: dict[str, int] = {}
    for h in report.ok:
        for r in h["resets"]:
            by_cause[r["cause"]] = by_cause.get(r["cause"], 0) + 1
    assert t["by_cause"] == {c: by_cause[c] for c in CAUSES if c in by_cause}
    assert t["resets"] == sum(by_cause.values())
    assert sum(s["resets"] for s in report.servers()) == t["resets"]
    for h in report.ok:
        assert sum(s["resets"] for s in h["servers"]) == h["summary"]["resets"]
        timeouts = h["summary"]["server_idle_timeouts"]
        for s in h["servers"]:
            assert s["idle_timeout_s"] == timeouts.get(s["server"])
    node = next(h for h in report.ok if h["host"] == "keepalive_race_node-backend")
    (srv,) = node["servers"]
    assert srv["by_cause"] == {"keepalive_race": 5} and 5.9 < srv["idle_timeout_s"] < 6.1
    recs = report.recommendations()
    assert any("keepAliveTimeout" in r["recommendation"] for r in recs)
    assert all(r["hosts"] for r in recs)


@needs_samples
def test_resets_frame_has_every_host(report):
    df = report.resets_frame()
    assert len(df) == report.totals()["resets"]
    assert list(df.columns[:3]) == ["host", "conn_id", "ts"]
    assert set(df["host"].cat.categories) == {h["host"] for h in report.hosts}
    assert list(df["cause"].cat.categories) == list(CAUSES)
    counts = df.groupby("host", observed=True).size().to_dict()
    assert counts == {h["host"]: h["summary"]["resets"] for h in report.ok if h["resets"]}
    v6 = df[df["host"] == "keepalive_race_node_ipv6-backend"]
    assert len(v6) and all(":" in ip for ip in v6["server_ip"])
    hosts = report.hosts_frame()
    assert hosts.loc[hosts["host"] == "broken", "status"].item() == "failed"


@needs_samples
def test_text_fits_80_columns(report):
    lines = list(report.text_lines())
    assert all(len(line) < 80 for line in lines), max(lines, key=len)
    text = "\n".join(lines)
    assert "failed hosts (1)" in text and "  broken: " in text
    assert "keepalive_race_node-backend" in text


@needs_samples
def test_cli_on_scheduler_address_json(cluster, fleet_specs):
    res = CliRunner().invoke(
        main,
        ["fleet", *fleet_specs[:4], "--scheduler", cluster.scheduler_address, "--format", "json"],
    )
    assert res.exit_code == 0, res.output
    js = json.loads(res.stdout)
    assert set(js) == {"tool", "fleet", "totals", "servers", "recommendations", "hosts", "failed"}
    assert js["fleet"]["scheduler"] == cluster.scheduler_address and js["fleet"]["workers"] == 2
    assert [h["host"] for h in js["hosts"]] == [
        f"{SCENARIOS[0]}-backend", f"{SCENARIOS[0]}-nginx",
        f"{SCENARIOS[1]}-backend", f"{SCENARIOS[1]}-nginx",
    ]  # fmt: skip
    assert js["failed"] == [] and all(h["status"] == "ok" for h in js["hosts"])


@needs_samples
def test_cli_default_local_cluster(fleet_specs):
    """No --scheduler: a LocalCluster of worker processes on this machine."""
    specs = [fleet_specs[-2], fleet_specs[-1]]  # rotated, broken
    res = CliRunner().invoke(main, ["fleet", *specs, "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "2 Dask workers (local cluster)" in res.stdout
    assert "1 of 2 hosts failed" in res.stderr


def test_all_hosts_failed_exit_status(tmp_path):
    """No host has a capture: nothing to run (no cluster), every host listed, status 1."""
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["fleet", str(tmp_path / "empty"), str(tmp_path / "no*.pcap")])
    assert res.exit_code == 1
    text = " ".join(res.stdout.split())  # (long paths wrap)
    assert "no capture file in this directory" in text and "no file matches" in text
    assert "0 Dask workers" in text
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fleetrun, "CONNECT_TIMEOUT_S", 1)
    (tmp_path / "a.pcap").write_bytes((SAMPLES / "mixed" / "backend.pcap").read_bytes())
    res = CliRunner().invoke(main, ["fleet", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 1
    assert "cannot reach the Dask scheduler tcp://127.0.0.1:9: Connection refused" in res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)


def test_host_specs(tmp_path):
    d = tmp_path / "web1"
    d.mkdir()
    for n in ("cap.pcap10", "cap.pcap2", "cap.pcap", "README.md", "error.log", "error.log.1"):
        (d / n).write_bytes(b"x")
    (d / "noname").write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 20)  # pcapng by its magic
    h = host_from_spec(str(d))
    assert h.name == "web1" and h.error is None
    assert [Path(f).name for f in h.files] == ["cap.pcap", "cap.pcap2", "cap.pcap10", "noname"]
    assert [Path(f).name for f in h.nginx_logs] == ["error.log", "error.log.1"]
    g = host_from_spec(f"edge={d}/cap.pcap*", nginx_logs=False)
    assert g.name == "edge" and len(g.files) == 3 and g.nginx_logs == []
    assert host_from_spec(str(tmp_path / "empty*")).error.endswith("no file matches")
    a, b, c = hosts_from_specs([str(d), f"{d}/cap.pcap", str(d)])
    assert a.name != c.name and {a.name, b.name, c.name} >= {str(d), f"{d}/cap.pcap"}
