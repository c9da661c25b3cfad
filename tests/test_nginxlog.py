"""nginx error.log / access.log parsing and their correlation with the wire.

Parser tests use lines in nginx's real formats (copied from the lab's nginx 1.22
error.log, or built from the format strings in nginx's source as cited in
pcapreset/nginx/log.py, pcapreset/nginx/parse.py). Correlation tests run on the lab captures in
sample_pcaps/ and check each tie against the lab's own labels.json.
"""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import LAB_PENDING_NGINX_LOG, SAMPLES

from pcapreset import api
from pcapreset.cli import main
from pcapreset.nginx.log import COMPAT, WireEvent, match
from pcapreset.nginx.parse import (
    ErrorLine,
    NginxLogError,
    load,
    parse_access_line,
    parse_error_line,
    parse_upstream,
    resolve_tz,
)

UTC = dt.UTC
CTX = (
    ', client: 10.77.1.2, server: , request: "GET /report HTTP/1.1", '
    'upstream: "http://10.77.3.2:3000/report", host: "10.77.1.1:8080"'
)


def _line(body: str, when: str = "2026/11/28 11:12:51", level: str = "error") -> str:
    return f"{when} [{level}] 6057#6057: *9 {body}{CTX}\n"


# ------------------------------------------------------------ error.log
@pytest.mark.parametrize(
    ("body", "kind", "errno"),
    [
        ("recv() failed (104: Connection reset by peer) while reading response header "
         "from upstream", "reset", 104),
        ("readv() failed (104: Connection reset by peer) while reading upstream", "reset", 104),
        ("writev() failed (32: Broken pipe) while sending request to upstream", "reset", 32),
        ("connect() failed (111: Connection refused) while connecting to upstream",
         "refused", 111),
        ("connect() to 10.77.3.2:3000 failed (111: Connection refused) while connecting to "
         "upstream", "refused", 111),
        ("connect() failed (113: No route to host) while connecting to upstream",
         "connect", 113),
        ("upstream timed out (110: Connection timed out) while reading response header from "
         "upstream", "timeout", 110),
        ("upstream timed out (110: Connection timed out) while connecting to upstream",
         "timeout", 110),
        ("upstream prematurely closed connection while reading response header from upstream",
         "premature", None),
        ("upstream sent too big header while reading response header from upstream",
         "protocol", None),
    ],
)  # fmt: skip
def test_error_line_kinds(body: str, kind: str, errno: int | None) -> None:
    e = parse_error_line(_line(body), 7, UTC)
    assert e is not None
    assert (e.kind, e.errno, e.line) == (kind, errno, 7)
    assert e.message == body
    assert e.upstream == "10.77.3.2:3000"
    assert e.upstream_uri == "/report"
    assert e.request == "GET /report HTTP/1.1"
    assert e.ts == dt.datetime(2026, 11, 28, 11, 12, 51, tzinfo=UTC).timestamp()


def test_error_line_real_lab_line() -> None:
    text = (SAMPLES / "connection_refused" / "error.log").read_text().splitlines()
    parsed = [parse_error_line(t, n, UTC) for n, t in enumerate(text, 1)]
    got = [e for e in parsed if e is not None]
    # the [notice]/[info] start-up and shutdown lines are not upstream errors
    assert len(got) == sum("connect() failed (111" in t for t in text) > 0
    assert all(e.kind == "refused" and e.upstream == "10.77.3.2:3000" for e in got)


@pytest.mark.parametrize(
    "text",
    [
        "2026/11/28 11:12:56 [info] 6568#6568: *1 epoll_wait() reported that client "
        "prematurely closed connection, so upstream connection is closed too while sending "
        'request to upstream, client: 10.77.1.2, server: , request: "GET /slow?d=2 HTTP/1.1", '
        'upstream: "http://10.77.3.2:3000/slow?d=2", host: "10.77.1.1:8080"',
        '2026/11/28 11:09:44 [notice] 4636#4636: using the "epoll" event method',
        "2026/11/28 11:13:05 [error] 1#1: *5 client intended to send too large body: 2000000 "
        'bytes, client: 10.77.1.2, server: , request: "POST / HTTP/1.1", host: "x"',
        "not a log line at all",
    ],
)
def test_not_upstream_errors(text: str) -> None:
    assert parse_error_line(text, 1, UTC) is None


