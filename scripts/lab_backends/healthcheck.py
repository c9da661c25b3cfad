#!/usr/bin/env python3
"""Health checker for the reset lab (runs beside nginx, in nginx's namespace).

Like a load balancer's or Kubernetes' checks, it closes every check with RST
(SO_LINGER {1, 0}):
  tcp   connect, then close at once (no request)
  http  connect, GET /health, read the whole response, then close
One JSON line per check: {"ts", "event": "probe_rst", "kind", "peer" (the checker's own
address:port, i.e. the client end of the connection), "detail"}.  Bounded by --count and
--max-seconds.
"""
import argparse
import json
import socket
import struct
import sys
import time


def ep(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check(kind, host, port, timeout):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    detail = ""
    try:
        s.connect((host, port))
        me = ep(s.getsockname())
        if kind == "http":
            s.sendall(b"GET /health HTTP/1.1\r\nHost: backend\r\nUser-Agent: lab-healthcheck\r\n"
                      b"\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            clen = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    clen = int(v.strip())
            while len(body) < clen:
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
            detail = f"GET /health -> {head.split(b' ')[1].decode() if head else 'no answer'}"
        else:
            detail = "connect only"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return {"ts": round(time.time(), 6), "event": "probe_rst", "kind": kind, "peer": me,
                "detail": detail}
    except OSError as e:
        s.close()
        return {"ts": round(time.time(), 6), "event": "probe_failed", "kind": kind,
                "error": str(e)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--kinds", default="tcp,http")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=3, help="checks per kind")
    ap.add_argument("--max-seconds", type=float, default=30)
    a = ap.parse_args()
    deadline = time.time() + a.max_seconds
    for _ in range(a.count):
        for kind in a.kinds.split(","):
            if time.time() > deadline:
                return
            sys.stdout.write(json.dumps(check(kind, a.host, a.port, 3.0)) + "\n")
            sys.stdout.flush()
            time.sleep(a.interval / 2)


if __name__ == "__main__":
    main()
