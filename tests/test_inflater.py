"""The gzip inflater (compressed.gzip_reader): ISA-L's igzip when `isal` is
installed, the standard library's zlib otherwise; the same frames, warnings and
errors either way."""

from __future__ import annotations

import gzip
import sys

import pytest
from conftest import SAMPLES

import pcapreset
from pcapreset.capture import compressed
from pcapreset.errors import CaptureError

SAMPLE = SAMPLES / "mixed" / "backend.pcap"


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch) -> str:
    if request.param == "isal":
        pytest.importorskip("isal.igzip")
    else:  # as on a machine without isal
        monkeypatch.setitem(sys.modules, "isal", None)
        monkeypatch.setitem(sys.modules, "isal.igzip", None)
        monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    return request.param


def test_chosen_inflater(inflater, tmp_path):
    p = tmp_path / "a.gz"
    p.write_bytes(gzip.compress(b"0123456789" * 1000))
    with open(p, "rb") as raw:
        fh = compressed.gzip_reader(raw)
        assert type(fh).__name__ == ("_IsalGzip" if inflater == "isal" else "GzipFile")
        assert fh.read() == b"0123456789" * 1000
    names = {e.__module__ + "." + e.__name__ for e in compressed.decompress_errors()}
    assert "zlib.error" in names and (len(names) == 5) == (inflater == "isal")


def test_same_report_as_plain_file(inflater, tmp_path):
    gz = tmp_path / "backend.pcap.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    plain, packed = pcapreset.analyze(SAMPLE).to_json(), pcapreset.analyze(gz).to_json()
    assert packed["capture"]["files"][0]["format"] == "pcap+gzip"
    assert packed["resets"] == plain["resets"] and packed["summary"] == plain["summary"]
    assert packed["resets"]


def test_damage_in_first_block_is_one_line_error(inflater, tmp_path):
    data = gzip.compress(SAMPLE.read_bytes())
    bad = tmp_path / "bad.pcap.gz"
    bad.write_bytes(data[:30] + bytes(b ^ 0xFF for b in data[30:60]) + data[60:])
    with pytest.raises(CaptureError, match="broken gzip data"):
        pcapreset.analyze(bad)


def test_cut_stream_is_a_warning(inflater, tmp_path):
    data = gzip.compress(SAMPLE.read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) // 2])
    warnings = pcapreset.analyze(cut).to_json()["capture"]["warnings"]
    assert any(w["kind"] == "read_error" for w in warnings), warnings


def _salvage(fh) -> tuple[bytes, str | None]:
    out = bytearray()
    try:
        while d := fh.read1(1000):
            out += d
    except Exception as e:  # noqa: BLE001 - the test compares which error
        return bytes(out), type(e).__name__
    return bytes(out), None


@pytest.mark.parametrize("damage", ["cut 0.3", "cut 0.9", "cut 0.999", "flip 0.5", "junk"])
def test_damaged_stream_salvaged_as_zlib_does(damage, tmp_path):
    """igzip alone returns nothing of a small stream cut short; the reader
    returns what zlib returns, and fails as zlib fails."""
    pytest.importorskip("isal.igzip")
    data = gzip.compress(SAMPLE.read_bytes() * 40)
    kind, _, frac = damage.partition(" ")
    at = int(len(data) * float(frac or 0))
    if kind == "cut":
        bad = data[:at]
    elif kind == "flip":
        bad = data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]
    else:
        bad = data + b"garbage!"
    p = tmp_path / "x.gz"
    p.write_bytes(bad)
    with open(p, "rb") as raw:
        got = _salvage(compressed.gzip_reader(raw))
    with open(p, "rb") as raw:
        want = _salvage(gzip.GzipFile(fileobj=raw))
    assert got == want
    assert want[1] is not None and len(want[0]) > 0
