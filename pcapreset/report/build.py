"""build: an EngineResult interpreted into a :class:`Report`.

:func:`build` computes the capture's context, then each connection's resets
and findings (SYN retries the backend refused are held back and counted as one
reset per connection attempt); the report itself is :mod:`.model`.
"""

from __future__ import annotations

from ..interpret.context import (
    build_context,
    is_refused,
    retry_burst,
)
from ..interpret.fact import Fact
from ..interpret.findings import conn_findings
from ..interpret.resets import ResetRecord, conn_resets
from ..track.conn import Conn, RstEvent
from .model import Report
from .records import Records
from .result import EngineResult

#: a SYN retransmitted this long after the refused one is still the same
#: attempt (Linux gives up after ~127 s of backoff, Windows after ~21 s)
SYN_RETRY_S = 130.0
#: refused attempts held back for their retries before the oldest are added
REFUSED_HELD_MAX = 256


def _syn_retry(
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord, int | None]],
    c: Conn,
    ev: RstEvent,
) -> bool:
    """``ev`` refuses a retransmission of a SYN already refused (the same
    client ISN on the same 4-tuple): one connection attempt, one event; the
    refused record counts its RST packets and says so."""
    held = refused.get((c.client, c.server))
    if held is None or c.c.isn is None or held[0] != c.c.isn or not is_refused(c, ev):
        return False
    r = held[1]
    if ev.ts - r.event.ts > SYN_RETRY_S:
        return False
    r.rst_packets += len(ev.packets)
    n = r.facts.get("syn_retries_refused")
    k = 1 if n is None else int(n.text.split()[0]) + 1
    fact = Fact(
        "syn_retries_refused",
        f"{k} retransmitted SYN(s) of this attempt (same ISN) refused too: one event",
    )
    r.facts[fact.name] = fact
    r.verdict.evidence = [f for f in r.verdict.evidence if f.name != fact.name] + [fact]
    return True


def _first_refused(c: Conn, ev: RstEvent) -> bool:
    return ev.index == 0 and is_refused(c, ev)


def _flush_refused(
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord, int | None]],
    resets: Records,
    before: float,
) -> None:
    for k in [k for k, (_isn, r, _j) in refused.items() if r.event.ts < before]:
        _isn, r, j = refused.pop(k)
        resets.add(r, j)


def build(
    result: EngineResult,
    nginx_keepalive_s: float | None = None,
    nginx_from_conf: bool = False,
) -> Report:
    ctx = build_context(result.conns, result.rollup)
    resets = Records(result.rollup.packed.records() if result.rollup is not None else None)
    agg: dict[str, dict] = {}
    book = result.book
    #: (client, server) -> (client ISN, the refused attempt's record not yet
    #: added, where its connection is packed)
    refused: dict[tuple[int, int], tuple[int | None, ResetRecord, int | None]] = {}
    for c, j in result.each_conn():
        mine = conn_resets(c, ctx)
        if mine and _syn_retry(refused, c, mine[0].event):
            mine.pop(0)  # a retransmitted SYN of an attempt already refused
        for cause, msg in conn_findings(c, lambda x: retry_burst(x, ctx)):
            a = agg.setdefault(cause, {"cause": cause, "count": 0, "evidence": [], "flows": []})
            a["count"] += 1
            if len(a["evidence"]) < 5 and msg not in a["evidence"]:
                a["evidence"].append(msg)
            if len(a["flows"]) < 50:
                a["flows"].append(f"{book.endpoint(c.client)} -> {book.endpoint(c.server)}")
        for r in mine:
            if _first_refused(c, r.event):
                # held back: the attempt's retransmitted SYNs may follow
                k = (c.client, c.server)
                held = refused.pop(k, None)
                if held is not None:
                    resets.add(held[1], held[2])
                refused[k] = (c.c.isn, r, j)
                if len(refused) > REFUSED_HELD_MAX:
                    _flush_refused(refused, resets, c.start - SYN_RETRY_S)
            else:
                resets.add(r, j)  # (j: packed, its record is kept encoded)
    _flush_refused(refused, resets, float("inf"))
    resets.done()
    findings = sorted(agg.values(), key=lambda a: -a["count"])
    return Report(result, ctx, resets, findings, nginx_keepalive_s, nginx_from_conf)
