"""resets: the resets of a connection, each with its facts and verdict.

One record per reset: a RST event that only answers segments in flight when
the previous one left (a follow-up) belongs to the reset before it; RSTs of
one tracker event that came from different sources are resets of their own,
and so is a kernel's RST for a socket that a forged RST had just closed (an
after_close). The offline report and the live verdict stream both group
them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..track.conn import Conn, RstEvent
from .context import Context, rtt_of
from .events import split_by_source
from .evidence import rst_facts
from .fact import Fact
from .readings import is_followup
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
    the real host (its TTL fits). That RST is the forged reset's aftermath:
    the real host's own reset, harmless in itself (after_close).
    """
    return (
        prev.verdict.cause == "middlebox"
        and "bare_rst" in facts
        and "no_options" in facts
        and "ttl_consistent" in facts
        and ev.ts - prev.event.ts <= AFTERMATH_S
    )


def _mark_aftermath(prev: ResetRecord, ev: RstEvent, facts: dict[str, Fact]) -> None:
    """The RST is the real host's kernel answering after a forged RST killed
    its socket: its own reset (another sender), classified as after_close."""
    who = "client (nginx)" if ev.from_client else "server (backend)"
    facts["socket_reset_before"] = Fact(
        "socket_reset_before",
        f"a forged RST {ev.ts - prev.event.ts:.3f} s earlier had killed the {who} socket; "
        "this bare RST from the real host (its TTL fits) answers the other end's next segment",
    )


def record_app(r: ResetRecord) -> str:
    """The reset's ``app`` (http | websocket | tls | other | none), from its facts."""
    for name in r.facts:
        if name.startswith("app_"):
            return name[4:]
    return "none"


def conn_resets(conn: Conn, ctx: Context) -> list[ResetRecord]:
    """The connection's resets, in order: its RST events, one per source
    (:func:`pcapreset.interpret.events.split_by_source`), classified; each
    follow-up folded into the record of the reset before it; a kernel's RST
    after a forged one marked as such (an after_close of its own)."""
    mine: list[ResetRecord] = []
    for ev in split_by_source(conn):
        if mine and is_followup(conn, ev, rtt_of(conn, ctx)):
            mine[-1].rst_packets += len(ev.packets)  # same reset, in-flight data
            continue
        facts = rst_facts(conn, ev, ctx)
        forged = next((r for r in reversed(mine) if r.verdict.cause == "middlebox"), None)
        if forged is not None and _aftermath(forged, ev, facts):
            _mark_aftermath(forged, ev, facts)  # a consequence of the forged RST
        mine.append(ResetRecord(conn, ev, classify(facts), facts))
    return mine
