"""pcapreset.load(): DataFrames from real lab captures, checked against the lab's labels
(written by scripts/lab from the backend's own log and the wire, not by pcapreset) and
against the CLI's JSON report (same engine, same values)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import pcapreset
from pcapreset.cli import main
from pcapreset.errors import PcapResetError
from pcapreset.interpret.rules import CAUSES, PHASES, SENDERS
from pcapreset.track.connstate import CONN_STATES

SAMPLES = Path(__file__).resolve().parents[1] / "sample_pcaps"
RACE = SAMPLES / "keepalive_race_node"
CRASH = SAMPLES / "backend_crash"


def _need(d: Path) -> Path:
    if not (d / "backend.pcap").exists():
        pytest.skip(f"{d.name} sample capture not present")
    return d


def _labels(d: Path) -> dict:
    return json.loads((d / "labels.json").read_text())


@pytest.fixture(scope="module")
def race() -> pcapreset.Analysis:
    return pcapreset.load(_need(RACE) / "backend.pcap")


def test_tables_match_the_lab_labels(race: pcapreset.Analysis) -> None:
    lab = _labels(RACE)
    cap = lab["captures"]["backend.pcap"]
    assert len(race.connections) == cap["tcp_connections"]
    assert race.resets["conn_id"].nunique() == cap["connections_with_rst"]
    assert int(race.resets["rst_packets"].sum()) == cap["rst_packets"]
    truth = {c["client"]: c for c in lab["connections"] if c["has_rst"]}
    got = race.resets.groupby("client", observed=True).first()
    assert set(got.index) == set(truth)
    for client, row in got.iterrows():
        assert row["cause"] == truth[client]["cause"]
        assert row["sender"] == truth[client]["sender"]
    # the backend's real idle timeout (from the lab config), within 0.1 s
    assert race.summary["server_idle_timeout_s"] == pytest.approx(
        lab["backend_idle_timeout_s"], abs=0.1
    )


def test_same_values_as_the_cli_json(race: pcapreset.Analysis) -> None:
    res = CliRunner().invoke(
        main, ["analyze", "-q", "--format", "json", str(RACE / "backend.pcap")]
    )
    assert res.exit_code == 0, res.output
    j = json.loads(res.output)
    assert len(race.connections) == j["flows"]
    assert race.summary == j["summary"]
    assert len(race.resets) == len(j["resets"])
    for (_, row), r in zip(race.resets.iterrows(), j["resets"], strict=True):
        assert row["client"] == r["client"] and row["server"] == r["server"]
        assert row["cause"] == r["cause"] and row["sender"] == r["sender"]
        assert row["phase"] == r["phase"]
        assert row["idle_before_s"] == pytest.approx(r["idle_before_s"])
        assert row["ts"].timestamp() == pytest.approx(r["ts"], abs=1e-6)
        assert row["evidence"] == r["evidence"]


def test_categoricals_carry_the_full_code_sets(race: pcapreset.Analysis) -> None:
    r, c = race.resets, race.connections
    assert list(r["cause"].cat.categories) == list(CAUSES)
    assert list(r["sender"].cat.categories) == list(SENDERS)
    assert list(r["phase"].cat.categories) == list(PHASES)
    assert list(c["conn_state"].cat.categories) == list(CONN_STATES)
    vc = r["cause"].value_counts()
    assert set(vc.index) == set(CAUSES)  # causes that did not happen show as 0
    assert vc["keepalive_race"] == len(r) and vc["backend_crash"] == 0
    states = c["conn_state"].value_counts()
    assert len(states) == len(CONN_STATES) and states.sum() == len(c)
    res = CliRunner().invoke(main, ["conns", "--format", "json", str(RACE / "backend.pcap")])
    rows = json.loads(res.output)  # the same engine's conn_state, row by row
    assert list(c["conn_state"].astype(str)) == [row["conn_state"] for row in rows]


def test_timestamps_units_and_split_endpoints(race: pcapreset.Analysis) -> None:
    c, r = race.connections, race.resets
    for df, col in ((r, "ts"), (c, "start"), (c, "end")):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype)
        assert str(df[col].dt.tz) == "UTC"
    lab = _labels(RACE)
    first = {x["client"]: x["per_capture"]["backend.pcap"]["first_ts"] for x in lab["connections"]}
    for _, row in c.iterrows():
        assert row["start"].timestamp() == pytest.approx(first[row["client"]], abs=1e-6)
    dur = (c["end"] - c["start"]).dt.total_seconds()
    np.testing.assert_allclose(dur, c["duration_s"], atol=2e-6)
    for df in (c, r):
        for role in ("client", "server"):
            rebuilt = df[f"{role}_ip"] + ":" + df[f"{role}_port"].astype(str)
            assert (rebuilt == df[role]).all()
    assert (c["server_port"] == 3000).all()
    assert (c["client_bytes"] > 0).all() and "idle_before_s" in r.columns
    # the timeout that raced: idle before each keep-alive reset is about the backend's
    assert r["idle_before_s"].between(5.9, 6.5).all()


def test_packets_drill_down_matches_the_connection(race: pcapreset.Analysis) -> None:
    lab = _labels(RACE)
    truth = {x["client"]: x["per_capture"]["backend.pcap"] for x in lab["connections"]}
    for conn_id, conn in race.connections.iterrows():
        p = race.packets(int(conn_id))
        assert len(p) == conn["packets"]
        assert (p["direction"] == "client").sum() == conn["client_packets"]
        assert (p["direction"] == "server").sum() == conn["server_packets"]
        rst = p["flags"].str.contains("R")
        assert rst.sum() == truth[conn["client"]]["rst_packets"]
        assert p["ts"].is_monotonic_increasing
        assert p["ts"].iloc[0] == conn["start"] and p["ts"].iloc[-1] == conn["end"]
        syn = p[p["flags"] == "S"]
        assert (
            len(syn) == 1 and syn["rel_seq"].iloc[0] == 0 and syn["direction"].iloc[0] == "client"
        )
        # the highest client sequence reached equals the client bytes (+1 for SYN)
        c_data = p[(p["direction"] == "client") & (p["payload_bytes"] > 0)]
        assert (c_data["rel_seq"] + c_data["payload_bytes"]).max() == conn["client_bytes"] + 1
    # keep-alive race: the server's first RST is bare (no ACK) and sits at the client's ACK
    cid = int(race.resets["conn_id"].iloc[0])
    p = race.packets(cid)
    first_rst = p[p["flags"].str.contains("R")].iloc[0]
    assert first_rst["direction"] == "server" and first_rst["flags"] == "R"
    last_client_ack = p[(p["direction"] == "client") & (p["ts"] < first_rst["ts"])]["rel_ack"].iloc[
        -1
    ]
    assert first_rst["rel_seq"] == last_client_ack


def test_packets_unknown_connection_is_a_clear_error(race: pcapreset.Analysis) -> None:
    with pytest.raises(PcapResetError, match="no connection with id 999"):
        race.packets(999)


def _split_pcap(src: Path, a: Path, b: Path, first_part: int) -> None:
    """Cut a classic pcap into two files (a rotated `tcpdump -C` set)."""
    raw = src.read_bytes()
    head, pos, recs = raw[:24], 24, []
    e = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    while pos < len(raw):
        incl = struct.unpack(e + "I", raw[pos + 8 : pos + 12])[0]
        recs.append(raw[pos : pos + 16 + incl])
        pos += 16 + incl
    a.write_bytes(head + b"".join(recs[:first_part]))
    b.write_bytes(head + b"".join(recs[first_part:]))


def test_several_files_are_one_timeline(race: pcapreset.Analysis, tmp_path: Path) -> None:
    a, b = tmp_path / "part0.pcap", tmp_path / "part1.pcap"
    _split_pcap(RACE / "backend.pcap", a, b, first_part=30)
    two = pcapreset.load([a, b])
    cols = ["client", "server", "packets", "client_bytes", "server_bytes", "conn_state"]
    pd.testing.assert_frame_equal(two.connections[cols], race.connections[cols])
    pd.testing.assert_frame_equal(
        two.resets[["client", "cause", "ts"]], race.resets[["client", "cause", "ts"]]
    )
    # a connection that spans both files comes back whole, each packet from its file
    spans = two.connections[two.connections["packets"] > 0].index
    for cid in spans:
        p = two.packets(int(cid))
        if p["file"].nunique() == 2:
            whole = race.packets(int(cid))
            assert len(p) == len(whole)
            assert (p["seq"].to_numpy() == whole["seq"].to_numpy()).all()
            assert p[p["file"] == str(b)]["frame_no"].min() == 1
            break
    else:
        pytest.fail("no connection spans the two files")


def test_findings_frame_from_a_crash_capture() -> None:
    a = pcapreset.load(_need(CRASH) / "backend.pcap")
    lab = _labels(CRASH)
    assert len(a.connections) == lab["captures"]["backend.pcap"]["tcp_connections"]
    assert set(a.findings["cause"]) == {f["cause"] for f in a.to_json()["findings"]}
    assert (a.findings["count"] > 0).all()
    assert a.findings["flows"].map(len).sum() > 0
    assert set(a.resets["cause"].unique()) == {"backend_crash", "connection_refused"}
    assert a.connections["reset_cause"].isna().sum() == (a.connections["resets"] == 0).sum()


def test_export_parquet_and_csv_round_trip(race: pcapreset.Analysis, tmp_path: Path) -> None:
    written = race.export(tmp_path / "pq")
    assert [p.name for p in written] == [
        "connections.parquet",
        "resets.parquet",
        "findings.parquet",
    ]
    back = pd.read_parquet(tmp_path / "pq" / "resets.parquet")
    assert list(back["cause"].cat.categories) == list(CAUSES)
    assert str(back["ts"].dt.tz) == "UTC"
    assert (back["ts"] == race.resets["ts"]).all()
    assert list(back["evidence"].iloc[0]) == race.resets["evidence"].iloc[0]
    conns = pd.read_parquet(tmp_path / "pq" / "connections.parquet")
    assert len(conns) == len(race.connections)
    race.export(tmp_path / "csv", "csv")
    rc = pd.read_csv(tmp_path / "csv" / "resets.csv")
    assert list(rc["client"]) == list(race.resets["client"])
    assert rc["evidence"].iloc[0].split(" | ") == race.resets["evidence"].iloc[0]
    ts = pd.to_datetime(rc["ts"], utc=True)
    assert (ts == race.resets["ts"]).all()
    with pytest.raises(PcapResetError, match="unknown export format"):
        race.export(tmp_path / "x", "xlsx")


def test_cli_plot_and_export(tmp_path: Path) -> None:
    pcap = str(_need(RACE) / "backend.pcap")
    res = CliRunner().invoke(
        main,
        ["analyze", pcap, "--plot", str(tmp_path / "plots"), "--export", str(tmp_path / "t"),
         "--export-format", "csv"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    first_reset_conn = int(pcapreset.load(pcap).resets["conn_id"].iloc[0])
    assert pngs == sorted(
        ["idle_before.png", "resets_over_time.png", f"time_sequence_conn{first_reset_conn}.png"]
    )
    for name in pngs:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert tables == ["connections.csv", "findings.csv", "resets.csv"]
    assert len(pd.read_csv(tmp_path / "t" / "connections.csv")) == 7
    assert "keepalive_race" in res.output  # the normal report is still printed


def test_cli_export_to_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = CliRunner().invoke(
        main, ["analyze", "-q", str(_need(RACE) / "backend.pcap"), "--export", str(blocker / "d")]
    )
    assert res.exit_code != 0
    assert "Traceback" not in res.output and "cannot write to" in res.output
