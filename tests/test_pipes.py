"""Captures from streams: `-` (standard input), pipes, FIFOs, /dev/stdin and
`<(...)` give the same analysis as the file, for pcap, pcapng and gzip; a
stream is never seeked and never read twice."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLES, ng_epb, ng_idb, ng_shb

from pcapreset.capture.instream import Prefixed, is_stream, open_stream
from pcapreset.capture.sources import CaptureReader
from pcapreset.errors import CaptureError

PCAP = SAMPLES / "keepalive_race_node" / "backend.pcap"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CLI = [sys.executable, "-m", "pcapreset"]


def _analyze(*args: str, stdin=None, shell: str | None = None) -> dict:
    if shell is not None:
        out = subprocess.run(
            ["bash", "-c", shell], capture_output=True, env=ENV, cwd=REPO, timeout=120
        )
    else:
        out = subprocess.run(
            [*CLI, "analyze", *args, "--format", "json"],
            capture_output=True, stdin=stdin, env=ENV, cwd=REPO, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    assert b"Traceback" not in out.stderr
    rep = json.loads(out.stdout)
    files = rep["capture"].pop("files")
    assert len(files) == 1
    return rep


def test_tcpdump_pipe_equals_the_file() -> None:
    """`tcpdump -r x.pcap -w - | pcapreset analyze -` == `pcapreset analyze x.pcap`."""
    want = _analyze(str(PCAP))
    writer = f"tcpdump -r {PCAP} -w - 2>/dev/null" if shutil.which("tcpdump") else f"cat {PCAP}"
    got = _analyze(shell=f"{writer} | {sys.executable} -m pcapreset analyze - --format json")
    assert got == want
    assert want["summary"]["by_cause"] == {"keepalive_race": 5}


@pytest.mark.parametrize("how", ["dev-stdin", "process-substitution", "fifo"])
def test_stdin_device_process_substitution_and_fifo(how: str, tmp_path: Path) -> None:
    want = _analyze(str(PCAP))
    if how == "dev-stdin":
        with open(PCAP, "rb") as f:
            got = _analyze("/dev/stdin", stdin=f)
    elif how == "process-substitution":
        got = _analyze(shell=f"{sys.executable} -m pcapreset analyze <(cat {PCAP}) --format json")
    else:
        fifo = tmp_path / "cap.fifo"
        os.mkfifo(fifo)
        got = _analyze(shell=f"cat {PCAP} > {fifo} & {sys.executable} -m pcapreset "
                       f"analyze {fifo} --format json; wait")  # fmt: skip
    assert got == want


def test_gzip_and_pcapng_through_a_pipe(tmp_path: Path) -> None:
    gz = tmp_path / "backend.pcap.gz"
    gz.write_bytes(gzip.compress(PCAP.read_bytes()))
    want = _analyze(str(PCAP))
    with open(gz, "rb") as f:
        got = _analyze("-", stdin=f)
    assert got == want
    ng = tmp_path / "backend.pcapng"
    ng.write_bytes(_as_pcapng(PCAP.read_bytes()))
    want_ng = _analyze(str(ng))
    got_ng = _analyze(shell=f"cat {ng} | {sys.executable} -m pcapreset analyze - --format json")
    assert got_ng == want_ng
    assert want_ng["summary"] == want["summary"]


def _as_pcapng(pcap: bytes) -> bytes:
    """A little-endian µs pcap rewritten as pcapng (one interface, EPBs)."""
    linktype = struct.unpack_from("<I", pcap, 20)[0]
    out, pos = [ng_shb(), ng_idb(linktype, tsresol=6)], 24
    while pos + 16 <= len(pcap):
        sec, usec, cl, wl = struct.unpack_from("<IIII", pcap, pos)
        out.append(ng_epb(0, sec * 1_000_000 + usec, pcap[pos + 16 : pos + 16 + cl], wirelen=wl))
        pos += 16 + cl
    return b"".join(out)


def test_bad_and_empty_stdin_are_one_line_errors() -> None:
    for data in (b"", b"hello, not a capture\n", b"\x1f\x8b\x08\x00garbage"):
        out = subprocess.run(
            [*CLI, "analyze", "-"], input=data, capture_output=True, env=ENV, timeout=60
        )
        assert out.returncode == 1, data
        err = out.stderr.decode().strip()
        assert "Traceback" not in err and err.startswith("Error: "), err
        assert err.count("\n") == 0, err


class _OneWay(io.RawIOBase):
    """A pipe stand-in: reads at most 7 bytes at a time, fails on seek/tell."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        chunk = self._b.read(min(7, len(b)))
        b[: len(chunk)] = chunk
        return len(chunk)

    def seek(self, *a):  # type: ignore[override]
        raise io.UnsupportedOperation("not seekable")


def test_prefixed_puts_the_head_back_and_never_seeks() -> None:
    raw = _OneWay(b"abcdefghijklmnop")
    head = raw.read(5)
    p = io.BufferedReader(Prefixed(head, raw))
    assert not p.seekable()
    assert p.read() == b"abcdefghijklmnop"


def test_stream_reader_in_small_chunks_matches_the_file(monkeypatch) -> None:
    """A stream read in chunks smaller than a record still yields every frame."""
    data = PCAP.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(_OneWay(data))))
    assert is_stream("-") and not is_stream(str(PCAP))
    fh, comp, head = open_stream("-")
    assert comp == "" and head == data[:6] and fh.read() == data
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(_OneWay(data))))
    r = CaptureReader("-", chunk=100)
    got = sum(len(b.ts) for b in r.batches())
    f = CaptureReader(str(PCAP))
    assert got == sum(len(b.ts) for b in f.batches()) == 83


def test_zstd_stream_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 20))
    )
    with pytest.raises(CaptureError, match="zstd"):
        open_stream("-")


def test_jobs_on_a_stream_read_it_once(tmp_path: Path) -> None:
    """Sharding would read the input once per worker: a stream is read once."""
    want = _analyze(str(PCAP))
    got = _analyze(shell=f"cat {PCAP} | {sys.executable} -m pcapreset analyze - -j 2 "
                   "--format json")  # fmt: skip
    assert got == want


def test_plot_of_a_stream_is_a_usage_error(tmp_path: Path) -> None:
    with open(PCAP, "rb") as f:
        out = subprocess.run(
            [*CLI, "analyze", "-", "--plot", str(tmp_path / "p")],
            stdin=f, capture_output=True, env=ENV, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2
    assert b"save the stream to a file" in out.stderr and b"Traceback" not in out.stderr
