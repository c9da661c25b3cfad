#!/usr/bin/env python3
"""Userspace delay line for the lab router (used when the kernel has no sch_netem).

Runs in the router namespace with kernel forwarding OFF: reads frames arriving on the two
router veths with AF_PACKET, and after --delay-ms re-emits each transit IPv4/IPv6 packet on
the other veth with the next hop's MAC, TTL / hop limit decremented (so TTLs look exactly
like a kernel router's) -- no NAT, same 4-tuples.  Frames addressed to the router itself
(ARP, ND, its own IPs) are left to the kernel.  Bounded by --max-seconds and --max-packets.
--drop P drops that share of transit TCP packets at random (seeded), logging each drop as
a JSON line.  --mirror ADDR sends a copy of every transit TCP frame, as it arrives, to ADDR
in VXLAN (UDP 4789, VNI --mirror-vni, truncated to --mirror-snaplen), the way cloud traffic
mirroring delivers it.
"""
import argparse
import heapq
import ipaddress
import json
import random
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


def is_tcp(f):
    etype = struct.unpack("!H", f[12:14])[0]
    return (etype == 0x0800 and f[23] == 6) or (etype == 0x86DD and f[20] == 6)


def drop_record(f):
    """JSON-able description of a dropped TCP packet (for the lab's labels)."""
    etype = struct.unpack("!H", f[12:14])[0]
    if etype == 0x0800:
        ihl = (f[14] & 0x0F) * 4
        src, dst = ipaddress.ip_address(bytes(f[26:30])), ipaddress.ip_address(bytes(f[30:34]))
        t = 14 + ihl
    else:
        src, dst = ipaddress.ip_address(bytes(f[22:38])), ipaddress.ip_address(bytes(f[38:54]))
        t = 54
    sport, dport, seq, ack, _off, flags = struct.unpack("!HHIIBB", bytes(f[t:t + 14]))
    return {"ts": round(time.time(), 6), "event": "dropped", "src": f"{src}:{sport}",
            "dst": f"{dst}:{dport}", "seq": seq, "flags": flags}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, required=True)
    # side spec: iface,own_mac,peer_mac,net4,net6  (net = the network behind that side)
    ap.add_argument("--side", action="append", required=True)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--max-packets", type=int, default=200000)
    ap.add_argument("--drop", type=float, default=0.0,
                    help="drop this share of transit TCP packets at random (lossy path); "
                         "each drop is logged as a JSON line")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mirror", help="also mirror every transit frame as it arrives (both "
                                     "router ports) to this IPv4 address, VXLAN-encapsulated "
                                     "(UDP 4789), as cloud traffic mirroring does")
    ap.add_argument("--mirror-vni", type=int, default=77)
    ap.add_argument("--mirror-snaplen", type=int, default=256,
                    help="truncate mirrored frames to this many bytes (a mirror session's "
                         "packet length)")
    a = ap.parse_args()
    mirror = None
    if a.mirror:
        mirror = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        vxlan_hdr = struct.pack("!II", 0x08000000, a.mirror_vni << 8)
    rng = random.Random(a.seed)
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
            if mirror is not None and etype in (0x0800, 0x86DD) and is_tcp(frame):
                # the kernel's UDP stack adds the outer IPv4/UDP headers
                mirror.sendto(vxlan_hdr + frame[:a.mirror_snaplen], (a.mirror, 4789))
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
            if a.drop and rng.random() < a.drop and is_tcp(f):
                print(json.dumps(drop_record(f)), flush=True)
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
