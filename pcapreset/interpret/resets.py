"""resets: the resets of a connection, each with its facts and verdict.

One record per reset: a RST event that only answers segments in flight when
the previous one left (a follow-up), or a kernel's RST for a socket that a
forged RST had just closed (its aftermath), belongs to the reset before it.
The offline report and the live verdict stream both group them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..track.conn import Conn, RstEvent
from .context import Context, is_followup, rtt_of
from .evidence import Fact, rst_facts
from .rules import Verdict, classify


@dataclass(slots=True)
class ResetRecord:
    #: the connection and the reset's event (or, once the engine packed the
    #: connection, stubs that read like them: pcapreset.engine.packed)
    conn: Conn
    event: RstEvent
    verdict: Verdict
    facts: dict[str, Fact]
    #: its RST packets, with those of later events that only answered
    #: segments in flight (the same reset); 0: the event's own
    rst_packets: int = 0

    def __post_init__(self) -> None:
        if not self.rst_packets:
            self.rst_packets = len(self.event.packets)  # type: ignore[union-attr]


#: a dead end answers the other side's next segment: at the latest its first
#: retransmission, which Linux sends after at most a few 200 ms-minimum RTOs
AFTERMATH_S = 3.0


def _aftermath(prev: ResetRecord, ev: RstEvent, facts: dict[str, Fact]) -> bool:
    """A kernel RST for a socket that a forged RST just killed.

    After a middlebox's RST closed one end (or both), the peer that never saw
    it keeps sending, and the dead end's kernel answers with a RST of its own
    with no socket behind it (bare, no TCP options: tcp_v4_send_reset), from
    the real host (its TTL fits). That RST is the forged reset's aftermath, not
    a second reset of the connection.
    """
    return (
        prev.verdict.cause == "middlebox"
        and "bare_rst" in facts
        and "no_options" in facts
        and "ttl_consistent" in facts
        and ev.ts - prev.event.ts <= AFTERMATH_S
    )


def _fold_aftermath(prev: ResetRecord, ev: RstEvent) -> None:
    prev.rst_packets += len(ev.packets)
    who = "client (nginx)" if ev.from_client else "server (backend)"
    fact = Fact(
        "aftermath_rst",
        f"then the {who} kernel reset the connection {ev.ts - prev.event.ts:.3f} s later "
        "(a bare RST from the real host: the forged RST had closed its socket)",
    )
    prev.facts[fact.name] = fact
    prev.verdict.evidence.append(fact)


def conn_resets(conn: Conn, ctx: Context) -> list[ResetRecord]:
    """The connection's resets, in order: its RST events classified, each
    follow-up and aftermath folded into the record of the reset before it."""
    mine: list[ResetRecord] = []
    for ev in conn.rst_events:
        if mine and is_followup(conn, ev, rtt_of(conn, ctx)):
            mine[-1].rst_packets += len(ev.packets)  # same reset, in-flight data
            continue
        facts = rst_facts(conn, ev, ctx)
        if mine and _aftermath(mine[-1], ev, facts):
            _fold_aftermath(mine[-1], ev)  # a consequence of the forged RST
            continue
        mine.append(ResetRecord(conn, ev, classify(facts), facts))
    return mine