def test_no_live_upstreams_names_the_group() -> None:
    text = (
        "2026/11/28 11:12:51 [error] 6057#6057: *11 no live upstreams while connecting to "
        'upstream, client: 10.77.1.2, server: , request: "GET / HTTP/1.1", '
        'upstream: "http://backend/", host: "10.77.1.1:8080"'
    )
    e = parse_error_line(text, 3, UTC)
    assert e is not None and e.kind == "no_live" and e.upstream == "backend"


@pytest.mark.parametrize(
    ("field", "addr", "uri"),
    [
        ("http://10.77.3.2:3000/p?q=1", "10.77.3.2:3000", "/p?q=1"),
        ("http://[FD77:3::0002]:3000/", "[fd77:3::2]:3000", "/"),
        ("http://unix:/run/app.sock:/api", "unix:/run/app.sock", "/api"),
        ("fastcgi://127.0.0.1:9000", "127.0.0.1:9000", None),
        ("http://backend/", "backend", "/"),
    ],
)
def test_parse_upstream(field: str, addr: str, uri: str | None) -> None:
    assert parse_upstream(field) == (addr, uri)


def test_request_with_quotes_inside() -> None:
    text = _line("upstream timed out (110: Connection timed out) while reading upstream")
    text = text.replace('"GET /report HTTP/1.1"', '"GET /a\\"b HTTP/1.1"')
    e = parse_error_line(text, 1, UTC)
    assert e is not None and e.request == 'GET /a\\"b HTTP/1.1'


# ------------------------------------------------------------------ zones
def test_time_zones() -> None:
    text = _line("upstream prematurely closed connection", when="2026/11/28 12:00:00")
    base = dt.datetime(2026, 11, 28, 12, tzinfo=UTC).timestamp()
    by_zone = {z: parse_error_line(text, 1, resolve_tz(z)).ts for z in ("UTC", "+02:00")}
    assert by_zone["UTC"] == base
    assert by_zone["+02:00"] == base - 7200
    # Berlin is on CET (+01:00) in November, CEST (+02:00) in July
    berlin = resolve_tz("Europe/Berlin")
    assert parse_error_line(text, 1, berlin).ts == base - 3600
    summer = text.replace("2026/11/28", "2026/07/01")
    assert (
        parse_error_line(summer, 1, berlin).ts
        == dt.datetime(2026, 7, 1, 10, tzinfo=UTC).timestamp()
    )


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(NginxLogError, match="unknown time zone"):
        resolve_tz("Mars/Olympus")


def test_access_log_offset_sets_the_zone(tmp_path) -> None:
    err = tmp_path / "error.log"
    err.write_text(_line("upstream prematurely closed connection", when="2026/11/28 13:00:00"))
    acc = tmp_path / "access.log"
    acc.write_text(
        '10.77.1.2 - - [28/Nov/2026:13:00:00 +0200] "GET / HTTP/1.1" 502 157 '
        "10.77.3.2:3000 502 0.1 0.0 0.1\n"
    )
    logs = load([err, acc])
    assert logs.errors[0].ts == dt.datetime(2026, 11, 28, 11, tzinfo=UTC).timestamp()
    assert "+02:00" in logs.time_zone
    # an explicit --nginx-tz wins over access.log
    assert load([err, acc], "UTC").errors[0].ts == logs.errors[0].ts + 7200


# ------------------------------------------------------------- access.log
def test_access_line_with_retry() -> None:
    text = (
        '10.77.1.2 - - [28/Nov/2026:11:12:08 +0000] "GET / HTTP/1.1" 200 3 '
        "10.77.3.2:3000, 10.77.3.2:3000 502, 200 0.105, 0.403 0.000, 0.201 0.508 "
        "1795864328.269"
    )
    a = parse_access_line(text, 4)
    assert a is not None
    assert a.status == 200 and a.request == "GET / HTTP/1.1"
    assert a.ts == 1795864328.269  # $msec, more precise than $time_local
    assert a.attempts == [("10.77.3.2:3000", "502"), ("10.77.3.2:3000", "200")]
    assert a.failed_attempts == [("10.77.3.2:3000", "502")]


