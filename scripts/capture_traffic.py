#!/usr/bin/env python3
"""TCP traffic for scripts/test-captures: a server that answers one HTTP-like
request per connection and then closes with RST (SO_LINGER 0), and a client
that makes N such connections and then one connect to a closed port.

    capture_traffic.py server ADDR PORT N
    capture_traffic.py client ADDR PORT N [CLOSED_PORT]
"""

import socket
import struct
import sys
import time


def server(addr, port, n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    s.settimeout(20)
    for _ in range(n):
        c, _ = s.accept()
        c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.05)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()


def client(addr, port, n, closed_port):
    for i in range(n):
        c = socket.create_connection((addr, port), timeout=5)
        c.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        c.close()
        time.sleep(0.05)
    if closed_port:
        try:
            socket.create_connection((addr, closed_port), timeout=2)
        except OSError:
            pass


if __name__ == "__main__":
    role, addr, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if role == "server":
        server(addr, port, n)
    else:
        client(addr, port, n, int(sys.argv[5]) if len(sys.argv) > 5 else 0)
