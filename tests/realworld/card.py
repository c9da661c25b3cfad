#!/usr/bin/env python3
"""Reading aids for labelling RST events by hand (tshark required; see README.md).

    card.py card FILE[@STREAM,...] [FILE...]   reading card of each RST stream
    card.py facts FILE [FILE...]               one line of byte/FIN facts per RST stream
    card.py row FILE FRAME SENDER CAUSE APP REASON [BEST_GUESS] [flip]
                                               the labels.tsv row for the RST in FRAME

FILE is a corpus file name ($PCAPRESET_CORPUS or shared/corpus/public beside the
repository) or a path. Environment for `card`: NB packets shown before each RST (10),
NF first packets (6), NR RSTs per stream to show context for (4), MAXS streams (6).
These print facts; the judgement of sender and cause is the reader's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst",
    "ipv6.dst", "tcp.dstport", "ip.ttl", "ipv6.hlim", "ip.id", "tcp.seq_raw", "tcp.ack_raw",
    "tcp.flags", "tcp.len", "tcp.stream", "tcp.window_size_value", "tls.record.content_type",
    "tcp.payload", "tcp.options.mss_val",
]  # fmt: skip
WELL_KNOWN = {
    20, 21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 179, 389, 443, 445, 465, 502,
    587, 636, 993, 995, 1433, 1521, 1883, 3306, 3389, 5222, 5432, 5900, 6379, 6633, 6653,
    6667, 8080, 8443, 20000, 44818,
}  # fmt: skip
FLAGS = [(0x02, "S"), (0x10, "A"), (0x08, "P"), (0x01, "F"), (0x04, "R"), (0x20, "U")]


def corpus_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    env = os.environ.get("PCAPRESET_CORPUS")
    roots = [Path(env)] if env else [u / "shared/corpus/public" for u in Path(__file__).parents]
    for root in roots:
        if (root / name).exists():
            return root / name
    raise SystemExit(f"{name}: not found")


def _last(v: str) -> str:
    """The innermost of tshark's comma-separated values (tunnels: the inner header)."""
    return v.split(",")[-1] if v else ""


def _hint(payload: str, ctype: str) -> str:
    if ctype:
        return f"TLS[{ctype}]"
    if not payload:
        return ""
    raw = bytes.fromhex(payload.split(",")[0][:96])
    return repr("".join(chr(c) if 32 <= c < 127 else "." for c in raw)[:40])


