#!/usr/bin/env python3
"""Userspace delay line for the lab router (used when the kernel has no sch_netem).

Runs in the router namespace with kernel forwarding OFF: reads frames arriving on the two
router veths with AF_PACKET, and after --delay-ms re-emits each transit IPv4/IPv6 packet on
the other veth with the next hop's MAC, TTL / hop limit decremented (so TTLs look exactly
like a kernel router's) -- no NAT, same 4-tuples.  Frames addressed to the router itself
(ARP, ND, its own IPs) are left to the kernel.  Bounded by --max-seconds and --max-packets.
"""
import argparse
import heapq
import ipaddress
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def ip_csum(hdr):
    s = 0
    for i in range(0, len(hdr), 2):
        s += (hdr[i] << 8) + hdr[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, required=True)
    # side spec: iface,own_mac,peer_mac,net4,net6  (net = the network behind that side)
    ap.add_argument("--side", action="append", required=True)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--max-packets", type=int, default=200000)
    a = ap.parse_args()
    sides = []
    for s in a.side:
        iface, own, peer, n4, n6 = s.split(",")
        sk = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sk.bind((iface, 0))
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sides.append({"iface": iface, "sock": sk, "own": mac(own), "peer": mac(peer),
                      "net4": ipaddress.ip_network(n4), "net6": ipaddress.ip_network(n6)})
    d = a.delay_ms / 1000.0
    heap = []
    seq = 0
    n = 0
    t_end = time.time() + a.max_seconds
    print(f"delayline started delay_ms={a.delay_ms}", flush=True)
    socks = {x["sock"].fileno(): x for x in sides}
    while time.time() < t_end and n < a.max_packets:
        timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else 0.2
        r, _, _ = select.select(list(socks), [], [], min(timeout, 0.2))
        for fd in r:
            side = socks[fd]
            frame, addr = side["sock"].recvfrom(65535)
            if addr[2] == PACKET_OUTGOING or len(frame) < 34:
                continue
            etype = struct.unpack("!H", frame[12:14])[0]
            if etype == 0x0800:
                dst = ipaddress.ip_address(frame[30:34])
                out = next((x for x in sides if x is not side and dst in x["net4"]), None)
                if out is None or frame[22] <= 1:
                    continue
                f = bytearray(frame)
                f[22] -= 1
                ihl = (f[14] & 0x0F) * 4
                f[24:26] = b"\0\0"
                f[24:26] = struct.pack("!H", ip_csum(bytes(f[14:14 + ihl])))
            elif etype == 0x86DD and len(frame) >= 54:
                dst = ipaddress.ip_address(frame[38:54])
                out = next((x for x in sides if x is not side and dst in x["net6"]), None)
                if out is None or frame[21] <= 1:
                    continue
                f = bytearray(frame)
                f[21] -= 1
            else:
                continue
            f[0:6] = out["peer"]
            f[6:12] = out["own"]
            seq += 1
            heapq.heappush(heap, (time.monotonic() + d, seq, out["sock"], bytes(f)))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, sk, f = heapq.heappop(heap)
            try:
                sk.send(f)
                n += 1
            except OSError as e:
                print(f"send failed: {e}", file=sys.stderr, flush=True)
    print(f"delayline stopped forwarded={n}", flush=True)


if __name__ == "__main__":
    main()
