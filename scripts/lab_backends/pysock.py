#!/usr/bin/env python3
"""Configurable HTTP/1.1 socket server for the pcapreset reset lab.

Per-request behaviour is chosen by the request path (so one server can play
several roles in a "mixed" run); defaults come from the command line.  Every
action is logged as one JSON object per line with a wall-clock timestamp, the
peer address:port and what the server did to the socket.

Paths:
  /            normal keep-alive response
  /linger      respond, then close with SO_LINGER {1, 0}  (RST instead of FIN)
  /unread      respond without reading the request body, wait, close (RST: unread bytes)
  /slow?d=S    sleep S seconds before responding
  /big?n=N     respond with an N-byte body
  /close       respond with "Connection: close", wait --close-delay, close normally (FIN;
               with TLS and --tls-close-notify: close_notify first)

--tls-cert/--tls-key serve HTTPS (Python's ssl); an idle close is then a plain close()
without close_notify, as many servers do.
"""

import argparse
import fcntl
import json
import os
import socket
import ssl
import struct
import sys
import termios
import threading
import time
import urllib.parse

LOCK = threading.Lock()
LOG = sys.stdout
TLS = None  # ssl.SSLContext with --tls-cert/--tls-key


def log(event, **kw):
    rec = {"ts": round(time.time(), 6), "event": event}
    rec.update(kw)
    with LOCK:
        LOG.write(json.dumps(rec) + "\n")
        LOG.flush()


def peer_str(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unread_bytes(sock):
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    except OSError:
        return -1


def read_headers(sock, bytewise):
    """Read up to the end of the header block.  bytewise=True leaves any body in the kernel."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 if bytewise else 65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 65536:
            return None, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def send_close_notify(conn):
    """Send TLS close_notify without waiting for the peer's (as Go's tls.Conn.Close and
    many servers do): one non-blocking SSL_shutdown; the wait for the reply fails."""
    try:
        conn.setblocking(False)
        conn.unwrap()
    except (ssl.SSLError, OSError, ValueError):
        pass


def handle(conn, addr, args):
    peer = peer_str(addr)
    log("accept", peer=peer)
    conn.settimeout(args.idle_timeout)
    if TLS is not None:
        try:
            conn = TLS.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log("tls_handshake_failed", peer=peer, error=str(e))
            conn.close()
            return
        log("tls_established", peer=peer, version=conn.version())
    requests = 0
    buf = b""
    try:
        while True:
            t_idle = time.time()
            try:
                if buf:
                    head, rest = None, buf
                    if b"\r\n\r\n" in buf:
                        h, _, rest = buf.partition(b"\r\n\r\n")
                        head = h.decode("latin-1")
                    else:
                        more_head, rest2 = read_headers(conn, False)
                        head, rest = (None, b"") if more_head is None else (more_head, rest2)
                else:
                    # peek first request line to decide whether to read bytewise
                    # (TLS: no MSG_PEEK on an SSL socket; bodies are read unless --lazy-body)
                    first = conn.recv(64, socket.MSG_PEEK) if TLS is None else b"GET"
                    if not first:
                        log("peer_closed", peer=peer, requests=requests)
                        conn.close()
                        log("closed", peer=peer, how="FIN after peer FIN")
                        return
                    bytewise = b"/unread" in first or args.lazy_body
                    head, rest = read_headers(conn, bytewise)
            except TimeoutError:
                log("closed idle", peer=peer, idle_s=round(time.time() - t_idle, 3),
                    idle_timeout_s=args.idle_timeout, requests=requests,
                    **({"tls_close_notify": False} if TLS is not None else {}))
                conn.close()  # TLS: a plain close, no close_notify (no unwrap())
                return
            if head is None:
                log("peer_closed", peer=peer, requests=requests)
                conn.close()
                log("closed", peer=peer, how="FIN after peer FIN")
                return
            lines = head.split("\r\n")
            method, target = lines[0].split(" ")[:2]
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            clen = int(hdrs.get("content-length", "0") or 0)
            url = urllib.parse.urlsplit(target)
            q = urllib.parse.parse_qs(url.query)
            path = url.path
            log("request", peer=peer, method=method, path=target, content_length=clen)
            lazy = path == "/unread" or args.lazy_body
            body = rest
            if not lazy:
                while len(body) < clen:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                buf = body[clen:]
            else:
                buf = b""
            delay = args.response_delay
            if path == "/slow":
                delay = float(q.get("d", [args.response_delay])[0])
            if delay:
                log("processing", peer=peer, delay_s=delay)
                time.sleep(delay)
            n = int(q.get("n", [args.body_size])[0])
            payload = (b"x" * max(n - 1, 0)) + b"\n"
            close_hdr = path == "/close"
            resp = (
                f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: {'close' if close_hdr else 'keep-alive'}\r\n\r\n"
            ).encode() + payload
            try:
                conn.sendall(resp)
            except OSError as e:
                log("send_failed", peer=peer, error=str(e))
                conn.close()
                return
            requests += 1
            log("response", peer=peer, path=target, bytes=len(resp))
            if path == "/linger" or args.linger_all:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                log("closed with SO_LINGER 0", peer=peer, requests=requests)
                return
            if lazy:
                time.sleep(args.unread_wait)
                n_unread = unread_bytes(conn)
                conn.close()
                log("closed with unread bytes", peer=peer, unread=n_unread, requests=requests)
                return
            if close_hdr:
                how = "FIN after Connection: close"
                if args.close_delay:
                    time.sleep(args.close_delay)
                if TLS is not None and args.tls_close_notify:
                    send_close_notify(conn)
                    how = "close_notify, then FIN (not waiting for the peer's close_notify)"
                elif TLS is not None:
                    how = "FIN after Connection: close, no close_notify"
                conn.close()
                log("closed", peer=peer, how=how, requests=requests)
                return
    except OSError as e:
        log("socket_error", peer=peer, error=str(e))
        try:
            conn.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--backlog", type=int, default=128)
    ap.add_argument("--accept-delay", type=float, default=0.0,
                    help="sleep this long before the first accept()")
    ap.add_argument("--accept-interval", type=float, default=0.0,
                    help="sleep this long between accept() calls")
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--response-delay", type=float, default=0.0)
    ap.add_argument("--body-size", type=int, default=64)
    ap.add_argument("--linger-all", action="store_true")
    ap.add_argument("--lazy-body", action="store_true",
                    help="never read request bodies (they stay unread in the kernel)")
    ap.add_argument("--unread-wait", type=float, default=0.3)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="... and this key (PEM)")
    ap.add_argument("--tls-close-notify", action="store_true",
                    help="/close: send close_notify before closing")
    ap.add_argument("--close-delay", type=float, default=0.0,
                    help="/close: wait this long after the response before closing")
    args = ap.parse_args()
    if args.tls_cert:
        global TLS
        TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        TLS.load_cert_chain(args.tls_cert, args.tls_key)
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(args.backlog)
    log("listening", host=args.host, port=args.port, backlog=args.backlog, pid=os.getpid(),
        idle_timeout_s=args.idle_timeout)
    deadline = time.time() + args.max_seconds
    if args.accept_delay:
        log("accept_paused", seconds=args.accept_delay)
        time.sleep(args.accept_delay)
        log("accept_resumed")
    ls.settimeout(1.0)
    while time.time() < deadline:
        try:
            conn, addr = ls.accept()
        except TimeoutError:
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn, addr, args), daemon=True).start()
        if args.accept_interval:
            time.sleep(args.accept_interval)
    log("exit", reason="max-seconds")


if __name__ == "__main__":
    main()
