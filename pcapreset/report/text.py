"""text: the 80-column text report, and the ``conns`` table."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TextIO

from ..interpret.resets import ResetRecord
from ..interpret.rules import HARMLESS
from ..textsafe import clean, utc
from .model import Report

WIDTH = 80


def _fmt_time(ts: float) -> str:
    return utc("%H:%M:%S", ts) + f".{int((ts % 1) * 1000):03d}"


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=first if first is not None else indent, subsequent_indent=indent
    ) or [first or indent]


def render_text(rep: Report, verbose: bool = False) -> str:
    """The text report (:func:`text_lines`) as one string."""
    return "".join(line + "\n" for line in text_lines(rep, verbose))


def write_text(rep: Report, out: TextIO, verbose: bool = False) -> None:
    """:func:`render_text` written a line at a time (a long capture's table
    of resets, with ``-v`` their evidence, is most of the text)."""
    for line in text_lines(rep, verbose):
        out.write(line + "\n")


def text_lines(rep: Report, verbose: bool = False) -> Iterator[str]:
    """The 80-column text report, line by line; control characters from the
    capture, logs and nginx.conf written as ``\\xNN`` (no escape sequence
    reaches the terminal)."""
    for line in _text_lines(rep, verbose):
        yield clean(line)


def _text_lines(rep: Report, verbose: bool = False) -> Iterator[str]:
    j = rep.to_json(resets=False)
    cap = j["capture"]
    names = ", ".join(os.path.basename(f["path"]) for f in cap["files"])
    span = cap["span_s"]
    when = ""
    if cap["first_ts"] is not None:
        when = " from " + utc("%Y-%m-%d %H:%M:%SZ", cap["first_ts"])
    head = f"{names}: {cap['packets']:,} packets"
    if cap["packets"]:
        head += f" ({cap['tcp_packets']:,} TCP)"
    if span is not None:
        head += f", {span:.1f} s{when}"
    yield from _wrap(
        f"{head}; {', '.join(cap['linktypes']) or 'no link type'}",
        "  ",
        "capture  ",
    )
    live = cap.get("live")
    if live:
        yield from _wrap(
            f"{live.get('iface')} '{live.get('filter')}' for {live.get('duration_s')} s "
            f"(stopped by {live.get('stopped_by')}): kernel queued "
            f"{live.get('kernel_packets')}, dropped {live.get('kernel_drops')}"
            + (f"; written to {live['write']}" if live.get("write") else ""),
            "  ",
            "live     ",
        )
    v = cap["vantage"]
    yield from _wrap(f"{v['where']} ({v['basis']})", "  ", "vantage  ")
    for w in cap["warnings"]:
        yield from _wrap(w["message"], "  ", "warning  ")
    s = j["summary"]
    yield f"flows    {j['flows']:,} TCP connections, {s['resets']:,} reset events"
    if s["server_idle_timeout_s"] is not None:
        yield from _wrap(
            f"backend closes idle connections after ~{s['server_idle_timeout_s']:.2f} s "
            f"({s['server_idle_timeout_min_s']:.2f}-{s['server_idle_timeout_max_s']:.2f} s, "
            f"{s['server_idle_timeout_samples']} {s['server_idle_timeout_basis']}); nginx "
            f"reuses idle connections for up to {s['nginx_keepalive_timeout_s']:g} s "
            f"({s['nginx_keepalive_timeout_source']})"
            + (f"; backend looks like {s['backend']}" if s["backend"] else ""),
            "  ",
            "idle     ",
        )
    yield ""
    if rep.resets:
        yield "resets by cause"
        senders: Counter[tuple[str, str]] = Counter()
        causes: Counter[str] = Counter()
        for cause, sender in rep.resets.pairs():
            senders[(cause, sender)] += 1
            causes[cause] += 1
        for cause, n in causes.most_common():
            who = ", ".join(f"{sd} {k}" for (c, sd), k in senders.items() if c == cause)
            note = "  harmless" if cause in HARMLESS else ""
            yield f"  {cause:20} {n:6,}  ({who}){note}"
        yield ""
        yield from _reset_table(rep, verbose)
    else:
        yield "no TCP resets in this capture"
    if rep.findings:
        yield ""
        yield "findings"
        for f in rep.findings:
            yield f"  {f['cause']:20} {f['count']:6,}"
            for e in f["evidence"][:2]:
                yield from _wrap(e, "      ", "    - ")
    extra_lines = rep.extra.get("_text_lines")
    if extra_lines:
        yield ""
        yield from extra_lines
    if s["recommendations"]:
        yield ""
        yield "what to change"
        for rec in s["recommendations"]:
            yield from _wrap(rec, "    ", "  - ")


def _shape(r: ResetRecord) -> tuple:
    """What makes two resets "the same" in the text table: server, verdict and phase."""
    v = r.verdict
    return (r.conn.server, v.cause, v.sender, v.rule, v.best_guess, r.event.phase)


def _reset_table(rep: Report, verbose: bool) -> Iterator[str]:
    """One line per reset, its verdict's confidence shown; identical resets
    (same server, cause, sender, rule and phase) on one line with a count."""
    clients = rep.resets.clients()
    servers = sorted(set(rep.resets.servers()))
    short_client = len({c >> 16 for c in clients}) == 1
    cw = max(len(rep.ep(c)) for c in clients)

    def port(c: int) -> str:
        return ":" + str(c & 0xFFFF)

    name: Callable[[int], str] = rep.ep
    if 12 + 1 + cw + 1 + 9 + 1 + 18 + 1 + 4 + 1 + 7 + 1 + 14 > WIDTH or short_client:
        name = port
        cw = max(6, max(len(port(c)) for c in clients))
    multi_server = len(servers) > 1
    if short_client:
        ip = rep.ep(clients[0]).rsplit(":", 1)[0]
        head = f"client {ip}" + ("" if multi_server else f"  ->  server {rep.ep(servers[0])}")
        if len(head) <= WIDTH:
            yield head
        else:  # long IPv6 addresses: one line each
            yield f"client {ip}"
            yield f"server {rep.ep(servers[0])}"
    elif not multi_server:
        yield f"server {rep.ep(servers[0])}"
    yield f"{'time':12} {'client':{cw}} {'sender':9} {'cause':18} {'conf':>4} {'idle_s':>7} phase"
    # identical resets: counted, shown once (where the first one is)
    groups: dict[tuple, list] = {}
    for r in rep.resets:
        g = groups.get(_shape(r))
        if g is None:
            groups[_shape(r)] = [1, r.event.ts]
        else:
            g[0] += 1
            g[1] = r.event.ts
    shown: set[tuple] = set()
    last_server = None
    for r in rep.resets:
        key = _shape(r)
        if key in shown:
            continue
        shown.add(key)
        count, last_ts = groups[key]
        cl = name(r.conn.client)
        if multi_server and r.conn.server != last_server:
            last_server = r.conn.server
            yield f"-- server {rep.ep(r.conn.server)}"
        ev, v = r.event, r.verdict
        idle = "" if ev.idle_before_s is None else f"{ev.idle_before_s:7.2f}"
        cause = v.cause if v.best_guess is None else f"unknown ({v.best_guess}?)"
        line = (
            f"{_fmt_time(ev.ts):12} {cl:{cw}} {v.sender:9} {cause:18} {v.confidence:4.2f} "
            f"{idle:>7} {ev.phase}"
        )
        if count > 1:
            more = f"  x{count:,} to {_fmt_time(last_ts)}"
            line += more if len(line) + len(more) <= WIDTH else f" x{count:,}"
        yield line
        if verbose:
            guess = f"; best guess {v.best_guess}" if v.best_guess else ""
            yield from _wrap(
                f"{v.says} [rule {v.rule}, confidence {v.confidence:.2f}{guess}]",
                "      ",
                "    = ",
            )
            matched = set(id(f) for f in v.matched)
            for f in v.matched:
                yield from _wrap(f.text, "      ", "    + ")
            for f in v.evidence:
                if id(f) not in matched:
                    yield from _wrap(f.text, "      ", "    . ")


def render_conns_text(rows: list[dict]) -> str:
    out = [
        f"{'client':21} {'server':21} {'state':6} {'dur_s':>7} {'c_bytes':>8} {'s_bytes':>8} rst"
    ]
    for r in rows:
        out.append(
            f"{r['client'][:21]:21} {r['server'][:21]:21} {r['conn_state']:6} "
            f"{r['duration_s']:7.2f} {r['client_bytes']:8} {r['server_bytes']:8} {r['resets']:3}"
        )
    return clean("\n".join(out)) + "\n"