def test_access_line_combined_without_upstream_fields() -> None:
    text = '10.0.0.9 - - [28/Nov/2026:11:12:08 -0500] "GET /x HTTP/1.1" 504 167 "-" "curl/8.5"'
    a = parse_access_line(text, 1)
    assert a is not None and a.status == 504 and a.attempts == []
    assert a.ts == dt.datetime(2026, 11, 28, 16, 12, 8, tzinfo=UTC).timestamp()
    assert a.utc_offset_s == -5 * 3600


# --------------------------------------------------------------- matching
def _err(ts: float, kind: str = "reset", up: str = "10.0.0.2:3000") -> ErrorLine:
    return ErrorLine(ts, 1, "error", 104, "recv() failed", kind, up, "/", "GET / HTTP/1.1")


def _ev(ts: float, cause: str = "backend_crash", server: str = "10.0.0.2:3000") -> WireEvent:
    return WireEvent("reset", cause, "server", "10.0.0.1:40000", server, ts, ts, "/")


def test_match_is_one_to_one() -> None:
    lines = [_err(100.0), _err(100.0)]
    assert len(match(lines, [_ev(100.3)])) == 1


def test_match_maximises_ties() -> None:
    # line 0's nearest reset is the only one line 1 can have: a greedy nearest-first
    # pass ties line 0 to it and leaves line 1 out; the augmenting pass fixes that
    lines = [_err(99.0), _err(98.0)]
    events = [_ev(99.5), _ev(100.8)]
    assert match(lines, events) == {0: 1, 1: 0}


def test_match_needs_same_upstream_time_and_kind() -> None:
    assert match([_err(100.0, up="10.0.0.3:3000")], [_ev(100.5)]) == {}
    assert match([_err(100.0)], [_ev(102.5)]) == {}  # logged second + 1 s window
    assert match([_err(100.0)], [_ev(101.9)]) == {0: 0}
    assert match([_err(100.0, kind="refused")], [_ev(100.5)]) == {}
    assert match([_err(100.0, kind="refused")], [_ev(100.5, "connection_refused")]) == {0: 0}
    client_rst = WireEvent("reset", "client_abort", "client", "a:1", "10.0.0.2:3000", 100, 100, "/")
    assert match([_err(100.0)], [client_rst]) == {}  # nginx's own RST is not a 104


def test_match_prefers_nearest() -> None:
    got = match([_err(100.0)], [_ev(98.8), _ev(100.4), _ev(101.6)])
    assert got == {0: 1}


def test_compat_table_covers_every_failure_kind_with_a_wire_signature() -> None:
    assert set(COMPAT) == {"refused", "reset", "timeout", "premature", "connect", "protocol"}


# ----------------------------------------------------- real lab captures
def _scenarios() -> list:
    pending = pytest.mark.xfail(strict=True, reason="nginx-log correlation to-do (issue 17)")
    return [
        pytest.param(d.name, cap, marks=[pending] if d.name in LAB_PENDING_NGINX_LOG else [])
        for d in sorted(SAMPLES.iterdir())
        if (d / "error.log").exists() and (d / "labels.json").exists()
        for cap in ("backend.pcap", "nginx.pcap")
        if (d / cap).exists()
    ]


