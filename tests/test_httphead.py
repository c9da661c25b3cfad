"""httphead: the compiled head scanner gives exactly what the regular
expression (the definition, run by the plain-Python source) gives.

Compared on every packet of every sample and public capture, and on arbitrary
heads built from header-like pieces (mixed case, spaces and tabs around the
colon, bare CR or LF, cut anywhere, long request targets).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS, sample_captures
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapreset import _build
from pcapreset.capture.decode import Decoder
from pcapreset.capture.tcp import _COLS, AddressBook, TcpBatch
from pcapreset.capture.timeline import decoded_timeline, open_readers
from pcapreset.errors import PcapResetError
from pcapreset.track import httphead

CORPUS_FILES = sorted(p for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
PLAIN = _build.load_source("pcapreset.track._httphead_source", "track.httphead")
needs_compiled = pytest.mark.skipif(
    not httphead.COMPILED,
    reason="pcapreset.track.httphead is not compiled here: nothing to compare",
)


def test_plain_source_is_uncompiled():
    assert PLAIN.COMPILED is False


def test_the_definition():
    """The regular expression's reading of a response head (plain source)."""
    head = (
        b"HTTP/1.1 200 OK\r\nserver:\tuvicorn\r\nCONTENT-LENGTH : 1_0\r\n"
        b"X-Connection: close\r\nKeep-Alive:  timeout=5 \r\nTransfer-Encoding: gzip\r\n\r\n"
    )
    extra: dict[str, str] = {}
    assert PLAIN.parse_headers(head, extra) == (len(head), False, 10)
    assert extra == {"server": "uvicorn", "keep-alive": "timeout=5"}
    assert PLAIN.parse_headers(b"HTTP/1.1 200 OK\r\nContent-Length: 5") == (None, False, None)
    assert PLAIN.request_line(b"GET /a b HTTP/1.1\r\n") == ("GET", "/a")


@needs_compiled
@pytest.mark.parametrize(
    "path", [*sample_captures(), *CORPUS_FILES], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_compiled_equals_plain_on_captures(path):
    try:
        readers = open_readers([str(path)])
    except PcapResetError as e:
        pytest.skip(f"unreadable: {e}")
    for b in decoded_timeline(readers, Decoder(AddressBook())):
        assert httphead.preparse(b) == PLAIN.preparse(b)


def batch_of(payloads: list[bytes]) -> TcpBatch:
    """A batch whose packets carry ``payloads`` (only the payload columns matter)."""
    n = len(payloads)
    buf = b"".join(b"\x00" * 8 + p for p in payloads)
    lens = np.array([len(p) for p in payloads], dtype=np.int64)
    poff = np.cumsum(np.concatenate(([0], lens[:-1] + 8))) + 8
    z = np.zeros(n, dtype=np.int64)
    cols = {c: z for c in _COLS}
    cols.update(ts=np.zeros(n), poff=poff, pcap=lens, plen=lens)
    return TcpBatch(**cols, bufs=[buf])


_NAMES = ["Content-Length", "content-length", "CONTENT-length", "Transfer-Encoding",
          "transfer-encoding", "Server", "SERVER", "Keep-Alive", "keep-alive", "Connection",
          "connection", "X-Server", "Content-Lengthy", "Host"]  # fmt: skip
_VALUES = ["5", " 12 ", "1_000", "-3", "x", "", "chunked", "gzip, CHUNKED", "close",
           "timeout=5, max=100", "uvicorn", "\xe9t\xe9", "9" * 30]  # fmt: skip
_EOLS = [b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n\r\n"]
_FIRST = [b"GET /x HTTP/1.1", b"POST /a%20b?c=d HTTP/1.0", b"HEAD  /two-spaces HTTP/1.1",
          b"DELETE /" + b"t" * 300 + b" HTTP/1.1", b"OPTIONS", b"GET ", b"PATCH /no-version",
          b"HTTP/1.1 200 OK", b"HTTP/1.0 204 No Content", b"HTTP/1.1 100 Continue",
          b"HTTP/1.1 101 Switching", b"HTTP/1.", b"HTTP/2 200", b"GETX / HTTP/1.1",
          b"get / HTTP/1.1"]  # fmt: skip


@st.composite
def heads(draw) -> bytes:
    out = draw(st.sampled_from(_FIRST)) + draw(st.sampled_from(_EOLS))
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(_NAMES)).encode()
        sep = draw(st.sampled_from([b":", b": ", b" :", b"\t:\t", b"  :  ", b"", b" "]))
        value = draw(st.sampled_from(_VALUES)).encode("latin-1")
        out += name + sep + value + draw(st.sampled_from(_EOLS))
    if draw(st.booleans()):
        out += b"\r\n"
    out += draw(st.sampled_from([b"", b"body", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]))
    out += draw(st.binary(max_size=8))
    cut = draw(st.integers(0, len(out)))
    return out[:cut] if draw(st.booleans()) else out


@needs_compiled
@settings(max_examples=min(3000, settings.default.max_examples))
@given(st.lists(heads(), min_size=1, max_size=5))
def test_compiled_equals_plain_on_arbitrary_heads(payloads):
    b = batch_of(payloads)
    assert httphead.preparse(b) == PLAIN.preparse(b)


@needs_compiled
def test_compiled_equals_plain_on_long_heads():
    """Heads longer than HTTP_HEAD_MAX are read up to it by both."""
    long_head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 3000 + b"\r\nServer: late\r\n\r\n"
    req = b"GET /" + b"a" * 2100 + b" HTTP/1.1\r\n\r\n"
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabcdefghi"
    b = batch_of([long_head, req, body])
    got = httphead.preparse(b)
    assert got == PLAIN.preparse(b)
    assert got[0][2] == (None, False, None) and got[0][3] == {}
    assert got[1][:2] == ("req", "GET") and len(got[1][2]) == 200
    # the body is dropped but for its last 5 bytes (the chunked-end test)
    assert got[2] == ("resp", body[:38] + b"efghi", (38, False, 9), {})


@needs_compiled
@settings(max_examples=min(1000, settings.default.max_examples))
@given(st.lists(heads(), min_size=1, max_size=5))
def test_compiled_reads_memoryviews_like_bytes(payloads):
    """Ring slots and live buffers are memoryviews: the compiled scanner reads
    them in place, with the same result as the plain definition."""
    b = batch_of(payloads)
    want = PLAIN.preparse(b)
    b.bufs = [memoryview(bytearray(b.bufs[0]))]
    assert httphead.preparse(b) == want
    b.bufs = [memoryview(b"")]
    b.pcap[:] = 0
    assert httphead.preparse(b) == {}


@needs_compiled
@settings(max_examples=min(500, settings.default.max_examples))
@given(st.lists(heads(), min_size=2, max_size=6), st.integers(1, 5))
def test_compiled_reads_batches_of_two_buffers(payloads, split):
    """A batch over two buffers (pcapng's and the live source's can be) takes
    the per-packet path; one buffer, the path that acquires it once: both
    give the plain definition's result."""
    split = min(split, len(payloads) - 1)
    one, two = batch_of(payloads[:split]), batch_of(payloads[split:])
    b = batch_of(payloads)
    want = PLAIN.preparse(b)
    assert httphead.preparse(b) == want
    b.bufs = [one.bufs[0], memoryview(two.bufs[0])]
    b.poff = np.concatenate((one.poff, two.poff))
    b.bufidx = np.concatenate((np.zeros(split, np.int64), np.ones(len(payloads) - split, np.int64)))
    assert PLAIN.preparse(b) == want
    assert httphead.preparse(b) == want
