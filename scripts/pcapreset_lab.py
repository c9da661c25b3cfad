#!/usr/bin/env python3
"""pcapreset reset lab: real nginx + real backends in network namespaces, labelled captures.

Topology (one set of namespaces per run, names prl-<runid>-<role>):

    client (c0 10.77.1.2)  --  (n0 10.77.1.1) nginx (n1 10.77.2.2)  --
        (r0 10.77.2.1) router (r1 10.77.3.1)  --  (b0 10.77.3.2) backend :3000

IPv6: fd77:1::/64, fd77:2::/64, fd77:3::/64 with the same host numbers.  The router forwards
without NAT, so both captures see the same 4-tuples.  Middleboxes (netem, iptables,
conntrack, the scapy injector, a small MTU) live in the router namespace.

Everything the lab creates lives inside its own namespaces (veths are created directly in
them, iptables rules and sysctls are per-namespace), so deleting the namespaces after
killing every process inside them removes all of it.  `--cleanup` does that for runs whose
owner process is gone.

Labels come from the lab's own logs (backend logs, kill times, injector log, iptables
counters, nginx error.log) cross-checked against the wire with an independent pcap reader
in this file -- never from pcapreset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BACKENDS = HERE / "lab_backends"
PREFIX = "prl"
PORT = 3000
NGINX_PORT = 8080
DEFAULT_PY = str(REPO / ".venv" / "bin" / "python")

V4 = {
    "cli": "10.77.1.2", "ngx_down": "10.77.1.1", "ngx_up": "10.77.2.2",
    "rtr_n": "10.77.2.1", "rtr_b": "10.77.3.1", "be": "10.77.3.2",
}
V6 = {
    "cli": "fd77:1::2", "ngx_down": "fd77:1::1", "ngx_up": "fd77:2::2",
    "rtr_n": "fd77:2::1", "rtr_b": "fd77:3::1", "be": "fd77:3::2",
}


def python_exe() -> str:
    return DEFAULT_PY if os.path.exists(DEFAULT_PY) else sys.executable


def now() -> float:
    return time.time()


def fmt_ep(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class LabError(RuntimeError):
    pass


def run(cmd: list[str], check: bool = True, capture: bool = True, timeout: float = 30):
    p = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p


# --------------------------------------------------------------------------- topology


def prerequisites() -> list[str]:
    """What is missing for running the lab (empty list = ready)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_SYS_ADMIN)")
    for tool, paths in (("ip", ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]),
                        ("nginx", ["/usr/sbin/nginx"]), ("tcpdump", ["/usr/bin/tcpdump",
                                                                      "/usr/sbin/tcpdump"]),
                        ("tc", ["/usr/sbin/tc", "/sbin/tc"])):
        if not shutil.which(tool) and not any(os.path.exists(p) for p in paths):
            missing.append(tool)
    return missing


def ensure_deps(log=print, production: bool = False,
                apt_wanted: dict[str, str] | None = None) -> list[str]:
    """Install what the lab needs when missing (root only): system packages through
    scripts/install-sysdeps (apt), Python packages (uvicorn, gunicorn, scapy) through pip
    into the interpreter that runs the backends.  Returns what is still missing."""
    if os.geteuid() == 0:
        if prerequisites() or not (shutil.which("node") or os.path.exists("/usr/bin/node")):
            log("lab: installing missing system packages (scripts/install-sysdeps)")
            subprocess.run(["bash", str(HERE / "install-sysdeps")], check=False, timeout=900)
        # recording-only tools (the tests read the recorded folders): ethtool, and with
        # production=True (lab_production scenarios) Apache httpd, Go and openssl
        wanted = {"ethtool": "/usr/sbin/ethtool"}
        if production:
            wanted.update({"apache2": "/usr/sbin/apache2", "golang-go": "/usr/bin/go",
                           "openssl": "/usr/bin/openssl"})
        wanted.update(apt_wanted or {})  # a scenario's own backend (spec "apt")
        apt = [pkg for pkg, path in wanted.items()
               if not os.path.exists(path) and not shutil.which(Path(path).name)]
        if apt:
            log(f"lab: apt-get installing {' '.join(apt)}")
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *apt],
                           check=False, capture_output=True, timeout=900)
        py = python_exe()
        if subprocess.run([py, "-c", "import uvicorn, gunicorn, scapy"],
                          capture_output=True).returncode != 0:
            log("lab: pip installing uvicorn gunicorn scapy")
            subprocess.run([py, "-m", "pip", "install", "-q", "uvicorn", "gunicorn", "scapy"],
                           check=False, timeout=900)
    return prerequisites()


def tool(name: str) -> str:
    for p in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}"):
        if p and os.path.exists(p):
            return p
    return name


