"""findings: problems that are not a RST (or not only one), per connection.

Like the rules, a table: each row names a finding code, the test on a
connection's observations, and the sentence it prints. A finding aggregates
into ``{cause, count, evidence, flows}`` in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .flows import Conn

FINDING_CODES = (
    "backlog_overflow",
    "mtu_blackhole",
    "upstream_timeout",
    "premature_close",
    "zero_window",
)


def _silent_backlog(c: Conn) -> str | None:
    # SYN-ACK retransmitted although the client ACKed (its ACK was dropped: accept
    # queue full with tcp_abort_on_overflow=0), or the client's first data
    # retransmitted while the server never ACKed it
    if c.s.synack >= 2 and c.hs_done:
        return f"server retransmitted its SYN-ACK {c.s.synack - 1} time(s) after the client's ACK"
    if c.c.syn_retrans >= 1 and c.s.synack >= 1:
        return f"client retransmitted its SYN {c.c.syn_retrans} time(s) before the SYN-ACK"
    return None


def _mtu_blackhole(c: Conn) -> str | None:
    for name, d in (("server", c.s), ("client", c.c)):
        if d.mss_retrans >= 2 and d.small_retrans == 0 and d.mss_retrans * 2 >= d.mss_segs:
            return (
                f"{name} retransmitted full-MSS segments {d.mss_retrans} times "
                f"while its small segments got through"
            )
    return None


def _upstream_timeout(c: Conn) -> str | None:
    if not c.exchanges:
        return None
    ex = c.exchanges[-1]
    fin = c.c.fin_ts
    if ex.req_ts is not None and not ex.complete and fin is not None and fin > ex.req_ts:
        wait = fin - ex.req_ts
        if wait >= 1.0 and (ex.last_resp_ts is None or fin - ex.last_resp_ts >= 1.0):
            got = "no response" if ex.resp_ts is None else "an incomplete response"
            return f"nginx gave up after {wait:.1f} s with {got} (proxy_read_timeout?)"
    return None


def _premature_close(c: Conn) -> str | None:
    fin = c.s.fin_ts
    if fin is None or not c.exchanges:
        return None
    for ex in c.exchanges:
        if ex.req_ts is not None and ex.req_ts < fin and not ex.complete:
            if any(not ev.from_client and ev.ts <= fin for ev in c.rst_events):
                return None
            got = "before responding" if ex.resp_ts is None else "in the middle of the response"
            return f"the backend closed (FIN) {got} to a request"
    return None


def _zero_window(c: Conn) -> str | None:
    for name, d in (("client", c.c), ("server", c.s)):
        if d.zero_win:
            return f"{name} advertised a zero window {d.zero_win} time(s)"
    return None


@dataclass(frozen=True)
class FindingRule:
    cause: str
    test: Callable[[Conn], str | None]


FINDING_RULES: tuple[FindingRule, ...] = (
    FindingRule("backlog_overflow", _silent_backlog),
    FindingRule("mtu_blackhole", _mtu_blackhole),
    FindingRule("upstream_timeout", _upstream_timeout),
    FindingRule("premature_close", _premature_close),
    FindingRule("zero_window", _zero_window),
)


def conn_findings(c: Conn) -> list[tuple[str, str]]:
    out = []
    for r in FINDING_RULES:
        msg = r.test(c)
        if msg:
            out.append((r.cause, msg))
    return out
