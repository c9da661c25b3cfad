#!/usr/bin/env python3
"""WebSocket clients for the pcapreset reset lab (standard library only).

    ws_client.py HOST PORT PLAN.json MAX_SECONDS

PLAN: a list of clients, each {"path": "/ws", "start": s, "messages": n, "every": s,
"idle": s, "reconnect": bool}: connect through nginx, upgrade, send n masked text frames
`every` seconds apart (reading echoes in a thread), then stay idle `idle` seconds, then
send a close frame.  A client whose connection ends early reconnects once when
`reconnect` is set.  One JSON line per event on stdout (ts, client, event, local port)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import threading
import time

LOCK = threading.Lock()


def log(**kw) -> None:
    with LOCK:
        print(json.dumps({"ts": time.time(), **kw}), flush=True)


def frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else \
        bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def session(host: str, port: int, c: dict, i: int, deadline: float) -> bool:
    """One connection; True when it ended as planned, False when the peer ended it."""
    s = socket.create_connection((host, port), timeout=10)
    lport = s.getsockname()[1]
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {c.get('path', '/ws')} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        if not d:
            log(client=i, event="closed during handshake", port=lport)
            return False
        head += d
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    log(client=i, event="upgraded", status=status, port=lport)
    if " 101 " not in status:
        s.close()
        return False
    ended = threading.Event()

    def reader() -> None:
        s.settimeout(None)
        while True:
            try:
                d = s.recv(4096)
            except OSError as e:
                log(client=i, event="recv error", error=str(e), port=lport)
                break
            if not d:
                log(client=i, event="connection closed by nginx", port=lport)
                break
            log(client=i, event="received", bytes=len(d), opcode=d[0] & 0x0F, port=lport)
        ended.set()

    threading.Thread(target=reader, daemon=True).start()
    early = False
    try:
        for k in range(int(c.get("messages", 0))):
            if ended.is_set() or time.time() > deadline:
                early = ended.is_set()
                break
            s.sendall(frame(1, f"message {k} from client {i}".encode()))
            log(client=i, event="sent", n=k, port=lport)
            time.sleep(float(c.get("every", 0.1)))
        if not ended.wait(float(c.get("idle", 0))):
            s.sendall(frame(8, struct.pack("!H", 1000)))
            log(client=i, event="sent close frame", port=lport)
            ended.wait(3)
    except OSError as e:
        log(client=i, event="send error", error=str(e), port=lport)
        early = True
    s.close()
    return not early


def run(host: str, port: int, c: dict, i: int, deadline: float) -> None:
    time.sleep(float(c.get("start", 0)))
    try:
        ok = session(host, port, c, i, deadline)
        if not ok and c.get("reconnect"):
            time.sleep(float(c.get("reconnect_after", 0.8)))
            log(client=i, event="reconnecting")
            session(host, port, dict(c, messages=c.get("messages_after", 5)), i, deadline)
    except OSError as e:
        log(client=i, event="error", error=str(e))


def main() -> int:
    host, port, plan, max_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    clients = json.loads(open(plan).read())
    deadline = time.time() + max_s
    ts = [threading.Thread(target=run, args=(host, port, c, i, deadline), daemon=True)
          for i, c in enumerate(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.0, deadline - time.time()))
    log(event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