@pytest.mark.parametrize(("scenario", "cap"), _scenarios())
def test_lab_ties_match_labels(scenario: str, cap: str) -> None:
    d = SAMPLES / scenario
    labels = json.loads((d / "labels.json").read_text())
    tz = labels.get("nginx_error_log_tz") or "UTC"
    logs = [d / "error.log"] + ([d / "access.log"] if (d / "access.log").exists() else [])
    rep = api.analyze(d / cap, nginx_log=logs, nginx_tz=tz)
    sec = rep.to_json()["nginx_log"]
    conns = {c["client"]: c["per_capture"].get(cap, {}) for c in labels["connections"]}
    whole = {c["client"]: c for c in labels["connections"]}
    retried = 0
    for e in sec["errors"]:
        by = e["explained_by"]
        if by is None:
            continue
        assert by["client"] in conns, (e, by)
        if by.get("how") == "idle_then_retried":
            # a reset this capture never saw: the lab's labels know it, from the
            # other vantage point and the router's counters; the retry is a labelled
            # connection too
            assert not conns[by["client"]].get("has_rst"), (e, by)
            assert whole[by["client"]]["has_rst"], (e, by)
            assert whole[by["client"]]["cause"] == by["cause"], (e, by)
            assert by["retry"] in conns, (e, by)
            retried += 1
        elif by["kind"] == "reset":
            assert conns[by["client"]].get("has_rst"), (e, by)
        assert abs(by["ts"] - e["ts"]) < 3.5  # nginx's time: its FIN, not always its RST
    # every line is explained; a reset or refusal this vantage point never saw only
    # through nginx's retry after it
    no_rst_here = labels["captures"][cap]["rst_packets"] == 0
    unseen = sum(e["kind"] in ("reset", "refused") for e in sec["errors"]) * no_rst_here
    assert retried == unseen
    assert sec["explained"] == sec["upstream_errors"]
    # every upstream [error] line is either inside the capture's span or counted outside it
    assert sec["upstream_errors"] + sec.get("outside_capture", 0) == sum(
        1 for t in (d / "error.log").read_text().splitlines() if " [error] " in t
    )


def test_backend_crash_ties_by_request() -> None:
    d = SAMPLES / "backend_crash"
    rep = api.analyze(d / "backend.pcap", nginx_log=[d / "error.log", d / "access.log"])
    sec = rep.to_json()["nginx_log"]
    for e in sec["errors"]:
        by = e["explained_by"]
        if e["errno"] == 111:
            assert by["cause"] == "connection_refused"
        elif e["errno"] == 104:
            assert (by["kind"], by["cause"]) == ("reset", "backend_crash")
        else:  # the /report requests: the backend died (FIN) before answering
            assert (by["kind"], by["cause"]) == ("finding", "premature_close")
    acc = sec["access_log"]
    assert acc["status_502"] == acc["bad_gateway_explained"] > 0


# -------------------------------------------------------------------- CLI
def test_cli_json_validates_and_text_says_how_many() -> None:
    d = SAMPLES / "keepalive_race_node"
    args = ["analyze", "-q", str(d / "backend.pcap"), "--nginx-log", str(d / "error.log")]
    args += ["--nginx-log", str(d / "access.log"), "--nginx-tz", "UTC"]
    r = CliRunner().invoke(main, args + ["--format", "json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    schema = json.loads(
        (SAMPLES.parent / "pcapreset" / "report" / "report.schema.json").read_text()
    )
    jsonschema.validate(j, schema)
    assert "_text_lines" not in j
    n = j["nginx_log"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0
    assert f"{n['explained']} of {n['upstream_errors']} upstream errors explained" in r.output
    assert max(len(x) for x in r.output.splitlines()) <= 80


def test_cli_wrong_zone_gives_a_hint_not_ties() -> None:
    d = SAMPLES / "connection_refused"
    r = CliRunner().invoke(
        main,
        ["analyze", "-q", str(d / "backend.pcap"), "--nginx-log", str(d / "error.log"),
         "--nginx-tz", "Asia/Tokyo", "--format", "json"],
    )  # fmt: skip
    assert r.exit_code == 0
    n = json.loads(r.output)["nginx_log"]
    assert n["upstream_errors"] == 0 and n["outside_capture"] > 0
    assert "--nginx-tz +00:00" in n["warning"]


@pytest.mark.parametrize(
    ("opt", "value", "msg"),
    [("--nginx-log", "/nonexistent/error.log", "No such file"),
     ("--nginx-tz", "Nowhere/Town", "unknown time zone")],
)  # fmt: skip
def test_cli_bad_nginx_inputs(opt: str, value: str, msg: str) -> None:
    d = SAMPLES / "connection_refused"
    extra = [] if opt == "--nginx-log" else ["--nginx-log", str(d / "error.log")]
    r = CliRunner().invoke(main, ["analyze", str(d / "backend.pcap"), opt, value, *extra])
    assert r.exit_code != 0
    assert msg in r.output and "Traceback" not in r.output