class Lab:
    """One set of namespaces + the processes started in them."""

    ROLES = ("cli", "ngx", "rtr", "be")

    def __init__(self, workdir: Path, log=print):
        self.runid = f"{os.getpid()}{random.randrange(16**3):03x}"
        self.ns = {r: f"{PREFIX}-{self.runid}-{r}" for r in self.ROLES}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen, object]] = []
        self.created: list[str] = []
        self.log = log
        self.events: list[dict] = []  # lab's own action log

    # -- helpers
    def ex(self, role: str, *cmd: str, check: bool = True, timeout: float = 30):
        return run(["ip", "netns", "exec", self.ns[role], *cmd], check=check, timeout=timeout)

    def event(self, what: str, **kw):
        rec = {"ts": round(now(), 6), "event": what, **kw}
        self.events.append(rec)
        self.log(f"  [{time.strftime('%H:%M:%S')}] {what} {kw if kw else ''}")
        return rec

    def spawn(self, role: str, name: str, cmd: list[str], stdout: Path | None = None,
              stderr: Path | None = None, cwd: str | None = None) -> subprocess.Popen:
        out = open(stdout, "ab") if stdout else subprocess.DEVNULL
        err = open(stderr, "ab") if stderr else (subprocess.STDOUT if stdout else
                                                  subprocess.DEVNULL)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *cmd], stdout=out,
                             stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                             cwd=cwd)
        self.procs.append((name, p, (out, err)))
        return p

    # -- build
    def setup(self, ipv6: bool = True):
        for r in self.ROLES:
            run(["ip", "netns", "add", self.ns[r]])
            self.created.append(self.ns[r])
            self.ex(r, "ip", "link", "set", "lo", "up")
        links = (("cli", "c0", "ngx", "n0"), ("ngx", "n1", "rtr", "r0"), ("rtr", "r1", "be", "b0"))
        for a, ia, b, ib in links:
            run(["ip", "-n", self.ns[a], "link", "add", ia, "type", "veth", "peer", "name", ib,
                 "netns", self.ns[b]])
        addr = {("cli", "c0"): "cli", ("ngx", "n0"): "ngx_down", ("ngx", "n1"): "ngx_up",
                ("rtr", "r0"): "rtr_n", ("rtr", "r1"): "rtr_b", ("be", "b0"): "be"}
        eth = tool("ethtool")
        for (role, dev), key in addr.items():
            self.ex(role, "ip", "addr", "add", f"{V4[key]}/24", "dev", dev)
            if ipv6:
                self.ex(role, "ip", "-6", "addr", "add", f"{V6[key]}/64", "dev", dev, "nodad")
            # no offloads: captures then show real MSS-sized segments and valid checksums
            self.ex(role, eth, "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                    check=False)
            self.ex(role, "ip", "link", "set", dev, "up")
        self.ex("ngx", "ip", "route", "add", "10.77.3.0/24", "via", V4["rtr_n"])
        self.ex("be", "ip", "route", "add", "10.77.2.0/24", "via", V4["rtr_b"])
        self.ex("rtr", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        if ipv6:
            self.ex("ngx", "ip", "-6", "route", "add", "fd77:3::/64", "via", V6["rtr_n"])
            self.ex("be", "ip", "-6", "route", "add", "fd77:2::/64", "via", V6["rtr_b"])
            self.ex("rtr", "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        self.event("topology_up", namespaces=list(self.ns.values()))

    def sysctl(self, role: str, **kv):
        for k, v in kv.items():
            self.ex(role, "sysctl", "-q", "-w", f"{k.replace('__', '.')}={v}")
        self.event("sysctl", ns=role, values=kv)

    def mac(self, role: str, dev: str) -> str:
        return json.loads(self.ex(role, "ip", "-j", "link", "show", "dev", dev).stdout)[0][
            "address"]

    def netem(self, delay_ms: int, drop: float = 0.0, mirror: str | None = None):
        """Add delay_ms one-way delay in the router (each direction).

        Uses tc netem when the kernel has it; otherwise (CONFIG_NET_SCH_NETEM unset, as on
        the machine the samples were made on) a userspace delay line in the router
        namespace with kernel forwarding switched off (lab_backends/delayline.py)."""
        p = self.ex("rtr", "tc", "qdisc", "add", "dev", "r0", "root", "netem", "delay",
                    f"{delay_ms}ms", "limit", "10000", check=False) if not (drop or mirror) \
            else None
        if p is not None and p.returncode == 0:
            self.ex("rtr", "tc", "qdisc", "add", "dev", "r1", "root", "netem", "delay",
                    f"{delay_ms}ms", "limit", "10000")
            self.event("netem", delay_ms_each_way=delay_ms)
            return
        self.ex("rtr", "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        self.ex("rtr", "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0")
        # with forwarding off the kernel must stay silent about transit packets
        self.ex("rtr", "iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
                "destination-unreachable", "-j", "DROP")
        self.ex("rtr", "ip6tables", "-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type",
                "destination-unreachable", "-j", "DROP")
        sides = [f"r0,{self.mac('rtr', 'r0')},{self.mac('ngx', 'n1')},10.77.2.0/24,fd77:2::/64",
                 f"r1,{self.mac('rtr', 'r1')},{self.mac('be', 'b0')},10.77.3.0/24,fd77:3::/64"]
        log = self.workdir / "delayline.log"
        p2 = self.spawn("rtr", "delayline", [python_exe(), str(BACKENDS / "delayline.py"),
                                             "--delay-ms", str(delay_ms), "--max-seconds", "150",
                                             "--drop", str(drop),
                                             *(["--mirror", mirror] if mirror else []),
                                             *[x for s in sides for x in ("--side", s)]],
                        stdout=log)
        t_end = now() + 10
        while now() < t_end and not (log.exists() and "started" in log.read_text()):
            if p2.poll() is not None:
                raise LabError("delayline exited: " + log.read_text()[-400:])
            time.sleep(0.05)
        self.event("delayline", delay_ms_each_way=delay_ms, drop=drop, mirror=mirror,
                   note="no sch_netem in this kernel: userspace delay line, kernel forwarding off")

    def iptables(self, role: str, *rule: str, v6: bool = False):
        self.ex(role, "ip6tables" if v6 else "iptables", *rule)
        self.event("iptables", ns=role, rule=" ".join(rule))

    def iptables_counters(self, role: str, v6: bool = False) -> str:
        return self.ex(role, "ip6tables" if v6 else "iptables", "-L", "-v", "-n", "-x",
                       check=False).stdout

    # -- processes
    def wait_listen(self, role: str, port: int, timeout: float = 15.0, present: bool = True):
        t_end = now() + timeout
        while now() < t_end:
            out = self.ex(role, "ss", "-Hltn", f"sport = :{port}", check=False).stdout
            if bool(out.strip()) == present:
                return True
            time.sleep(0.05)
        raise LabError(f"port {port} in {role} not {'listening' if present else 'closed'}")

    def start_capture(self, role: str, iface: str, path: Path,
                      bpf: tuple[str, ...] = ("port", str(PORT)),
                      snaplen: int = 256) -> subprocess.Popen:
        err = path.with_suffix(".tcpdump.log")
        p = self.spawn(role, f"tcpdump-{role}",
                       [tool("tcpdump"), "-i", iface, "-s", str(snaplen), "-U", "-n", "-Z",
                        "root", "-w", str(path), *bpf], stderr=err)
        t_end = now() + 10
        while now() < t_end:
            if err.exists() and "listening on" in err.read_text(errors="replace"):
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise LabError(f"tcpdump in {role} did not start: {err.read_text(errors='replace')}")

    def stop(self, p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)

    def teardown(self):
        for name, p, files in reversed(self.procs):
            try:
                self.stop(p, signal.SIGINT if name.startswith("tcpdump") else signal.SIGTERM,
                          timeout=3)
            except Exception as e:  # noqa: BLE001
                self.log(f"teardown: {name}: {e}")
            for f in files:
                if hasattr(f, "close"):
                    f.close()
        for ns in self.created:
            cleanup_namespace(ns)
        self.created.clear()


def cleanup_namespace(ns: str):
    pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    for _ in range(50):
        if not run(["ip", "netns", "pids", ns], check=False).stdout.split():
            break
        time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False)


def _alive(pid: int) -> bool:
    """Is the run that owns a namespace still running (not a zombie, still python)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if re.search(r"^State:\s+Z", status, re.M):
        return False
    return b"python" in cmd


def cleanup_all(force: bool = False) -> list[str]:
    """Remove lab namespaces whose owner process is gone (all of them with force)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{PREFIX}-(\d+)[0-9a-f]{{3}}-(cli|ngx|rtr|be|ctr)$", name)
        if not m:
            continue
        owner = int(m.group(1))
        if not force and owner != os.getpid() and _alive(owner):
            continue
        cleanup_namespace(name)
        removed.append(name)
    return removed


# --------------------------------------------------------------------------- nginx


def nginx_conf(workdir: Path, ipv6: bool, read_timeout: float = 10, connect_timeout: float = 5,
               extra_location: str = "", keepalive_timeout: float = 60,
               servers: list[str] | None = None, scheme: str = "http",
               balancer: str = "", proto: str = "http") -> str:
    """proto: "http" (HTTP/1.1 with upstream keep-alive), "http10" (no proxy_http_version:
    HTTP/1.0, one request per connection), "websocket" (HTTP/1.1 with the Upgrade headers
    passed on), "fastcgi" (fastcgi_pass, fastcgi_keep_conn on), "uwsgi" (uwsgi_pass)."""
    be = f"[{V6['be']}]" if ipv6 else V4["be"]
    if proto == "fastcgi":
        root = f"root {workdir}/php;"
        passing = f"""fastcgi_pass backend;
            fastcgi_keep_conn on;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {workdir}/php/app.php;
            fastcgi_connect_timeout {connect_timeout}s;
            fastcgi_read_timeout {read_timeout}s;"""
    elif proto == "uwsgi":
        root = ""
        passing = f"""uwsgi_pass backend;
            include /etc/nginx/uwsgi_params;
            uwsgi_connect_timeout {connect_timeout}s;
            uwsgi_read_timeout {read_timeout}s;"""
    else:
        root = ""
        version = {"http": 'proxy_http_version 1.1;\n            proxy_set_header Connection "";',
                   "http10": "",
                   "websocket": "proxy_http_version 1.1;\n"
                                "            proxy_set_header Upgrade $http_upgrade;\n"
                                '            proxy_set_header Connection "upgrade";'}[proto]
        passing = f"""proxy_pass {scheme}://backend;
            {version}
            proxy_connect_timeout {connect_timeout}s;
            proxy_read_timeout {read_timeout}s;"""
    upstream = "\n        ".join(f"server {s}:{PORT} max_fails=0;" for s in (servers or [be]))
    return f"""# generated by scripts/pcapreset_lab.py
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    default_type text/plain;
    log_format upstream '$remote_addr - - [$time_local] "$request" $status $body_bytes_sent '
                        '$upstream_addr $upstream_status $upstream_response_time '
                        '$upstream_connect_time $request_time $msec';
    access_log {workdir}/access.log upstream;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;

    upstream backend {{
        {upstream}
        {balancer}
        keepalive 16;
        keepalive_timeout {keepalive_timeout:g}s;
    }}
    server {{
        listen {V4['ngx_down']}:{NGINX_PORT};
        listen [{V6['ngx_down']}]:{NGINX_PORT};
        {root}
        location / {{
            {passing}
            {extra_location}
        }}
    }}
}}
"""


# --------------------------------------------------------------------------- wire reader


@dataclass
class Pkt:
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    ttl: int
    ipid: int | None
    plen: int
    optlen: int
    head: bytes = b""  # first payload bytes (record type, request method)


@dataclass
class Conn:
    client: str
    server: str
    pkts: list = field(default_factory=list)

    def dir(self, p: Pkt) -> str:
        return "c2s" if fmt_ep(p.src, p.sport) == self.client else "s2c"


F_FIN, F_SYN, F_RST, F_PSH, F_ACK = 1, 2, 4, 8, 16


def read_pcap(path: Path) -> tuple[int, list[Pkt]]:
    """Independent minimal pcap reader (Ethernet, SLL, SLL2, raw) -> TCP packets."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return -1, []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise LabError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(end + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    out = []
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
        buf = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ts = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:
            etype, l3 = struct.unpack("!H", buf[12:14])[0], buf[14:]
            if etype == 0x8100:
                etype, l3 = struct.unpack("!H", buf[16:18])[0], buf[18:]
        elif linktype == 276:
            etype, l3 = struct.unpack("!H", buf[0:2])[0], buf[20:]
        elif linktype == 113:
            etype, l3 = struct.unpack("!H", buf[14:16])[0], buf[16:]
        elif linktype in (101, 12, 228, 229):
            etype = 0x0800 if buf and buf[0] >> 4 == 4 else 0x86DD
            l3 = buf
        else:
            raise LabError(f"{path}: link type {linktype} not handled")
        if etype == 0x0800 and len(l3) >= 28 and l3[9] == 17:
            ihl = (l3[0] & 0x0F) * 4
            if struct.unpack("!H", l3[ihl + 2:ihl + 4])[0] == VXLAN_PORT:
                inner = l3[ihl + 16:]  # UDP (8) + VXLAN (8) -> inner Ethernet frame
                etype, l3 = struct.unpack("!H", inner[12:14])[0], inner[14:]
        p = parse_ip(ts, etype, l3)
        if p:
            out.append(p)
    return linktype, out


VXLAN_PORT = 4789


def unalias(pkts: list[Pkt], aliases: dict[str, str]) -> list[Pkt]:
    """Rewrite translated addresses (DNAT: container ip:port -> the published ip:port) so a
    packet seen before and after translation belongs to one connection."""
    if not aliases:
        return pkts
    amap = {tuple(k.rsplit(":", 1)): tuple(v.rsplit(":", 1)) for k, v in aliases.items()}
    for p in pkts:
        for end in ("src", "dst"):
            port = "sport" if end == "src" else "dport"
            key = (getattr(p, end), str(getattr(p, port)))
            if key in amap:
                setattr(p, end, amap[key][0])
                setattr(p, port, int(amap[key][1]))
    return pkts


def parse_ip(ts: float, etype: int, b: bytes) -> Pkt | None:
    if etype == 0x0800 and len(b) >= 20:
        ihl = (b[0] & 0x0F) * 4
        total, ipid, ttl, proto = struct.unpack("!H", b[2:4])[0], struct.unpack(
            "!H", b[4:6])[0], b[8], b[9]
        if proto != 6:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET, b[12:16]), socket.inet_ntop(
            socket.AF_INET, b[16:20])
        t = b[ihl:]
        l4len = total - ihl
    elif etype == 0x86DD and len(b) >= 40:
        plen, nh, ttl = struct.unpack("!H", b[4:6])[0], b[6], b[7]
        if nh != 6:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET6, b[8:24]), socket.inet_ntop(
            socket.AF_INET6, b[24:40])
        t = b[40:]
        l4len = plen
        ipid = None
    else:
        return None
    if len(t) < 20:
        return None
    sport, dport, seq, ack, offb, flags = struct.unpack("!HHIIBB", t[:14])
    thl = (offb >> 4) * 4
    plen = max(0, l4len - thl)
    return Pkt(ts, src, dst, sport, dport, flags, seq, ack, ttl, ipid, plen, thl - 20,
               bytes(t[thl:thl + min(plen, 8)]))


def connections(pkts: list[Pkt]) -> list[Conn]:
    conns: list[Conn] = []
    open_by_key: dict[tuple, Conn] = {}
    for p in pkts:
        if p.dport == PORT:
            client, server = fmt_ep(p.src, p.sport), fmt_ep(p.dst, p.dport)
        elif p.sport == PORT:
            client, server = fmt_ep(p.dst, p.dport), fmt_ep(p.src, p.sport)
        else:
            continue
        key = (client, server)
        c = open_by_key.get(key)
        is_syn = p.flags & F_SYN and not p.flags & F_ACK
        if c is not None and is_syn:
            # a new SYN after the old connection saw a SYN-ACK, FIN or RST = new connection,
            # unless it repeats the first SYN's sequence number (a retransmitted SYN: its
            # SYN-ACK was lost on a lossy path)
            first_syn = next((q for q in c.pkts if q.flags & F_SYN and not q.flags & F_ACK),
                             None)
            retransmitted = first_syn is not None and first_syn.seq == p.seq
            if not retransmitted and any(
                    q.flags & (F_RST | F_FIN) or (q.flags & F_SYN and q.flags & F_ACK)
                    for q in c.pkts):
                c = None
        if c is None:
            c = Conn(client, server)
            conns.append(c)
            open_by_key[key] = c
        c.pkts.append(p)
    return conns


METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"PATC", b"OPTI")


#: TLS 1.3 hides an alert in an application-data record: 2 alert bytes + the inner content
#: type + a 16-byte AEAD tag = 19 bytes (no request is that short)
TLS13_ALERT_LEN = 19


def payload_kind(p: Pkt) -> str:
    """What a data segment starts with: an HTTP request, a TLS record type, or other."""
    h = p.head
    if h.startswith(METHODS):
        return "request"
    if len(h) >= 2 and h[1] == 3 and h[0] in (20, 21, 22, 23):
        if h[0] == 23 and len(h) >= 5 and struct.unpack("!H", h[3:5])[0] == TLS13_ALERT_LEN \
                and p.plen == 5 + TLS13_ALERT_LEN:
            return "tls_alert"  # TLS 1.3: an encrypted alert (close_notify)
        return {20: "tls_ccs", 21: "tls_alert", 22: "tls_handshake", 23: "tls_appdata"}[h[0]]
    return "other"


def conn_facts(c: Conn) -> dict:
    f: dict = {"client": c.client, "server": c.server, "first_ts": c.pkts[0].ts,
               "last_ts": c.pkts[-1].ts, "packets": len(c.pkts)}
    syn = [p for p in c.pkts if p.flags & F_SYN and not p.flags & F_ACK]
    synack = [p for p in c.pkts if p.flags & F_SYN and p.flags & F_ACK]
    rsts = [p for p in c.pkts if p.flags & F_RST]
    fins = {d: [p for p in c.pkts if p.flags & F_FIN and c.dir(p) == d] for d in ("c2s", "s2c")}
    data = {d: [p for p in c.pkts if p.plen > 0 and c.dir(p) == d] for d in ("c2s", "s2c")}
    f["syn_ts"] = syn[0].ts if syn else None
    f["syn_count"] = len(syn)
    f["synack_count"] = len(synack)
    f["rst_packets"] = len(rsts)
    f["rst_c2s"] = sum(1 for p in rsts if c.dir(p) == "c2s")
    f["rst_s2c"] = sum(1 for p in rsts if c.dir(p) == "s2c")
    f["fin_c2s_ts"] = fins["c2s"][0].ts if fins["c2s"] else None
    f["fin_s2c_ts"] = fins["s2c"][0].ts if fins["s2c"] else None
    f["data_c2s"] = len(data["c2s"])
    f["data_s2c"] = len(data["s2c"])
    # ttl per direction of non-RST packets (to spot forged RSTs)
    f["ttl"] = {d: sorted({p.ttl for p in c.pkts if c.dir(p) == d and not p.flags & F_RST})
                for d in ("c2s", "s2c")}
    seen: dict = {}
    big_rx = 0
    for p in data["s2c"]:
        k = (p.seq, p.plen)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == 2 and p.plen >= 900:
            big_rx += 1
    f["s2c_big_retransmits"] = big_rx
    # bytes the server sent (its sequence numbers moved past them) that never reached this
    # vantage point: the signature of a black hole upstream of the capture
    hole = 0
    if synack:
        isn = synack[0].seq
        covered: set = set()
        top = 0
        for p in c.pkts:
            if c.dir(p) != "s2c" or p.flags & F_SYN:
                continue
            rel = (p.seq - isn - 1) % (1 << 32)
            if rel > 1 << 30:
                continue
            top = max(top, rel + p.plen)
            if p.plen:
                covered.update(range(rel // 256, (rel + p.plen) // 256 + 1))
        hole = max(0, top - len(covered) * 256)
    f["s2c_unseen_bytes"] = hole
    f["s2c_max_seg"] = max((p.plen for p in data["s2c"]), default=0)
    f["c2s_retransmits"] = len(data["c2s"]) - len({(p.seq, p.plen) for p in data["c2s"]})
    # server packets after its SYN-ACK (0: it never even ACKed the client's data)
    f["s2c_after_synack"] = sum(1 for p in c.pkts if c.dir(p) == "s2c" and not p.flags & F_SYN)
    # a request the server never answered, sent around the server's FIN (a keep-alive race
    # that ended without RST, e.g. Apache's lingering close reads and discards it)
    # the server closed (FIN) while the client's last data was still unanswered: a request
    # outstanding (any protocol: FastCGI records, HTTP, ...)
    f["fin_with_request_outstanding"] = False
    if f["fin_s2c_ts"] is not None:
        fin = f["fin_s2c_ts"]
        last_c = max((p.ts for p in data["c2s"] if p.ts <= fin), default=None)
        last_s = max((p.ts for p in data["s2c"] if p.ts <= fin), default=0.0)
        f["fin_with_request_outstanding"] = last_c is not None and last_c > last_s
    # nginx closed (FIN) while waiting: seconds from its last data to its FIN, with nothing
    # from the server in between (its read timeout), else None
    f["client_fin_waiting_s"] = None
    if f["fin_c2s_ts"] is not None:
        fin = f["fin_c2s_ts"]
        last_c = max((p.ts for p in data["c2s"] if p.ts <= fin), default=None)
        last_s = max((p.ts for p in data["s2c"] if p.ts <= fin), default=0.0)
        if last_c is not None and last_c > last_s:
            f["client_fin_waiting_s"] = round(fin - last_c, 6)
    # nginx's FIN after a silence in both directions (a proxy timeout on a quiet
    # connection): seconds from the last data either way to nginx's FIN, else None
    f["client_fin_idle_s"] = None
    if f["fin_c2s_ts"] is not None:
        fin = f["fin_c2s_ts"]
        last_any = max((p.ts for p in c.pkts if p.plen and p.ts <= fin), default=None)
        if last_any is not None:
            f["client_fin_idle_s"] = round(fin - last_any, 6)
    f["unanswered_request_near_server_fin"] = False
    if f["fin_s2c_ts"] is not None:
        reqs = [p for p in data["c2s"] if payload_kind(p) in ("request", "tls_appdata")]
        last = reqs[-1] if reqs else None
        if last is not None and last.ts >= f["fin_s2c_ts"] - 0.5 and not any(
                p.ts > last.ts for p in data["s2c"]):
            f["unanswered_request_near_server_fin"] = True
            f["unanswered_request_ts"] = last.ts
    if rsts:
        r = rsts[0]
        f["first_rst"] = {"ts": r.ts, "dir": c.dir(r), "ttl": r.ttl, "ip_id": r.ipid,
                          "seq": r.seq, "ack_flag": bool(r.flags & F_ACK),
                          "src": fmt_ep(r.src, r.sport), "dst": fmt_ep(r.dst, r.dport)}
        before = [p for p in c.pkts if p.ts < r.ts or p is not r and p.ts == r.ts][:-1] or []
        nonrst = [p for p in c.pkts if p.ts <= r.ts and not p.flags & F_RST]
        f["first_rst"]["answers_syn"] = bool(syn) and not synack
        f["first_rst"]["server_fin_before"] = any(
            p.flags & F_FIN and c.dir(p) == "s2c" and p.ts <= r.ts for p in c.pkts)
        f["first_rst"]["client_data_after_server_fin"] = bool(
            f["fin_s2c_ts"] is not None
            and any(p.ts >= f["fin_s2c_ts"] for p in data["c2s"]))
        f["first_rst"]["idle_before_s"] = round(r.ts - nonrst[-1].ts, 6) if nonrst else None
        # what the client sent after the server's last data, up to the RST: a new request
        # (HTTP request line or TLS application data) or only a TLS alert / FIN / ACK.
        # (Not "after the server's FIN": at nginx's vantage point a racing request leaves
        # before the FIN arrives.)
        last_s2c = max((p.ts for p in data["s2c"] if p.ts <= r.ts), default=0.0)
        f["first_rst"]["c2s_after_last_response"] = [
            payload_kind(p) for p in data["c2s"] if last_s2c < p.ts <= r.ts]
        f["first_rst"]["last_s2c_data_ts"] = last_s2c
        f["first_rst"]["client_fin_before"] = f["fin_c2s_ts"] is not None and \
            f["fin_c2s_ts"] <= r.ts
        # what the server sent after the client's FIN, up to the RST (a late response, or
        # only a TLS close_notify alert)
        f["first_rst"]["s2c_after_client_fin"] = [
            payload_kind(p) for p in data["s2c"]
            if f["fin_c2s_ts"] is not None and f["fin_c2s_ts"] <= p.ts <= r.ts]
        del before
    return f


# --------------------------------------------------------------------------- logs


def read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def read_uvicorn_log(path: Path) -> list[dict]:
    out = []
    rx = re.compile(r"^(\d+\.\d+) \S+ \S+ (\S+) - HTTP connection (made|lost)")
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        m = rx.match(line)
        if m:
            out.append({"ts": float(m.group(1)), "peer": m.group(2),
                        "event": "accept" if m.group(3) == "made" else "connection lost"})
    return out


def by_peer(events: list[dict]) -> dict[str, list[dict]]:
    d: dict[str, list[dict]] = {}
    for e in events:
        if "peer" in e:
            d.setdefault(e["peer"], []).append(e)
    return d


# --------------------------------------------------------------------------- labelling


@dataclass
class Ctx:
    scenario: str
    backend: str
    backend_events: list = field(default_factory=list)
    kills: list = field(default_factory=list)      # lab kill -9 timestamps
    injected: list = field(default_factory=list)   # injector log records
    reject_count: int = 0                          # iptables REJECT counter (router)
    icmp_dropped: int = 0
    expect: dict = field(default_factory=dict)
    probes: list = field(default_factory=list)     # health checker log records
    restarts: list = field(default_factory=list)   # backend stop/recycle times (lab + logs)
    start_captures: object = None                  # late_capture scenarios start them
    drops: list = field(default_factory=list)      # packets the lossy router dropped


def classify(f: dict, vantage: str, ctx: Ctx) -> dict | None:
    """Cause/sender of the earliest RST of one connection, from the lab's logs + the wire."""
    r = f.get("first_rst")
    if not r:
        return None
    peers = by_peer(ctx.backend_events)
    ev = peers.get(f["client"], [])
    evs = ", ".join(f"{e['event']} at {e['ts']:.3f}" for e in ev if e["event"] not in
                    ("request", "response", "processing"))
    wire = (f"wire: first RST {r['src']} -> {r['dst']} at {r['ts']:.6f} "
            f"(ttl {r['ttl']}, ip_id {r['ip_id']}, {'RST,ACK' if r['ack_flag'] else 'bare RST'})")
    # 1. forged by the on-path injector?
    for inj in ctx.injected:
        if inj.get("event") == "injected_rst" and inj["src"] == r["src"] and \
                inj["dst"] == r["dst"] and inj["seq"] == r["seq"]:
            return {"cause": "middlebox", "sender": "middlebox",
                    "source": f"injector log: sent RST {inj['src']} -> {inj['dst']} seq "
                              f"{inj['seq']} ttl {inj['ttl']} ip_id {inj['ip_id']} at "
                              f"{inj['ts']:.6f}; {wire}"}
    # 2. generated by the router's iptables REJECT (tcp-reset): the router is one hop from
    #    both vantage points, so its RST arrives with the full initial TTL while the
    #    claimed sender's real packets arrive decremented by the router
    other = f["ttl"]["s2c" if r["dir"] == "s2c" else "c2s"]
    if ctx.reject_count and other and r["ttl"] not in other:
        return {"cause": "middlebox", "sender": "middlebox",
                "source": f"router iptables REJECT --reject-with tcp-reset counter = "
                          f"{ctx.reject_count}; {wire}; the claimed sender's other packets "
                          f"in this flow have ttl {other}"}
    for pr in ctx.probes:
        if r["dir"] == "c2s" and pr.get("event") == "probe_rst" and pr["peer"] == r["src"]:
            return {"cause": "probe", "sender": "client",
                    "source": f"health checker log: {pr['kind']} check from {pr['peer']} "
                              f"closed with SO_LINGER 0 at {pr['ts']:.6f} "
                              f"({pr.get('detail', '')}); {wire}"}
    late = r.get("s2c_after_client_fin", [])
    if r["dir"] == "c2s" and r.get("client_fin_before") and late and all(
            k == "tls_alert" for k in late):
        return {"cause": "after_close", "sender": "client",
                "source": f"nginx closed its idle upstream connection first (FIN at "
                          f"{f['fin_c2s_ts']:.6f}, upstream keepalive_timeout); after it the "
                          f"server sent only {late} (its close_notify), no response data; "
                          f"backend log: {evs or 'n/a'}; {wire} answers it"}
    if r["dir"] == "c2s":
        return {"cause": "client_abort", "sender": "client",
                "source": f"nginx closed its upstream side first (error.log / access.log "
                          f"499 or 504); backend log: {evs or 'n/a'}; {wire}"}
    if r["answers_syn"]:
        return {"cause": "connection_refused", "sender": "server",
                "source": f"nothing listening on :{PORT} (backend down per lab log); {wire} "
                          f"answers the SYN"}
    for e in ev:
        if e["event"] in ("closed with SO_LINGER 0", "closed with unread bytes"):
            unread = f" (unread {e['unread']} bytes)" if "unread" in e else ""
            return {"cause": "abortive_close", "sender": "server",
                    "source": f"backend log: '{e['event']}' for {f['client']} at "
                              f"{e['ts']:.6f}{unread}; {wire}"}
    for e in ev:
        if e["event"] == "drop" and f["data_s2c"] == 0:
            # Node's server.maxConnections: accepted, then destroyed at once (the unread
            # request makes the close a RST): the server's capacity, like a full backlog
            return {"cause": "backlog_overflow", "sender": "server",
                    "source": f"backend log: 'drop' for {f['client']} at {e['ts']:.6f} "
                              f"(server.maxConnections {e.get('maxConnections')} reached: "
                              f"Node destroyed the connection on accept); no server data; "
                              f"{wire}"}
    for k in ctx.kills:
        if k["ts"] - 0.05 <= r["ts"] <= k["ts"] + 2.0:
            return {"cause": "backend_crash", "sender": "server",
                    "source": (k.get("source") or f"lab log: backend pid {k['pid']} killed "
                                                   f"with SIGKILL at {k['ts']:.6f}; socket had "
                                                   f"unread request bytes") + f"; {wire}"}
    if ctx.expect.get("backlog") and f["data_s2c"] == 0 and not any(
            e["event"] == "accept" for e in ev):
        return {"cause": "backlog_overflow", "sender": "server",
                "source": f"backend log: this peer was never accept()ed (listen backlog "
                          f"{ctx.expect['backlog']}, accept paused); tcp_abort_on_overflow=1; "
                          f"{wire} right after the handshake"}
    for rs in ctx.restarts:
        fin = f["fin_s2c_ts"]
        near = [t for t in (fin, r["ts"]) if t is not None
                and rs["ts"] - rs.get("before_s", 0.2) <= t <= rs["ts"] + rs.get("window_s", 2.0)]
        if r["dir"] == "s2c" and near:
            return {"cause": "backend_restart", "sender": "server",
                    "source": f"{rs['source']} at {rs['ts']:.6f}; wire: server "
                              f"{f'FIN at {fin:.6f}, then ' if fin else ''}"
                              f"{wire}; backend log for this peer: {evs or 'n/a'}"}
    after = r.get("c2s_after_last_response", [])
    # on a lossy path the request may have been dropped before this vantage point
    lost_req = [d for d in ctx.drops if d["src"] == f["client"] and d["dst"] == f["server"]
                and d["flags"] & F_PSH and r.get("last_s2c_data_ts", 0) < d["ts"] <= r["ts"]]
    if lost_req:
        wire += (f"; the client's data segment was dropped by the router at "
                 f"{lost_req[0]['ts']:.6f} on its way to the server (drops.log)")
    if r["server_fin_before"] and not lost_req and not any(
            k in ("request", "tls_appdata") for k in after):
        idle = [e for e in ev if e["event"] in ("closed idle", "connection lost")]
        why = (f"backend log: {idle[0]['event']} for {f['client']} at {idle[0]['ts']:.6f}"
               if idle else f"wire: server FIN at {f['fin_s2c_ts']:.6f}")
        return {"cause": "after_close", "sender": "server",
                "source": f"{why}; after the server's last data the client sent only "
                          f"{after or 'no data'} (no new request); {wire} answers it"}
    idle_logged = [e for e in ev if e["event"] == "closed idle" and e["ts"] <= r["ts"]]
    if r["server_fin_before"] or (r["dir"] == "s2c" and idle_logged):
        # (the FIN itself may be missing here: dropped on a lossy path before this vantage
        # point; the backend's log still says it closed the idle connection)
        idle = [e for e in ev if e["event"] in ("closed idle", "connection lost")]
        lost = [d for d in ctx.drops if d["src"] == f["server"] and d["dst"] == f["client"]
                and d["flags"] & F_FIN]
        if lost and not r["server_fin_before"]:
            wire += (f"; the server's FIN was dropped by the router at {lost[0]['ts']:.6f} "
                     f"(drops.log), so this vantage point never saw it")
        src = (f"backend log: {idle[0]['event']} for {f['client']} at {idle[0]['ts']:.6f}"
               + (f" after {idle[0].get('idle_s')} s idle" if idle[0].get("idle_s") else "")
               if idle else f"{ctx.backend} keeps no per-connection log; wire: server FIN "
                            f"after an idle gap at {f['fin_s2c_ts']:.6f}")
        return {"cause": "keepalive_race", "sender": "server",
                "source": f"{src}; request data crossed the server's FIN; {wire}"}
    return {"cause": "unknown", "sender": "server", "source": f"no lab log explains it; {wire}",
            "note": "server RST the lab did not plan"}


def build_labels(name: str, spec: dict, ctx: Ctx, caps: dict[str, Path], ipv6: bool,
                 extra: dict) -> dict:
    per_cap: dict[str, list[dict]] = {}
    linktypes = {}
    for capname, path in caps.items():
        lt, pkts = read_pcap(path)
        pkts = unalias(pkts, spec.get("server_aliases", {}))
        linktypes[capname] = lt
        per_cap[capname] = [conn_facts(c) for c in connections(pkts)]
    # merge the two views by (client, server, n-th occurrence)
    merged: dict[tuple, dict] = {}
    order: list[tuple] = []
    for capname, facts in per_cap.items():
        seen: dict = {}
        vantage = "backend" if capname.startswith("backend") else "nginx"
        for f in facts:
            k0 = (f["client"], f["server"])
            seen[k0] = seen.get(k0, 0) + 1
            k = (*k0, seen[k0])
            if k not in merged:
                merged[k] = {"client": f["client"], "server": f["server"], "per_capture": {}}
                order.append(k)
            lab = classify(f, vantage, ctx)
            pc = {"has_rst": bool(lab), "rst_packets": f["rst_packets"],
                  "first_ts": round(f["first_ts"], 6)}
            if lab:
                pc.update(cause=lab["cause"], sender=lab["sender"],
                          rst_ts=round(f["first_rst"]["ts"], 6), source=lab["source"])
                if lab.get("note"):
                    pc["note"] = lab["note"]
            else:
                pc.update(cause=None, sender=None)
            if f["unanswered_request_near_server_fin"]:
                # a keep-alive race on this connection: a request the server never answered
                # met its FIN (with or without a RST afterwards)
                pc["fin_crossed_request"] = True
                pc["unanswered_request_ts"] = round(f["unanswered_request_ts"], 6)
            merged[k]["per_capture"][capname] = pc
    conns = []
    for k in sorted(order, key=lambda k: min(v["first_ts"] for v in
                                              merged[k]["per_capture"].values())):
        m = merged[k]
        views = [v for v in m["per_capture"].values() if v["has_rst"]]
        if views:
            first = min(views, key=lambda v: v["rst_ts"])
            entry = {"client": m["client"], "server": m["server"], "has_rst": True,
                     "cause": first["cause"], "sender": first["sender"],
                     "source": first["source"]}
            causes = {(v["cause"], v["sender"]) for v in views}
            if len(causes) > 1 or len(views) != len(m["per_capture"]):
                entry["note"] = ("vantage points differ: " + "; ".join(
                    f"{cn}: {v['cause'] if v['has_rst'] else 'no RST'}"
                    for cn, v in m["per_capture"].items()))
        else:
            entry = {"client": m["client"], "server": m["server"], "has_rst": False,
                     "cause": None, "sender": None}
            if any(v.get("fin_crossed_request") for v in m["per_capture"].values()):
                entry["note"] = ("keep-alive race without RST: the server's idle-close FIN "
                                 "and nginx's next request crossed; the server read and "
                                 "discarded the request (lingering close) and never answered; "
                                 "nginx: 'upstream prematurely closed connection' (502, "
                                 "retried on a new connection for idempotent requests)")
        entry["per_capture"] = m["per_capture"]
        conns.append(entry)
    findings = []
    cap_findings: dict[str, list] = {c: [] for c in caps}
    for fcause, counter in spec.get("findings", {}).items():
        total = 0
        for capname, facts in per_cap.items():
            n = counter(facts, capname)
            if n:
                cap_findings[capname].append({"cause": fcause, "count": n})
            total = max(total, n)
        if total:
            findings.append({"cause": fcause, "count": total})
    captures = {}
    for capname in caps:
        facts = per_cap[capname]
        meta = spec.get("extra_captures", {}).get(capname, {})
        captures[capname] = {
            "vantage": meta.get("vantage") or (
                "backend" if capname.startswith("backend") else "nginx"),
            "linktype": linktypes[capname],
            "interface": meta.get("interface") or (
                "any (backend ns)" if capname.startswith("backend") else "n1"),
            "tcp_connections": len(facts),
            "rst_packets": sum(f["rst_packets"] for f in facts),
            "connections_with_rst": sum(1 for f in facts if f.get("first_rst")),
            "fin_crossed_request": sum(1 for f in facts
                                       if f["unanswered_request_near_server_fin"]),
            "findings": cap_findings[capname],
        }
    labels = {
        "scenario": name,
        "description": spec["description"],
        "backend": spec["backend"],
        "ip_version": 6 if ipv6 else 4,
        "backend_idle_timeout_s": spec.get("idle_timeout"),
        "nginx_keepalive_timeout_s": spec.get("nginx", {}).get("keepalive_timeout", 60),
        "captures": captures,
        "connections": conns,
        "findings": findings,
        "notes": "",
    }
    labels.update(extra)
    return labels


# --------------------------------------------------------------------------- scenarios


def f_mtu(facts, capname):
    if capname.startswith("backend"):
        return sum(1 for f in facts if f["s2c_big_retransmits"] > 0)
    # at nginx the MSS-sized segments never arrive: the server's sequence numbers jump
    # past bytes that were never seen here (and nginx times out)
    return sum(1 for f in facts if f["s2c_unseen_bytes"] >= 1400)


def f_backlog_silent(facts, capname):
    return sum(1 for f in facts if f["synack_count"] > 1 or (
        f["syn_count"] > 1 and f["synack_count"] >= 1))


def plan_file(lab: Lab, steps: list[dict]) -> Path:
    p = lab.workdir / "client_plan.json"
    p.write_text(json.dumps(steps, indent=1))
    return p


def run_client(lab: Lab, steps: list[dict], ipv6: bool, wait: bool = True,
               max_seconds: float = 90) -> subprocess.Popen:
    host = V6["ngx_down"] if ipv6 else V4["ngx_down"]
    p = lab.spawn("cli", "client", [python_exe(), str(BACKENDS / "client.py"), host,
                                   str(NGINX_PORT), str(plan_file(lab, steps)), str(max_seconds)],
                  stdout=lab.workdir / "client.log")
    lab.event("client_started", requests=sum(s.get("n", 1) for s in steps if "sleep" not in s))
    if wait:
        try:
            p.wait(max_seconds + 10)
        except subprocess.TimeoutExpired:
            lab.stop(p)
        lab.event("client_done")
    return p


#: backend kind -> function(lab, host, args) returning the command line (lab_production.py)
EXTRA_BACKENDS: dict = {}


def start_backend(lab: Lab, kind: str, ipv6: bool, args: list[str] | None = None,
                  logname: str = "backend.log", host: str | None = None,
                  wait: bool = True) -> subprocess.Popen:
    host = host or ("::" if ipv6 else "0.0.0.0")
    log = lab.workdir / logname
    py = python_exe()
    if kind == "pysock":
        cmd = [py, str(BACKENDS / "pysock.py"), "--host", host, *(args or [])]
    elif kind == "node":
        cmd = [tool("node"), str(BACKENDS / "node_server.js"), host, str(PORT), "120",
               *(args or [])]  # args: [keepAliveTimeout_ms]
    elif kind == "uvicorn":
        cmd = [py, str(BACKENDS / "uvicorn_app.py"), host, *(args or [])]  # [timeout_s]
    elif kind in EXTRA_BACKENDS:  # apache, go, ... (lab_production.py)
        cmd = EXTRA_BACKENDS[kind](lab, host, args or [])
    elif kind == "gunicorn":
        gbin = str(Path(py).parent / "gunicorn")
        cmd = [gbin, "--chdir", str(BACKENDS), "-w", "1", "--threads", "4", "-b",
               f"[{host}]:{PORT}" if ipv6 else f"{host}:{PORT}", "--log-level", "debug",
               "--access-logfile", "-", *(args or []), "gunicorn_app:app"]
    else:
        raise LabError(kind)
    p = lab.spawn("be", f"backend-{kind}", cmd, stdout=log)
    if not wait:
        pass
    elif not (args and "--accept-delay" in args):
        lab.wait_listen("be", PORT)
    else:
        time.sleep(0.5)
    lab.event("backend_started", kind=kind, pid=p.pid)
    return p


def restart_backend(lab: Lab, ctx: Ctx, be: subprocess.Popen, kind: str, ipv6: bool,
                    args: list[str] | None = None, *, who: str, note: str, why: str,
                    down_s: float = 0.5) -> subprocess.Popen:
    """SIGTERM the backend ``be`` and wait for it to exit; record the restart for the
    labels (``ctx.restarts``: "SIGTERM to the ``who`` (pid, ``why``)"; ``note`` goes into
    the lab's event log); ``down_s`` s later start it again (``kind``, ``args``) and
    return the new process."""
    os.kill(be.pid, signal.SIGTERM)
    k = lab.event("backend_sigterm", pid=be.pid, note=note)
    be.wait(10)
    lab.event("backend_exited", pid=be.pid)
    ctx.restarts.append({"ts": k["ts"], "window_s": 1.5,
                         "source": f"lab log: SIGTERM to the {who} (pid {be.pid}, {why})"})
    time.sleep(down_s)
    return start_again(lab, kind, ipv6, args)


def start_again(lab: Lab, kind: str, ipv6: bool, args: list[str] | None = None,
                **kw) -> subprocess.Popen:
    """Start a stopped backend again, after a line in backend.log that says so."""
    with open(lab.workdir / "backend.log", "a") as fh:
        fh.write(json.dumps({"ts": now(), "event": "lab: restarting backend"}) + "\n")
    return start_backend(lab, kind, ipv6, args, **kw)


def keepalive_gaps(T: float, d: float) -> list[float]:
    """Gaps (response received -> next request) around the race window (T-2d, T)."""
    mid = T - d
    return [T - 0.6, mid, mid - 0.04, mid + 0.04, T - 1.0, mid - 0.02, mid + 0.02, T + 0.4]


def ka_plan(gaps: list[float], path: str = "/") -> list[dict]:
    steps: list[dict] = [{"method": "GET", "path": path, "timeout": 10}]
    for g in gaps:
        steps += [{"sleep": g}, {"method": "GET", "path": path, "timeout": 10}]
    return steps


def sc_keepalive(kind: str, T: float, delay_ms: int, gaps: list[float] | None = None,
                 backend_args: list[str] | None = None, settle_s: float = 0.0):
    """Requests timed onto the backend's idle close ``T`` s (:func:`keepalive_gaps`) with
    ``delay_ms`` one-way delay; ``settle_s``: a pause after the backend is up."""
    def run_it(lab: Lab, ctx: Ctx, ipv6: bool):
        if delay_ms > 0:  # 0: no delay line at all, plain kernel forwarding (LAN round trip)
            lab.netem(delay_ms)
        start_backend(lab, kind, ipv6, backend_args)
        if settle_s:
            time.sleep(settle_s)
        d = delay_ms / 1000
        g = gaps or keepalive_gaps(T, d)
        lab.event("plan", gaps_s=[round(x, 3) for x in g],
                  race_window_s=[round(T - 2 * d, 3), T])
        run_client(lab, ka_plan(g), ipv6)
        time.sleep(0.5)
    return run_it


def gunicorn_gaps() -> list[float]:
    # gthread closes idle connections from its main loop, which wakes at most every 1 s:
    # the close lands 2.0..3.0 s after the response.  Sweep both edges.
    return [1.93, 2.9, 1.95, 2.93, 1.97, 2.95, 1.5, 2.97, 1.91, 2.88]


def sc_refused(lab: Lab, ctx: Ctx, ipv6: bool):
    lab.event("backend_down", note="nothing listens on :3000")
    run_client(lab, [{"method": "GET", "path": "/", "timeout": 5}, {"sleep": 0.2}] * 4, ipv6)


def sc_linger(lab: Lab, ctx: Ctx, ipv6: bool):
    start_backend(lab, "pysock", ipv6)
    run_client(lab, [{"method": "GET", "path": "/"}, {"sleep": 0.2}]
               + [{"method": "GET", "path": "/linger"}, {"sleep": 0.3}] * 4, ipv6)
    time.sleep(0.5)


def sc_unread(lab: Lab, ctx: Ctx, ipv6: bool):
    start_backend(lab, "pysock", ipv6, ["--unread-wait", "0.3"])
    run_client(lab, [{"method": "POST", "path": "/unread", "body_len": 3000}, {"sleep": 0.5}] * 3,
               ipv6)
    time.sleep(0.5)


def sc_healthy(lab: Lab, ctx: Ctx, ipv6: bool):
    start_backend(lab, "node", ipv6)
    steps: list[dict] = []
    for _ in range(5):
        steps += [{"method": "GET", "path": "/"}, {"sleep": 0.4}]
    steps += [{"method": "GET", "path": "/", "n": 3}, {"sleep": 0.5},
              {"method": "POST", "path": "/", "body_len": 2000}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_crash(lab: Lab, ctx: Ctx, ipv6: bool,
             backend_args: tuple[str, ...] = ("--lazy-body", "--response-delay", "3")):
    lab.netem(5)
    be = start_backend(lab, "pysock", ipv6, list(backend_args))
    steps = [{"method": "GET", "path": "/warm"} if False else {"sleep": 0.0},
             {"method": "POST", "path": "/upload", "body_len": 4000, "n": 3, "async": True,
              "timeout": 10},
             {"method": "GET", "path": "/report", "n": 2, "async": True, "timeout": 10},
             {"sleep": 2.0},
             {"method": "GET", "path": "/while-down", "timeout": 5}, {"sleep": 0.3},
             {"method": "GET", "path": "/while-down", "timeout": 5}, {"sleep": 0.3},
             {"method": "GET", "path": "/while-down", "timeout": 5},
             {"sleep": 2.0},
             {"method": "GET", "path": "/after-restart", "n": 2, "timeout": 10}]
    cl = run_client(lab, steps, ipv6, wait=False)
    time.sleep(1.2)
    os.kill(be.pid, signal.SIGKILL)
    k = lab.event("backend_killed", signal="SIGKILL", pid=be.pid)
    ctx.kills.append({"ts": k["ts"], "pid": be.pid})
    be.wait(5)
    lab.wait_listen("be", PORT, present=False)
    time.sleep(2.4)
    # restarted without lazy body / delay: it answers normally
    start_again(lab, "pysock", ipv6, [], logname="backend.log")
    cl.wait(60)
    lab.event("client_done")
    time.sleep(0.5)


def sc_backlog(abort: bool, wave: int = 8):
    def run_it(lab: Lab, ctx: Ctx, ipv6: bool):
        lab.sysctl("be", net__ipv4__tcp_abort_on_overflow=1 if abort else 0)
        lab.netem(20)
        # Two waves of exactly `backlog` connects: wave 1 fits the SYN queue and then the
        # accept queue (no SYN cookies needed); wave 2's SYNs are still admitted (the accept
        # queue holds `backlog` entries, "full" means more than that) but when their ACKs
        # arrive only one more fits -> overflow for the rest.  A single big burst does not
        # show it: SYNs beyond the SYN queue get SYN cookies, and a cookie ACK that meets a
        # full accept queue is dropped silently even with tcp_abort_on_overflow=1.
        ctx.expect["backlog"] = 8
        syncookies = lab.ex("be", "sysctl", "-n", "net.ipv4.tcp_syncookies").stdout.strip()
        lab.event("backend_sysctls", tcp_syncookies=syncookies,
                  tcp_abort_on_overflow=1 if abort else 0)
        start_backend(lab, "pysock", ipv6, ["--backlog", "8", "--accept-delay", "3"])
        run_client(lab, [{"method": "GET", "path": "/", "n": wave, "timeout": 15,
                          "async": True},
                         {"sleep": 0.2},
                         {"method": "GET", "path": "/", "n": wave, "timeout": 15,
                          "async": True}],
                   ipv6)
        time.sleep(1.0)
    return run_it


def sc_client_abort(lab: Lab, ctx: Ctx, ipv6: bool):
    start_backend(lab, "pysock", ipv6)
    steps = []
    for _ in range(3):
        steps += [{"method": "GET", "path": "/slow?d=2", "timeout": 0.7}, {"sleep": 0.2}]
    steps += [{"method": "GET", "path": "/", "timeout": 5}, {"sleep": 2.0}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_proxy_timeout(lab: Lab, ctx: Ctx, ipv6: bool, delay_s: float = 2.5):
    start_backend(lab, "pysock", ipv6)
    steps = []
    for _ in range(3):
        steps += [{"method": "GET", "path": f"/slow?d={delay_s:g}", "timeout": 10},
                  {"sleep": 0.2}]
    steps += [{"method": "GET", "path": "/", "timeout": 5}, {"sleep": 2.0}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_conntrack(lab: Lab, ctx: Ctx, ipv6: bool, ct_timeout_s: int = 3, reuse_s: float = 4.5):
    lab.sysctl("rtr", net__netfilter__nf_conntrack_tcp_timeout_established=ct_timeout_s,
               net__netfilter__nf_conntrack_tcp_loose=0)
    for v6 in ((False, True) if ipv6 else (False,)):
        lab.iptables("rtr", "-A", "FORWARD", "-p", "tcp", "-m", "conntrack", "--ctstate",
                     "INVALID", "-j", "REJECT", "--reject-with", "tcp-reset", v6=v6)
    start_backend(lab, "pysock", ipv6, ["--idle-timeout", "30"])
    steps: list[dict] = [{"method": "GET", "path": "/"}]
    for _ in range(3):
        steps += [{"sleep": reuse_s}, {"method": "GET", "path": "/"}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_injector(lab: Lab, ctx: Ctx, ipv6: bool, ttl: int = 200):
    lab.netem(40)
    start_backend(lab, "pysock", ipv6)
    inj = lab.spawn("rtr", "injector", [python_exe(), str(BACKENDS / "injector.py"), "--iface",
                                        "r0", "--trigger", "/inject", "--ttl", str(ttl),
                                        "--max-injections", "3", "--max-seconds", "40"],
                    stdout=lab.workdir / "injector.log")
    ilog = lab.workdir / "injector.log"
    t_end = now() + 20
    while now() < t_end and not (ilog.exists() and "started" in ilog.read_text(errors="replace")):
        if inj.poll() is not None:
            raise LabError("injector exited: " + ilog.read_text(errors="replace")[-500:])
        time.sleep(0.1)
    time.sleep(1.0)
    steps: list[dict] = [{"method": "GET", "path": "/"}, {"sleep": 0.3}]
    for _ in range(3):
        steps += [{"method": "GET", "path": "/inject"}, {"sleep": 0.5},
                  {"method": "GET", "path": "/"}, {"sleep": 0.3}]
    run_client(lab, steps, ipv6)
    time.sleep(1.0)
    lab.stop(inj, signal.SIGINT)


def sc_mtu(lab: Lab, ctx: Ctx, ipv6: bool):
    lab.ex("rtr", "ip", "link", "set", "r0", "mtu", "1000")
    lab.event("mtu", dev="r0 (router, towards nginx)", mtu=1000)
    lab.iptables("rtr", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed",
                 "-j", "DROP")
    if ipv6:
        lab.iptables("rtr", "-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big",
                     "-j", "DROP", v6=True)
    start_backend(lab, "pysock", ipv6)
    steps = [{"method": "GET", "path": "/", "timeout": 10}, {"sleep": 0.3},
             {"method": "GET", "path": "/big?n=20000", "timeout": 10}, {"sleep": 0.3},
             {"method": "GET", "path": "/", "timeout": 10}, {"sleep": 0.3},
             {"method": "GET", "path": "/big?n=20000", "timeout": 10}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_mixed(lab: Lab, ctx: Ctx, ipv6: bool):
    lab.netem(50)
    start_backend(lab, "pysock", ipv6, ["--idle-timeout", "3"])
    # race window for a 3.0 s server idle timeout and 50 ms one-way delay: gaps in (2.9, 3.0)
    steps: list[dict] = [{"method": "GET", "path": "/"}, {"sleep": 2.95},
                         {"method": "GET", "path": "/"}, {"sleep": 0.3},
                         {"method": "GET", "path": "/linger"}, {"sleep": 0.3},
                         {"method": "POST", "path": "/unread", "body_len": 3000}, {"sleep": 0.3},
                         {"method": "GET", "path": "/slow?d=1.5", "timeout": 0.6},
                         {"sleep": 0.3},
                         {"method": "GET", "path": "/", "n": 3}, {"sleep": 2.94},
                         {"method": "GET", "path": "/"}, {"sleep": 2.0}]
    run_client(lab, steps, ipv6)
    time.sleep(0.5)


def sc_refused_then_linger(lab: Lab, ctx: Ctx, ipv6: bool):
    """Short combined scenario for tests/test_lab.py: 3 refused connects, then 3 SO_LINGER 0."""
    lab.event("backend_down", note="nothing listens on :3000")
    run_client(lab, [{"method": "GET", "path": "/", "timeout": 5}, {"sleep": 0.2}] * 3, ipv6)
    start_backend(lab, "pysock", ipv6)
    run_client(lab, [{"method": "GET", "path": "/linger"}, {"sleep": 0.3}] * 3, ipv6)
    time.sleep(0.5)


SCENARIOS: dict[str, dict] = {
    "refused_then_linger": dict(run=sc_refused_then_linger, backend="pysock", hidden=True,
                                idle_timeout=30.0,
                                description="test scenario: backend down (3 refused connects),"
                                            " then up answering with SO_LINGER 0 closes (3)"),
    "connection_refused": dict(run=sc_refused, backend="none",
                               description="backend down: nginx's connects to :3000 are "
                                           "answered with RST,ACK"),
    "connection_refused_ipv6": dict(run=sc_refused, backend="none", ipv6=True,
                                    description="connection_refused over IPv6"),
    "abortive_close_linger": dict(run=sc_linger, backend="pysock", idle_timeout=30.0,
                                  description="backend answers then closes with SO_LINGER 0 "
                                              "(RST instead of FIN)"),
    "abortive_close_unread": dict(run=sc_unread, backend="pysock", idle_timeout=30.0,
                                  description="backend answers a POST without reading its "
                                              "body and closes: the kernel sends RST"),
    "healthy": dict(run=sc_healthy, backend="node", idle_timeout=5.0,
                    description="Node.js backend, requests well inside its keepAliveTimeout:"
                                " no resets"),
    "keepalive_race_node": dict(run=sc_keepalive("node", 6.0, 100), backend="node",
                                idle_timeout=6.0,
                                description="Node.js 20.20 default keepAliveTimeout (5000 ms, "
                                            "advertised as Keep-Alive: timeout=5, but the "
                                            "socket is closed after 6.0 s idle) < nginx "
                                            "upstream keepalive_timeout (60 s); requests "
                                            "timed onto the closing connection, 100 ms "
                                            "one-way delay in the router"),
    "keepalive_race_node_ipv6": dict(run=sc_keepalive("node", 6.0, 100), backend="node",
                                     idle_timeout=6.0, ipv6=True,
                                     description="keepalive_race_node over IPv6"),
    "keepalive_race_uvicorn": dict(run=sc_keepalive("uvicorn", 5.0, 100), backend="uvicorn",
                                   idle_timeout=5.0,
                                   description="uvicorn default timeout_keep_alive (5 s) < "
                                               "nginx keepalive_timeout; netem 100 ms"),
    "keepalive_race_gunicorn": dict(run=sc_keepalive("gunicorn", 2.0, 100, gunicorn_gaps()),
                                    backend="gunicorn", idle_timeout=2.0,
                                    description="gunicorn 27 gthread worker (--threads 4; the "
                                                "sync worker never keeps connections alive), "
                                                "default keepalive 2 s (observed: FIN 2.00 s "
                                                "after the response); 100 ms one-way delay"),
    "backlog_overflow_abort": dict(run=sc_backlog(True), backend="pysock", idle_timeout=30.0,
                                   description="listen backlog 8, accept() paused 3 s, two "
                                               "waves of 8 concurrent connects 0.2 s apart, "
                                               "tcp_abort_on_overflow=1"),
    "backlog_overflow_silent": dict(run=sc_backlog(False), backend="pysock", idle_timeout=30.0,
                                    findings={"backlog_overflow": f_backlog_silent},
                                    description="listen backlog 8, accept() paused 3 s, two "
                                                "waves of 8 concurrent connects 0.2 s apart, "
                                                "tcp_abort_on_overflow=0 (default)"),
    "backend_crash": dict(run=sc_crash, backend="pysock", idle_timeout=30.0,
                          description="backend killed with SIGKILL while 5 requests are in "
                                      "flight (3 POSTs with unread bodies, 2 GETs), "
                                      "restarted 2.4 s later"),
    "client_abort": dict(run=sc_client_abort, backend="pysock", idle_timeout=30.0,
                         nginx=dict(read_timeout=10),
                         description="downstream client gives up after 0.7 s while the "
                                     "backend takes 2 s: nginx closes the upstream connection"),
    "proxy_timeout": dict(run=sc_proxy_timeout, backend="pysock", idle_timeout=30.0,
                          nginx=dict(read_timeout=1),
                          description="nginx proxy_read_timeout 1 s < backend delay 2.5 s"),
    "middlebox_conntrack": dict(run=sc_conntrack, backend="pysock", idle_timeout=30.0,
                                description="router: nf_conntrack_tcp_timeout_established=3, "
                                            "nf_conntrack_tcp_loose=0, INVALID -> REJECT "
                                            "tcp-reset; nginx reuses after 4.5 s idle"),
    "middlebox_injector": dict(run=sc_injector, backend="pysock", idle_timeout=30.0,
                               description="scapy on-path injector in the router forges RSTs "
                                           "(ttl 200, random IP ID) both ways on /inject"),
    "middlebox_injector_ttl63": dict(run=lambda lab, ctx, v6: sc_injector(lab, ctx, v6, ttl=63),
                                     backend="pysock", idle_timeout=30.0,
                                     description="middlebox_injector with forged RSTs at ttl 63:"
                                                 " the TTL the real peer's packets arrive with "
                                                 "at nginx after one hop (only the IP ID gives "
                                                 "them away)"),
    "mtu_blackhole": dict(run=sc_mtu, backend="pysock", idle_timeout=30.0,
                          nginx=dict(read_timeout=3),
                          findings={"mtu_blackhole": f_mtu},
                          description="router MTU 1000 towards nginx, ICMP frag-needed "
                                      "dropped; 20 kB responses black-holed"),
    "mixed": dict(run=sc_mixed, backend="pysock", idle_timeout=3.0,
                  description="one pysock backend (idle timeout 3 s), netem 50 ms: a keepalive"
                              " race, SO_LINGER 0, unread body, a client abort, healthy"),
}


def sc_node_reset(lab: Lab, ctx: Ctx, ipv6: bool):
    """Node answers, then calls socket.resetAndDestroy() 50 ms later (abortive close)."""
    lab.netem(20)
    start_backend(lab, "node", ipv6)
    run_client(lab, [{"method": "GET", "path": "/"}, {"sleep": 0.3}]
               + [{"method": "GET", "path": "/reset-and-destroy"}, {"sleep": 0.4}] * 3, ipv6)
    time.sleep(0.5)


def _variant(base: str, **kw) -> dict:
    """A hidden lab variant (not in sample_pcaps/, not run by --all): a base scenario with
    other knobs, for checking that verdicts generalize beyond the recorded samples."""
    return dict(SCENARIOS[base], hidden=True, **kw)


VARIANTS: dict[str, dict] = {
    "var_race_node_nodelay": _variant(
        "keepalive_race_node", run=sc_keepalive("node", 6.0, 0),
        description="keepalive_race_node with no added delay (LAN round trip)"),
    "var_race_node_ka2_d30": _variant(
        "keepalive_race_node", run=sc_keepalive("node", 3.0, 30, backend_args=["2000"]),
        idle_timeout=3.0,
        description="Node keepAliveTimeout 2000 ms (idle close observed ~T+1 s), 30 ms delay"),
    "var_race_uvicorn_ka3_d20": _variant(
        "keepalive_race_uvicorn", run=sc_keepalive("uvicorn", 3.0, 20, backend_args=["3"]),
        idle_timeout=3.0,
        description="uvicorn --timeout-keep-alive 3, 20 ms one-way delay"),
    "var_race_gunicorn_ka4_d50": _variant(
        "keepalive_race_gunicorn",
        run=sc_keepalive("gunicorn", 4.0, 50, [3.93, 4.9, 3.96, 4.93, 3.98, 4.96, 4.97, 3.9],
                         backend_args=["--keep-alive", "4"]),
        idle_timeout=4.0, description="gunicorn gthread --keep-alive 4, 50 ms delay"),
    "var_nginx_ka_short": _variant(
        "keepalive_race_node", run=sc_keepalive("node", 6.0, 100),
        nginx=dict(keepalive_timeout=4),
        description="nginx upstream keepalive_timeout 4 s < Node's 5 s: nginx closes idle "
                    "connections first, the race cannot happen"),
    "var_backlog_abort_12": _variant(
        "backlog_overflow_abort", run=sc_backlog(True, wave=12),
        description="backlog_overflow_abort with waves of 12 connects"),
    "var_injector_ttl64": _variant(
        "middlebox_injector", run=lambda lab, ctx, v6: sc_injector(lab, ctx, v6, ttl=64),
        description="middlebox_injector with forged RSTs at ttl 64 (a common initial TTL)"),
    "var_injector_ttl63": _variant(
        "middlebox_injector", run=lambda lab, ctx, v6: sc_injector(lab, ctx, v6, ttl=63),
        description="middlebox_injector with ttl 63: the TTL the real peer's packets arrive "
                    "with at nginx after one hop"),
}
VARIANTS["var_abortive_node"] = _variant(
    "abortive_close_linger", run=sc_node_reset, backend="node", idle_timeout=5.0,
    description="Node.js answers, then socket.resetAndDestroy() 50 ms later; 20 ms delay")
VARIANTS.update({
    "var_race_node_d5": _variant(
        "keepalive_race_node", run=sc_keepalive("node", 6.0, 5),
        description="keepalive_race_node with 5 ms one-way delay (narrow race window)"),
    "var_backlog_abort_10": _variant(
        "backlog_overflow_abort", run=sc_backlog(True, wave=10),
        description="backlog_overflow_abort with waves of 10 connects"),
    "var_proxy_timeout_2s": _variant(
        "proxy_timeout", run=lambda lab, ctx, v6: sc_proxy_timeout(lab, ctx, v6, 3.5),
        nginx=dict(read_timeout=2),
        description="nginx proxy_read_timeout 2 s < backend delay 3.5 s"),
    "var_conntrack_5s": _variant(
        "middlebox_conntrack",
        run=lambda lab, ctx, v6: sc_conntrack(lab, ctx, v6, ct_timeout_s=5, reuse_s=7.0),
        description="router conntrack established timeout 5 s, nginx reuses after 7 s idle"),
    "var_crash_bodies_read": _variant(
        "backend_crash",
        run=lambda lab, ctx, v6: sc_crash(lab, ctx, v6, ("--response-delay", "3")),
        description="backend_crash, but the backend had read every request body: SIGKILL "
                    "closes with FIN (only the refused connects while down are RSTs)"),
    "var_healthy_uvicorn": _variant(
        "keepalive_race_uvicorn", run=sc_keepalive("uvicorn", 5.0, 20, [1.0, 2.5, 3.5, 4.0,
                                                                       1.5, 3.9]),
        description="uvicorn (5 s idle timeout), requests 1-4 s apart: no resets expected"),
    "var_race_uvicorn_ipv6_d10": _variant(
        "keepalive_race_uvicorn", run=sc_keepalive("uvicorn", 5.0, 10), ipv6=True,
        description="keepalive_race_uvicorn over IPv6 with 10 ms one-way delay"),
})
SCENARIOS.update(VARIANTS)

import lab_production  # noqa: E402,F401  (registers the production-condition scenarios)
import lab_upstreams  # noqa: E402,F401  (FastCGI, HTTP/1.0, ... upstreams)


def run_scenario(name: str, out: Path, log=print) -> dict:
    spec = SCENARIOS[name]
    ipv6 = bool(spec.get("ipv6"))
    work = Path(f"/tmp/prl-work-{os.getpid()}") / name
    if work.exists():
        shutil.rmtree(work)
    (work / "tmp").mkdir(parents=True)
    lab = Lab(work, log=log)
    ctx = Ctx(scenario=name, backend=spec["backend"])
    t0 = now()
    caps = {"backend.pcap": work / "backend.pcap", "nginx.pcap": work / "nginx.pcap"}
    extra: dict = {}
    try:
        lab.setup(ipv6=True)
        conf = nginx_conf(work, ipv6, **spec.get("nginx", {}))
        (work / "nginx.conf").write_text(conf)
        tcpdumps: list[subprocess.Popen] = []

        for cname in spec.get("extra_captures", {}):
            caps[cname] = work / cname

        def start_captures():
            tcpdumps.append(lab.start_capture("be", "any", caps["backend.pcap"]))
            tcpdumps.append(lab.start_capture("ngx", "n1", caps["nginx.pcap"]))
            for cname, meta in spec.get("extra_captures", {}).items():
                tcpdumps.append(lab.start_capture(meta["ns"], meta["iface"], caps[cname],
                                                  tuple(meta["bpf"]),
                                                  meta.get("snaplen", 256)))
            lab.event("captures_started")

        if spec.get("late_capture"):  # the scenario starts them (connections already open)
            ctx.start_captures = start_captures
        else:
            start_captures()
        ngx = lab.spawn("ngx", "nginx", [tool("nginx"), "-p", str(work), "-c",
                                         str(work / "nginx.conf"), "-e",
                                         str(work / "nginx_startup.log"), "-g",
                                         "daemon off;"], stdout=work / "nginx_stdout.log")
        lab.wait_listen("ngx", NGINX_PORT)
        lab.event("nginx_started", pid=ngx.pid)
        spec["run"](lab, ctx, ipv6)
        time.sleep(0.3)
        if not tcpdumps:
            raise LabError("the scenario never started the captures")
        for p in tcpdumps:
            lab.stop(p, signal.SIGINT)
        lab.event("captures_stopped")
        counters = lab.iptables_counters("rtr") + (lab.iptables_counters("rtr", v6=True)
                                                   if ipv6 else "")
        (work / "router_iptables.txt").write_text(counters)
        for line in counters.splitlines():
            parts = line.split()
            if "REJECT" in parts and parts[0].isdigit():
                ctx.reject_count += int(parts[0])
            if "DROP" in parts and parts[0].isdigit():
                ctx.icmp_dropped += int(parts[0])
    finally:
        lab.teardown()
    # --- labels from the lab's own logs
    read_lab_logs(work, spec, ctx)
    extra["lab_events"] = lab.events
    extra["router"] = {"iptables_reject_packets": ctx.reject_count,
                       "icmp_frag_needed_dropped": ctx.icmp_dropped}
    extra["nginx_error_log_tz"] = time.strftime("%Z")
    if spec.get("server_aliases"):
        extra["server_aliases"] = spec["server_aliases"]
    if spec.get("servers"):  # pools: each upstream server's software and idle timeout
        extra["servers"] = spec["servers"]
    labels = build_labels(name, spec, ctx, caps, ipv6, extra)
    for c in labels["connections"]:
        if ctx.kills and not c["has_rst"]:
            k = ctx.kills[0]["ts"]
            if any(v["first_ts"] < k for v in c["per_capture"].values()):
                peer_ev = by_peer(ctx.backend_events).get(c["client"], [])
                if any(e["event"] == "request" for e in peer_ev) and not any(
                        e["event"] == "response" for e in peer_ev):
                    c["note"] = ("request in flight when the backend was SIGKILLed, but its "
                                 "request had been read completely: the kernel closed the "
                                 "socket with FIN, not RST (nginx: 'upstream prematurely "
                                 "closed connection'); no RST on the wire")
    labels["notes"] = scenario_notes(name, labels, ctx, work)
    labels["duration_s"] = round(now() - t0, 1)
    # --- write the folder
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for fn in ("backend.pcap", "nginx.pcap", *spec.get("extra_captures", {}),
               "error.log", "access.log", "nginx.conf",
               "backend.log", "client.log", "injector.log", "router_iptables.txt",
               "probe.log", *spec.get("more_backend_logs", []), *spec.get("more_files", [])):
        if (work / fn).exists():
            shutil.copy(work / fn, dest / fn)
    for conf in dest.glob("*.conf"):
        conf.write_text(conf.read_text().replace(str(work), "/tmp/prl-work/" + name))
    (dest / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    (dest / "README.md").write_text(readme(name, spec, labels))
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # /tmp/prl-work-<pid>, when no other scenario of this run uses it
    return labels


def read_lab_logs(folder: Path, spec: dict, ctx: Ctx) -> None:
    """The backend's, health checker's, injector's (and scenario-specific) logs into ctx."""
    if spec["backend"] == "uvicorn":
        ctx.backend_events = read_uvicorn_log(folder / "backend.log")
    else:
        ctx.backend_events = read_jsonl(folder / "backend.log")
    for extra_log in spec.get("more_backend_logs", []):
        ctx.backend_events += read_jsonl(folder / extra_log)
    ctx.probes = read_jsonl(folder / "probe.log")
    if spec.get("after_run"):
        spec["after_run"](folder, ctx)
    ctx.injected = read_jsonl(folder / "injector.log")


def relabel(folder: Path) -> dict:
    """Labels rebuilt from a recorded scenario folder of the production-condition scenarios
    (its captures and the lab's logs kept beside them; the lab's SIGTERM times come from
    labels.json's lab_events): what the checked-in labels.json must agree with."""
    name = folder.name
    spec = SCENARIOS[name]
    old = json.loads((folder / "labels.json").read_text())
    ctx = Ctx(scenario=name, backend=spec["backend"])
    for e in old.get("lab_events", []):
        if e["event"] in ("backend_sigterm", "backend_graceful_restart"):
            ctx.restarts.append({"ts": e["ts"], "window_s": 1.5,
                                 "source": f"lab log: SIGTERM to pid {e.get('pid')}"})
        if e["event"] == "backend_killed":  # the lab's own kill -9
            ctx.kills.append({"ts": e["ts"], "pid": e.get("pid")})
    read_lab_logs(folder, spec, ctx)
    caps = {c: folder / c for c in old["captures"]}
    return build_labels(name, spec, ctx, caps, bool(spec.get("ipv6")), {})


def scenario_notes(name: str, labels: dict, ctx: Ctx, work: Path) -> str:
    notes = []
    conns = labels["connections"]
    n_rst = sum(1 for c in conns if c["has_rst"])
    causes: dict = {}
    for c in conns:
        if c["has_rst"]:
            causes[c["cause"]] = causes.get(c["cause"], 0) + 1
    notes.append(f"{len(conns)} TCP connections on :3000, {n_rst} with RST "
                 f"(earliest-RST causes: {causes or 'none'}).")
    ev = ctx.backend_events
    n_fin = max(c.get("fin_crossed_request", 0) for c in labels["captures"].values())
    if name.startswith("abortive_close"):
        k = sum(1 for e in ev if e["event"] in ("closed with SO_LINGER 0",
                                                  "closed with unread bytes"))
        notes.append(f"backend log: {k} abortive closes; wire: {causes.get('abortive_close', 0)}"
                     f" connections with a server RST.")
    if name.startswith("backend_crash"):
        fin_only = [c for c in conns if not c["has_rst"] and any(
            v.get("first_ts", 0) < ctx.kills[0]["ts"] for v in c["per_capture"].values())]
        notes.append("Kernel behaviour on SIGKILL: sockets with unread request bytes (the "
                     "POST bodies the backend had not read yet) were reset; sockets whose "
                     "request had been read completely (the GETs) were closed with a FIN, so "
                     "nginx logs 'upstream prematurely closed connection' for them and the "
                     f"wire shows no RST ({len(fin_only)} such connections before the kill). "
                     "Connects while the backend was down were refused (RST,ACK to the SYN).")
    if name.startswith("keepalive_race") or n_fin:
        notes.append("nginx retries an idempotent request once on a fresh connection when a "
                     "cached keepalive connection fails, so the client mostly sees 200 while "
                     f"error.log still records the {'reset' if n_rst else 'failed attempt'}.")
    if name == "middlebox_conntrack":
        notes.append(f"router REJECT counter: {ctx.reject_count} packets.  The router's RST "
                     "reaches nginx only; the backend never sees it (its side stays "
                     "ESTABLISHED until its own idle timeout).")
    if name == "mtu_blackhole":
        notes.append(f"router dropped {ctx.icmp_dropped} ICMP frag-needed packets. At the "
                     "backend the MSS-sized segments are retransmitted with no ACK; at nginx "
                     "they never arrive (only small segments do) until nginx times out.")
    if name.startswith("backlog_overflow"):
        notes.append("see per-connection entries: which connects overflowed depends on how "
                     "SYNs and ACKs interleave at the listener (SYN cookies are on by default).")
    if n_fin:
        notes.append(f"{n_fin} connections where a request crossed the server's idle-close "
                     f"FIN and was never answered (keep-alive race"
                     f"{' without RST' if not n_rst else ''}; nginx logs 'upstream "
                     f"prematurely closed connection').")
    more = SCENARIOS.get(name, {}).get("notes")
    if more:  # the scenario's own reading of its logs (lab_upstreams.py)
        notes.append(more(work, ctx, labels))
    if not n_rst and not labels["findings"] and name != "healthy" and not n_fin:
        notes.append("WARNING: the wire shows no RST and no finding for this run.")
    return " ".join(notes)


def readme(name: str, spec: dict, labels: dict) -> str:
    caps = labels["captures"]
    return (
        f"# {name}\n\n{spec['description']}. Made by `sudo scripts/lab {name}` "
        f"(scripts/pcapreset_lab.py) in network namespaces client - nginx 1.22 - router - "
        f"backend ({spec['backend']}) on {time.strftime('%Y-%m-%d')}, "
        f"IPv{labels['ip_version']}; backend.pcap = `tcpdump -i any -s 256 port 3000` in the "
        f"backend namespace (link type {caps['backend.pcap']['linktype']}), nginx.pcap = "
        f"`tcpdump -i n1 -s 256 port 3000` on nginx's upstream veth (link type "
        f"{caps['nginx.pcap']['linktype']})"
        + "".join(f"; {cn} = {c['vantage']} capture on {c['interface']} (link type "
                  f"{c['linktype']})" for cn, c in caps.items()
                  if cn not in ("backend.pcap", "nginx.pcap"))
        + ". What happened: "
        f"{caps['backend.pcap']['rst_packets']} RST packets in backend.pcap, "
        f"{caps['nginx.pcap']['rst_packets']} in nginx.pcap. {labels['notes']} "
        f"Logs: error.log/access.log (nginx), backend.log, client.log, labels.json "
        f"(per connection, from the lab's own logs cross-checked with the wire).\n")


# --------------------------------------------------------------------------- CLI


def _sig(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/lab", description=__doc__.split("\n")[0])
    ap.add_argument("scenarios", nargs="*")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--cleanup", action="store_true",
                    help="remove leftover lab namespaces (and their processes) of dead runs")
    ap.add_argument("--force", action="store_true", help="with --cleanup: also of live runs")
    ap.add_argument("--out", default=str(REPO / "sample_pcaps"))
    a = ap.parse_args(argv)
    if a.list:
        for n, s in SCENARIOS.items():
            print(f"{n:28s} {s['description']}")
        return 0
    if os.geteuid() != 0:
        print("lab: must run as root (network namespaces)", file=sys.stderr)
        return 2
    if a.cleanup:
        removed = cleanup_all(force=a.force)
        print(f"lab: removed {len(removed)} namespaces: {' '.join(removed)}")
        return 0
    names = [n for n, s in SCENARIOS.items() if not s.get("hidden")] if a.all else a.scenarios
    bad = [n for n in names if n not in SCENARIOS]
    if bad or not names:
        print(f"lab: unknown or no scenario: {bad}; see --list", file=sys.stderr)
        return 2
    missing = ensure_deps(production=any(n in lab_production.PRODUCTION for n in names),
                          apt_wanted={k: v for n in names
                                      for k, v in SCENARIOS[n].get("apt", {}).items()})
    if missing:
        print(f"lab: missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _sig)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = now()
    failed = []
    try:
        for n in names:
            print(f"== {n}")
            t1 = now()
            try:
                lab = run_scenario(n, out)
                c = lab["captures"]
                print(f"== {n}: {len(lab['connections'])} conns, RST packets backend="
                      f"{c['backend.pcap']['rst_packets']} nginx={c['nginx.pcap']['rst_packets']}"
                      f", findings={lab['findings']} ({now() - t1:.1f}s)")
            except (LabError, subprocess.SubprocessError, OSError) as e:
                print(f"== {n}: FAILED: {e}", file=sys.stderr)
                failed.append(n)
    finally:
        cleanup_all()
        shutil.rmtree(f"/tmp/prl-work-{os.getpid()}", ignore_errors=True)
    print(f"lab: {len(names) - len(failed)}/{len(names)} scenarios in {now() - t0:.0f}s"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