def load(path: Path) -> list[dict]:
    cmd = ["tshark", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "separator=|",
           "-E", "occurrence=a"] + [x for f in FIELDS for x in ("-e", f)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    pkts = []
    for line in out.splitlines():
        v = line.split("|")
        if len(v) != len(FIELDS):
            continue
        d = dict(zip(FIELDS, v, strict=True))
        if d["ipv6.src"]:
            src, dst = f"[{_last(d['ipv6.src'])}]", f"[{_last(d['ipv6.dst'])}]"
            ttl, ipid = _last(d["ipv6.hlim"]), "-"
        else:
            src, dst = _last(d["ip.src"]), _last(d["ip.dst"])
            ttl, ipid = _last(d["ip.ttl"]), _last(d["ip.id"])
        try:
            flags = int(_last(d["tcp.flags"]) or "0", 16)
            pkts.append({
                "n": int(d["frame.number"]), "t": float(d["frame.time_epoch"]),
                "src": f"{src}:{_last(d['tcp.srcport'])}",
                "dst": f"{dst}:{_last(d['tcp.dstport'])}", "ip": src, "ttl": ttl, "ipid": ipid,
                "seq": int(_last(d["tcp.seq_raw"]) or 0), "ack": int(_last(d["tcp.ack_raw"]) or 0),
                "fl": "".join(n for b, n in FLAGS if flags & b) or ".",
                "len": int(_last(d["tcp.len"]) or 0), "stream": int(_last(d["tcp.stream"]) or -1),
                "win": _last(d["tcp.window_size_value"]),
                "hint": _hint(d["tcp.payload"], d["tls.record.content_type"]),
                "mss": d["tcp.options.mss_val"],
            })  # fmt: skip
        except ValueError:
            continue
    return pkts


def _port(ep: str) -> int:
    return int(ep.rsplit(":", 1)[1])


def roles(pl: list[dict]) -> tuple[str, str, str]:
    """(client, server, basis): the SYN, else a SYN-ACK, else the well-known/lower port."""
    for p in pl:
        if p["fl"] == "S":
            return p["src"], p["dst"], "SYN"
    for p in pl:
        if p["fl"] == "SA":
            return p["dst"], p["src"], "SYNACK"
    a, b = pl[0]["src"], pl[0]["dst"]
    if (_port(b) in WELL_KNOWN) != (_port(a) in WELL_KNOWN):
        return (a, b, "port") if _port(b) in WELL_KNOWN else (b, a, "port")
    return (a, b, "lowport") if _port(b) < _port(a) else (b, a, "lowport")


def _isn(pl: list[dict]) -> dict[str, int]:
    isn: dict[str, int] = {}
    for p in pl:
        if "S" in p["fl"]:
            isn.setdefault(p["src"], p["seq"])
    for p in pl:
        isn.setdefault(p["src"], p["seq"])
    return isn


def _streams(pkts: list[dict]) -> dict[int, list[dict]]:
    by: dict[int, list[dict]] = defaultdict(list)
    for p in pkts:
        by[p["stream"]].append(p)
    return {s: pl for s, pl in by.items() if any("R" in p["fl"] for p in pl)}


def card(name: str) -> None:
    only = None
    if "@" in name:
        name, sel = name.split("@")
        only = [int(x) for x in sel.split(",")]
    pkts = load(corpus_path(name))
    env = os.environ.get
    nb, nf, nr, maxs = (int(env(k, d)) for k, d in (("NB", 10), ("NF", 6), ("NR", 4), ("MAXS", 6)))
    ttls: dict[str, Counter] = defaultdict(Counter)
    for p in pkts:
        ttls[p["ip"]][p["ttl"]] += 1
    print(f"===== {name}  tcp_pkts={len(pkts)}")
    print(
        "  TTL baseline: " + "; ".join(f"{ip}:{dict(c.most_common(3))}" for ip, c in ttls.items())
    )
    rst = _streams(pkts)
    print(f"  rst_streams={len(rst)}")
    for s in only if only is not None else list(rst)[:maxs]:
        pl = rst[s]
        c, sv, how = roles(pl)
        isn, t0 = _isn(pl), pl[0]["t"]
        print(f" -- stream {s}: client={c} server={sv} (by {how}) pkts={len(pl)} t0={t0:.6f}")
        idx = [i for i, p in enumerate(pl) if "R" in p["fl"]]
        show = set(range(min(nf, len(pl))))
        for i in idx[:nr]:
            show |= set(range(max(0, i - nb), min(len(pl), i + 3)))
        prev = -1
        for i in sorted(show):
            if i != prev + 1:
                print("    ...")
            p, prev = pl[i], i
            seq = p["seq"] - isn.get(p["src"], p["seq"])
            ack = p["ack"] - isn.get(p["dst"], p["ack"]) if "A" in p["fl"] else "-"
            mark = f"   <== RST ts={p['t']:.6f} src={p['src']}" if "R" in p["fl"] else ""
            print(f"  #{p['n']:<5} {p['t'] - t0:9.4f} {'C>S' if p['src'] == c else 'S>C'} "
                  f"{p['fl']:<4} s={seq:<8} a={ack:<8} l={p['len']:<5} ttl={p['ttl']:<3} "
                  f"id={p['ipid']:<6} w={p['win']:<6} {p['hint']}{mark}")  # fmt: skip


def facts(name: str) -> None:
    for s, pl in _streams(load(corpus_path(name))).items():
        c, sv, _how = roles(pl)
        isn, t0 = _isn(pl), pl[0]["t"]
        i = next(i for i, p in enumerate(pl) if "R" in p["fl"])
        r, before = pl[i], pl[:i]

        def most(vals: list[int]) -> int:
            return max(vals or [0])

        s_sent = most([p["seq"] - isn.get(sv, 0) + p["len"] for p in before if p["src"] == sv])
        c_sent = most([p["seq"] - isn.get(c, 0) + p["len"] for p in before if p["src"] == c])
        c_ack = most(
            [p["ack"] - isn.get(sv, 0) for p in before if p["src"] == c and "A" in p["fl"]]
        )
        s_ack = most(
            [p["ack"] - isn.get(c, 0) for p in before if p["src"] == sv and "A" in p["fl"]]
        )
        fins = [
            f"{'C' if p['src'] == c else 'S'}@{p['t'] - t0:.2f}" for p in before if "F" in p["fl"]
        ]
        idle = r["t"] - before[-1]["t"] if before else 0.0
        print(f"{name} s{s} #{r['n']} {'C' if r['src'] == c else 'S'}:{r['fl']} "
              f"t={r['t'] - t0:.2f} idle={idle:.2f} srv_sent={s_sent} cli_acked={c_ack} "
              f"cli_sent={c_sent} srv_acked={s_ack} fins={fins[:3]}")  # fmt: skip


def row(name: str, frame: str, sender: str, cause: str, app: str, reason: str, *rest: str) -> None:
    pkts = load(corpus_path(name))
    p = next(p for p in pkts if p["n"] == int(frame))
    if "R" not in p["fl"]:
        raise SystemExit(f"frame {frame} is not a RST")
    c, sv, _how = roles([q for q in pkts if q["stream"] == p["stream"]])
    if "flip" in rest:
        c, sv = sv, c
    best = next((x for x in rest if x != "flip"), "")
    print("\t".join([Path(name).name, c, sv, f"{p['t']:.6f}", p["src"], sender, cause, app,
                     reason, best]))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("card", "facts", "row"):
        raise SystemExit(__doc__)
    verb, args = sys.argv[1], sys.argv[2:]
    if verb == "row":
        row(*args)
    else:
        for f in args:
            (card if verb == "card" else facts)(f)
