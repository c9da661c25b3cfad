"""The real-world audit: pcapreset against hand-made labels of RST events in the public corpus.

tests/realworld/labels.tsv holds one row per RST event, labelled by reading the packets
in tshark (see README.md beside it). scripts/realworld-audit scores the tool's JSON
``resets[]`` against them; this test runs that scoring in-process (each capture analysed
once) and asserts floors: the figures measured on the code when the floors were set,
minus 0.01, so that a regression fails. Raise the floors when the figures improve.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_LOADER = SourceFileLoader("realworld_audit", str(HERE.parents[1] / "scripts" / "realworld-audit"))
_SPEC = importlib.util.spec_from_loader("realworld_audit", _LOADER)
assert _SPEC is not None
AUDIT = importlib.util.module_from_spec(_SPEC)
_LOADER.exec_module(AUDIT)
CORPUS = AUDIT.find_corpus()
needs_corpus = pytest.mark.skipif(
    CORPUS is None or not (CORPUS / "MANIFEST.tsv").is_file(),
    reason="public corpus not found (set PCAPRESET_CORPUS)",
)

#: measured figures minus 0.01 (see README.md "Figures")
FLOOR_SENDER = 0.981
FLOOR_CAUSE = 0.952
FLOOR_PRECISION = 0.960

CAUSES = {
    "keepalive_race", "backlog_overflow", "backend_crash", "abortive_close",
    "connection_refused", "client_abort", "middlebox", "after_close", "probe",
    "backend_restart", "unknown",
}  # fmt: skip
ENDPOINT = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$")


@pytest.fixture(scope="module")
def result():
    return AUDIT.audit(AUDIT.load_labels(), CORPUS, negatives=AUDIT.negative_files(CORPUS))


def test_labels_are_well_formed():
    with open(AUDIT.LABELS, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        assert reader.fieldnames == [
            "file", "client", "server", "ts", "rst_src", "sender", "cause", "app", "reason",
            "best_guess",
        ]  # fmt: skip
        rows = list(reader)
    assert len(rows) >= 300
    per_file: dict[str, int] = {}
    seen = set()
    for r in rows:
        where = (r["file"], r["ts"])
        assert where not in seen, where
        seen.add(where)
        per_file[r["file"]] = per_file.get(r["file"], 0) + 1
        assert ENDPOINT.match(r["client"]) and ENDPOINT.match(r["server"]), where
        assert r["client"] != r["server"], where
        assert r["rst_src"] in (r["client"], r["server"]), where
        assert re.fullmatch(r"\d+\.\d{6}", r["ts"]), where
        assert r["sender"] in ("client", "server", "middlebox", "unknown"), where
        if r["sender"] in ("client", "server"):
            assert r[r["sender"]] == r["rst_src"], where
        assert r["cause"] in CAUSES, where
        assert r["app"] in ("http", "tls", "fastcgi", "uwsgi", "websocket", "other", "none")
        assert len(r["reason"]) > 30, where
        assert (r["best_guess"] != "") == (r["cause"] == "unknown"), where
        if r["best_guess"]:
            assert r["best_guess"] in CAUSES, where
    assert len(per_file) >= 120
    assert max(per_file.values()) <= 3


@needs_corpus
def test_labelled_files_are_in_the_corpus():
    with open(CORPUS / "MANIFEST.tsv", newline="") as fh:
        manifest = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}
    for lab in AUDIT.load_labels():
        assert lab["file"] in manifest, lab["file"]
        assert int(manifest[lab["file"]]["tcp_rst_packets"]) > 0, lab["file"]


def test_matching_is_one_to_one_closest_first_and_judges_the_blamed_endpoint():
    a, b = "10.0.0.1:40000", "10.0.0.2:80"
    labels = [
        {"file": "f", "client": a, "server": b, "ts": 100.0, "rst_src": b, "sender": "server",
         "cause": "after_close"},
        {"file": "f", "client": a, "server": b, "ts": 100.3, "rst_src": a, "sender": "client",
         "cause": "client_abort"},
    ]  # fmt: skip
    resets = [
        # roles swapped by the tool, but it blames b, the RST's source: sender right
        {"client": b, "server": a, "ts": 100.0002, "sender": "client", "cause": "after_close"},
        {"client": a, "server": b, "ts": 100.9, "sender": "server", "cause": "unknown"},
        {"client": a, "server": "10.0.0.3:80", "ts": 100.3, "sender": "client", "cause": "x"},
    ]
    got = AUDIT.match(labels, resets)
    assert got[0] is resets[0] and got[1] is resets[1]
    res = AUDIT.audit(labels, Path("."), get_resets=lambda _p: resets)
    rows = res["rows"]
    assert rows[0]["sender_ok"] and rows[0]["cause_ok"]
    assert not rows[1]["sender_ok"] and not rows[1]["cause_ok"]
    f = res["figures"]
    assert (f["sender_accuracy"], f["cause_accuracy"]) == (0.5, 0.5)
    assert f["specific_precision"] == 1.0 and f["specific_verdicts"] == 1
    # nothing within 1 s: the label is a missing event, wrong on both counts
    far = AUDIT.audit(labels[:1], Path("."), get_resets=lambda _p: [dict(resets[0], ts=102.0)])
    assert far["figures"]["matched"] == 0 and far["figures"]["cause_accuracy"] == 0.0


@needs_corpus
def test_real_world_figures_do_not_regress(result):
    f = result["figures"]
    assert f["labels"] >= 300 and f["captures"] >= 120
    assert f["sender_accuracy"] >= FLOOR_SENDER, f
    assert f["cause_accuracy"] >= FLOOR_CAUSE, f
    assert f["specific_precision"] >= FLOOR_PRECISION, f


@needs_corpus
def test_captures_without_rst_get_no_reset_events(result):
    assert result["figures"]["negative_captures"] >= 10
    assert result["false_alarms"] == []
