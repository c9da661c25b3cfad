"""Live capture (`pcapreset analyze --iface any`) in a private network namespace.

The test creates its own namespace, runs the real CLI there on ``--iface any``
(cooked capture of every interface in that namespace: here ``lo``) while a
small Python program in the same namespace makes refused connects (to
127.0.0.2:3000, where nothing listens) and SO_LINGER-0 closes (a server on
127.0.0.1:3000 that answers, then closes with ``SO_LINGER {1, 0}``: RST
instead of FIN). The live verdicts must name exactly those connections, and
``pcapreset analyze`` on the ``--write`` file must give the same resets.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pcapreset.capture.live import LiveCapture
from pcapreset.errors import CaptureSourceError

N_REFUSED = 5
N_ABORT = 4
PY = sys.executable

GEN = textwrap.dedent(
    """
    import json, socket, struct, sys, threading, time
    n_ref, n_abort = int(sys.argv[1]), int(sys.argv[2])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 3000))
    srv.listen(64)
    srv.settimeout(10)

    def serve():
        for _ in range(n_abort):
            c, _a = srv.accept()
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
            time.sleep(0.05)  # the response is acknowledged; the connection is idle
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # SO_LINGER 0: RST instead of FIN

    t = threading.Thread(target=serve)
    t.start()
    refused, aborted = [], []
    for _ in range(n_ref):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        refused.append(s.getsockname()[1])
        try:
            s.connect(("127.0.0.2", 3000))
        except ConnectionRefusedError:
            pass
        else:
            sys.exit("connect to 127.0.0.2:3000 was not refused")
        s.close()
    for _ in range(n_abort):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", 3000))
        aborted.append(s.getsockname()[1])
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: backend\\r\\n\\r\\n")
        body = s.recv(4096)
        assert body.startswith(b"HTTP/1.1 200"), body
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
    t.join()
    print(json.dumps({"refused": refused, "aborted": aborted}))
    """
)


def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces and packet sockets)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip netns`)"
    return None


@contextlib.contextmanager
def netns() -> Iterator[str]:
    why = _can_netns()
    if why:
        pytest.skip(why)
    name = f"pcaprst-live-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _start_capture(ns: str, *args: str) -> subprocess.Popen:
    cmd = ["ip", "netns", "exec", ns, PY, "-m", "pcapreset", "analyze", "--iface", "any"]
    p = subprocess.Popen(
        [*cmd, "--port", "3000", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the CLI says "capturing ..." once the socket and its filter are in place
    assert p.stderr is not None
    ready, _, _ = select.select([p.stderr], [], [], 30)
    line = p.stderr.readline() if ready else ""
    if "capturing tcp port 3000 on any" not in line:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"capture did not start: {line}{err}")
    return p


def _traffic(ns: str) -> dict[str, list[int]]:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, PY, "-c", GEN, str(N_REFUSED), str(N_ABORT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _offline(path: Path, what: str = "analyze") -> dict | list:
    r = subprocess.run(
        [PY, "-m", "pcapreset", what, str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check_verdicts(resets: list[dict], ports: dict[str, list[int]]) -> None:
    got = Counter((r["cause"], r["sender"], r["server"]) for r in resets)
    assert got == {
        ("connection_refused", "server", "127.0.0.2:3000"): N_REFUSED,
        ("abortive_close", "server", "127.0.0.1:3000"): N_ABORT,
    }
    by_cause = {
        c: sorted(int(r["client"].rsplit(":", 1)[1]) for r in resets if r["cause"] == c)
        for c in ("connection_refused", "abortive_close")
    }
    assert by_cause["connection_refused"] == sorted(ports["refused"])
    assert by_cause["abortive_close"] == sorted(ports["aborted"])
    for r in resets:
        if r["cause"] == "connection_refused":
            assert r["phase"] == "handshake"
        else:
            assert r["phase"] == "after_response" and r["requests_before"] == 1


def _check_written_file(path: Path, live: dict, ports: dict[str, list[int]]) -> None:
    off = _offline(path)
    assert off["capture"]["packets"] == live["capture"]["packets"]
    assert off["capture"]["linktypes"] == ["LINUX_SLL2(276)"]
    assert off["resets"] == live["resets"]  # every field, not only the cause
    assert off["summary"]["by_cause"] == live["summary"]["by_cause"]
    # loopback packets are seen once (not once outgoing and once incoming):
    # a refused connect is exactly SYN + RST,ACK
    conns = _offline(path, "conns")
    refused = {f"127.0.0.1:{p}" for p in ports["refused"]}
    rows = [c for c in conns if c["client"] in refused]
    assert len(rows) == N_REFUSED
    assert all((c["client_packets"], c["server_packets"]) == (1, 1) for c in rows)


def test_live_any_duration_json_equals_offline(tmp_path: Path) -> None:
    pcap = tmp_path / "live.pcap"
    with netns() as ns:
        p = _start_capture(ns, "--duration", "6", "--write", str(pcap), "--format", "json")
        ports = _traffic(ns)
        out, err = p.communicate(timeout=40)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    rep = json.loads(out)
    schema = json.loads(
        resources.files("pcapreset.report").joinpath("report.schema.json").read_text()
    )
    jsonschema.validate(rep, schema)
    live = rep["capture"]["live"]
    assert live["stopped_by"] == "duration"
    assert live["kernel_drops"] == 0
    assert live["packets_received"] == rep["capture"]["packets"] > 0
    assert live["kernel_packets"] == live["packets_received"]
    assert live["write"] == str(pcap)
    assert live["ring"].startswith("TPACKET_V3")  # read from the memory-mapped ring
    _check_verdicts(rep["resets"], ports)
    _check_written_file(pcap, rep, ports)


def test_live_jsonl_streams_and_stops_on_sigterm(tmp_path: Path) -> None:
    pcap = tmp_path / "live.pcap"
    with netns() as ns:
        p = _start_capture(ns, "--write", str(pcap), "--format", "jsonl")
        ports = _traffic(ns)
        # `ip netns exec` execs the CLI: the signal reaches pcapreset itself
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=40)
    assert p.returncode == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x.pop("type") for x in lines] == ["reset"] * (len(lines) - 1) + ["report"]
    streamed, rep = lines[:-1], lines[-1]
    assert "capture" in rep and "summary" in rep
    assert rep["capture"]["live"]["stopped_by"] == "SIGTERM"
    assert all("capture" not in r and "cause" in r for r in streamed)
    _check_verdicts(streamed, ports)
    # the streamed verdicts are the final report's (here nothing later changes them)
    key = ("client", "server", "ts", "cause", "sender", "phase")
    assert sorted(tuple(r[k] for k in key) for r in streamed) == sorted(
        tuple(r[k] for k in key) for r in rep["resets"]
    )
    _check_written_file(pcap, rep, ports)


def _cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    pre = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        [*pre, PY, "-m", "pcapreset", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def _one_line_error(r: subprocess.CompletedProcess, words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert words in lines[0]


def test_unknown_interface_is_one_line_error() -> None:
    _one_line_error(_cli("--iface", "nosuchif0", "--port", "3000"), "no such network interface")


def test_bad_filter_is_one_line_error() -> None:
    # port 70000 makes libpcap refuse "tcp port 70000"
    _one_line_error(_cli("--iface", "lo", "--port", "70000"), "bad capture filter")
    with pytest.raises(CaptureSourceError, match="bad capture filter"):
        LiveCapture("lo", bpf_filter="tcp port and and")


def test_no_cap_net_raw_is_one_line_error() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    r = _cli("--iface", "lo", "--port", "3000", "--duration", "1", user="65534")
    if "Permission denied" in r.stderr and "python" in r.stderr.lower():
        pytest.skip("the venv is not readable by an unprivileged user")
    _one_line_error(r, "needs root or CAP_NET_RAW")


def test_write_needs_iface() -> None:
    r = _cli("x.pcap", "--write", "y.pcap")
    assert r.returncode == 2 and "--write need --iface" in r.stderr


SERVE_ABORT = textwrap.dedent(
    """
    import socket, struct, sys, time
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], 3000))
    srv.listen(16)
    srv.settimeout(20)
    print("ready", flush=True)
    for _ in range(int(sys.argv[2])):
        c, _a = srv.accept()
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            data += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        time.sleep(0.05)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    for _ in range(int(sys.argv[2])):
        s = socket.create_connection((sys.argv[1], 3000), timeout=10)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: backend\\r\\n\\r\\n")
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        s.close()
    """
)


def test_live_one_ethernet_interface(tmp_path: Path) -> None:
    """--iface on one Ethernet interface (a veth pair between two namespaces):
    Ethernet frames as they are, link type 1, in the report and the --write
    file, and offline analysis of that file gives the same resets."""
    pcap = tmp_path / "eth.pcap"
    with netns() as a, netns() as b:
        ip = ["ip", "-n", a]
        subprocess.run([*ip, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
                        "netns", b], check=True, timeout=10)  # fmt: skip
        subprocess.run([*ip, "addr", "add", "10.77.9.1/24", "dev", "veth0"], check=True)
        subprocess.run(["ip", "-n", b, "addr", "add", "10.77.9.2/24", "dev", "veth1"], check=True)
        subprocess.run([*ip, "link", "set", "veth0", "up"], check=True)
        subprocess.run(["ip", "-n", b, "link", "set", "veth1", "up"], check=True)
        srv = subprocess.Popen(
            ["ip", "netns", "exec", b, PY, "-c", SERVE_ABORT, "10.77.9.2", str(N_ABORT)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        cmd = ["ip", "netns", "exec", a, PY, "-m", "pcapreset", "analyze", "--iface", "veth0",
               "--port", "3000", "--duration", "5", "--write", str(pcap),
               "--format", "json"]  # fmt: skip
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        ready, _, _ = select.select([p.stderr], [], [], 30)
        assert ready and "capturing" in p.stderr.readline()
        subprocess.run(["ip", "netns", "exec", a, PY, "-c", CLIENT, "10.77.9.2", str(N_ABORT)],
                       check=True, timeout=30)  # fmt: skip
        srv.wait(timeout=20)
        out, err = p.communicate(timeout=40)
    assert p.returncode == 0, err
    rep = json.loads(out)
    live = rep["capture"]["live"]
    assert live["linktype"] == "EN10MB(1)" and rep["capture"]["linktypes"] == ["EN10MB(1)"]
    assert live["ring"].startswith("TPACKET_V3") and live["kernel_drops"] == 0
    assert live["packets_received"] == rep["capture"]["packets"] >= 7 * N_ABORT
    got = Counter((r["cause"], r["sender"], r["server"]) for r in rep["resets"])
    assert got == {("abortive_close", "server", "10.77.9.2:3000"): N_ABORT}
    off = _offline(pcap)
    assert off["capture"]["linktypes"] == ["EN10MB(1)"]
    assert off["capture"]["packets"] == rep["capture"]["packets"]
    assert off["resets"] == rep["resets"]
