"""HTTP heads parsed ahead of the tracker (flows.preparse_http, used by the
pipelined CLI) give exactly the exchanges the tracker finds by itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ipv4, pcap_bytes, sample_captures, tcp, write

from pcapreset.capture.decode import Decoder
from pcapreset.capture.sources import CaptureReader
from pcapreset.capture.tcp import AddressBook
from pcapreset.track.flows import FlowTracker, preparse_http


def _exchanges(path: Path, preparse: bool) -> list:
    dec = Decoder(AddressBook())
    ft = FlowTracker()
    for fb in CaptureReader(str(path), chunk=1500).batches():
        b = dec.decode(fb)
        if preparse:
            b.heads = preparse_http(b)
        ft.feed(b)
    out = []
    for c in ft.finish():
        out.append((c.c.bytes, c.s.bytes, sorted(c.resp_headers.items())))
        out.extend(tuple(sorted(e.as_dict().items())) for e in c.exchanges)
    return out


def _stream(tmp_path: Path) -> Path:
    """One keep-alive connection: 100-continue + final response in one segment,
    a chunked response split over segments, HEAD, 204, then a close-delimited one."""
    cl, sv = "10.0.0.1", "10.0.0.2"
    msgs = [
        (True, b"POST /up HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"),
        (
            False,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ),
        (True, b"abc"),
        (True, b"GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            False,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nServer: test/1\r\n\r\n4\r\nwiki\r\n",
        ),
        (False, b"5\r\npedia\r\n"),
        (False, b"0\r\n\r\n"),
        (True, b"HEAD /h HTTP/1.1\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"),
        (True, b"DELETE /d HTTP/1.1\r\n\r\n"),
        (False, b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n"),
        (True, b"GET /old HTTP/1.1\r\n\r\n"),
        (False, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody without length"),
        (False, b"HTTP/1.1 is not a status line here, just body bytes"),
    ]
    c, s = 1000, 5000
    recs = [
        (0.0, ipv4(cl, sv, tcp(40000, 3000, c, 0, 0x02))),
        (0.001, ipv4(sv, cl, tcp(3000, 40000, s, c + 1, 0x12))),
        (0.002, ipv4(cl, sv, tcp(40000, 3000, c + 1, s + 1, 0x10))),
    ]
    c += 1
    s += 1
    t = 0.01
    for up, data in msgs:
        if up:
            recs.append((t, ipv4(cl, sv, tcp(40000, 3000, c, s, 0x18, payload=data))))
            c += len(data)
        else:
            recs.append((t, ipv4(sv, cl, tcp(3000, 40000, s, c, 0x18, payload=data))))
            s += len(data)
        t += 0.01
    recs.append((t, ipv4(sv, cl, tcp(3000, 40000, s, c, 0x11))))
    return write(tmp_path / "http.pcap", pcap_bytes([(1e9 + a, b) for a, b in recs], linktype=101))


def test_tricky_http_stream(tmp_path):
    path = _stream(tmp_path)
    plain = _exchanges(path, preparse=False)
    assert _exchanges(path, preparse=True) == plain
    statuses = [dict(e).get("status") for e in plain if isinstance(e, tuple) and len(e) > 3]
    assert 201 in statuses and 204 in statuses  # the stream really exercises them


@pytest.mark.parametrize("cap", sample_captures()[:12], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_lab_captures(cap):
    assert _exchanges(cap, preparse=True) == _exchanges(cap, preparse=False)
