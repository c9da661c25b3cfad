"""nginx.conf reading: upstream keep-alive and proxy timeouts, includes, odd syntax."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES

from pcapreset import api
from pcapreset.nginx.conf import NginxConfError, load_conf, read_conf
from pcapreset.nginx.conf_model import normalize_addr, parse_time_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("60", 60.0), ("500ms", 0.5), ("1m 30s", 90.0), ("1m30s", 90.0),
     ("2h", 7200.0), ("1d", 86400.0), ("", None), ("abc", None), ("5 x", None),
     ("10s5", 15.0)],
)  # fmt: skip
def test_parse_time(text: str, seconds: float | None) -> None:
    # as ngx_parse_time: a trailing bare number counts in seconds ("10s5" = 15 s)
    assert parse_time_s(text) == seconds


@pytest.mark.parametrize(
    ("addr", "norm"),
    [("10.0.0.2:3000", "10.0.0.2:3000"), ("10.0.0.2", "10.0.0.2:80"),
     ("[FD77:3::0002]:3000", "[fd77:3::2]:3000"), ("app.internal:8000", "app.internal:8000"),
     ("unix:/run/app.sock", "unix:/run/app.sock")],
)  # fmt: skip
def test_normalize_addr(addr: str, norm: str) -> None:
    assert normalize_addr(addr) == norm


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "nginx.conf"


MAIN = """
user www-data;  # comment with { brace
events { worker_connections 1024; }
http {
    keepalive_timeout 75s;          # client side: not the upstream one
    proxy_read_timeout 30s;
    include conf.d/*.conf;
}
"""
APP = """
upstream app {
    server 10.0.0.2:3000 max_fails=0;
    server 10.0.0.3:3000;
    keepalive 32;
    keepalive_timeout "45s";
    keepalive_requests 500;
}
upstream other {
    server 10.9.9.9:8080;
    keepalive 8;
}
server {
    listen 80;
    location /api {
        proxy_pass http://app;
        proxy_connect_timeout 2s;
        proxy_next_upstream error timeout http_502;
        set $x "a;b{c}";
    }
}
"""


def test_includes_and_upstream_blocks(tmp_path: Path) -> None:
    conf = read_conf(_write(tmp_path, {"nginx.conf": MAIN, "conf.d/app.conf": APP}))
    assert conf.warnings == []
    assert len(conf.files) == 2
    app, other = conf.upstreams
    assert (app.name, app.servers, app.keepalive) == ("app", ["10.0.0.2:3000", "10.0.0.3:3000"], 32)
    assert app.keepalive_timeout_s == 45.0 and app.keepalive_requests == 500
    assert app.keepalive_timeout_source.endswith("app.conf:6")
    assert other.keepalive_timeout_s == 60.0  # nginx's default
    assert other.keepalive_timeout_source == "nginx default"
    # the upstream whose servers the capture saw decides; the http-level 75 s never does
    assert conf.keepalive_timeout_s(["10.0.0.3:3000"])[0] == 45.0
    assert conf.keepalive_timeout_s(["10.9.9.9:8080"])[0] == 60.0
    assert conf.keepalive_timeout_s(["192.0.2.1:80"]) is None  # two blocks, none matches
    (read,) = conf.get("proxy_read_timeout")
    assert read.value_s == 30.0 and read.context == "http"
    (conn,) = conf.get("proxy_connect_timeout")
    assert conn.value_s == 2.0 and conn.context == "http > server > location /api"
    assert conf.get("proxy_next_upstream")[0].args == ["error", "timeout", "http_502"]


def test_upstream_without_keepalive_means_no_reuse(tmp_path: Path) -> None:
    text = "http { upstream b { server 10.0.0.2:3000; keepalive_timeout 10s; } }"
    conf = read_conf(_write(tmp_path, {"nginx.conf": text}))
    assert conf.upstreams[0].keepalive is None
    assert conf.keepalive_timeout_s(["10.0.0.2:3000"]) is None


@pytest.mark.parametrize(
    "text",
    [
        "http { upstream b { server 10.0.0.2:3000; keepalive 4; keepalive_timeout 7s; }",
        "http { upstream b { server 10.0.0.2:3000; keepalive 4; keepalive_timeout 7s; } } }",
        "http { upstream b { server 10.0.0.2:3000; keepalive 4; keepalive_timeout 7s; }"
        " include missing/*.conf; include nothere.conf; } server { listen 80 }",
        "http { upstream b { server 10.0.0.2:3000; keepalive 4; keepalive_timeout 7s; } "
        'set $a "unterminated',
    ],
)
def test_odd_syntax_never_raises(tmp_path: Path, text: str) -> None:
    conf = read_conf(_write(tmp_path, {"nginx.conf": text}))
    assert conf.warnings  # each case has something to complain about
    assert conf.keepalive_timeout_s(["10.0.0.2:3000"])[0] == 7.0


def test_binary_garbage_and_include_loop(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)) * 4)
    text = "include junk.bin; include nginx.conf; http { }"
    conf = read_conf(_write(tmp_path, {"nginx.conf": text}))
    assert any("deeper" in w or "files" in w for w in conf.warnings)
    assert conf.upstreams == []


def test_missing_conf(tmp_path: Path) -> None:
    conf = read_conf(tmp_path / "nope.conf")
    assert conf.files == [] and conf.warnings
    with pytest.raises(NginxConfError):
        load_conf(tmp_path / "nope.conf")


def test_lab_conf() -> None:
    conf = read_conf(SAMPLES / "keepalive_race_node" / "nginx.conf")
    ka = conf.keepalive_timeout_s(["10.77.3.2:3000"])
    assert ka is not None and ka[0] == 60.0 and ka[1].endswith("nginx.conf:22")
    assert conf.get("proxy_read_timeout")[0].value_s == 10.0


def test_conf_value_reaches_the_recommendation(tmp_path: Path) -> None:
    text = (SAMPLES / "keepalive_race_node" / "nginx.conf").read_text()
    conf = _write(
        tmp_path, {"nginx.conf": text.replace("keepalive_timeout 60s", "keepalive_timeout 30s")}
    )
    rep = api.analyze(SAMPLES / "keepalive_race_node" / "backend.pcap", nginx_conf=conf)
    j = rep.to_json()
    assert j["summary"]["nginx_keepalive_timeout_s"] == 30.0
    assert j["summary"]["nginx_keepalive_timeout_source"] == "nginx.conf"
    assert j["nginx_conf"]["upstream_keepalive_timeout_s"] == 30.0
    assert any("30 s" in r for r in j["summary"]["recommendations"])
