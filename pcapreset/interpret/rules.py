"""rules: the one place that decides a cause.

``RULES`` is a table read top to bottom; the first row whose ``needs`` facts
all hold and none of whose ``unless`` facts hold decides the verdict. No row
matches -> ``unknown``, with the evidence still listed. Each verdict lists the
facts that matched, in words.

Sender ``"rst"`` means "whoever sent the RST" (client or server).
"""

from __future__ import annotations

from dataclasses import dataclass

from .evidence import Fact

CAUSES = (
    "keepalive_race",
    "backlog_overflow",
    "backend_crash",
    "abortive_close",
    "connection_refused",
    "client_abort",
    "middlebox",
    "mtu_blackhole",
    "unknown",
)
SENDERS = ("client", "server", "middlebox", "unknown")
PHASES = ("handshake", "idle", "request", "response", "after_response", "closing")


@dataclass(frozen=True)
class Rule:
    name: str
    cause: str
    sender: str
    confidence: float
    needs: tuple[str, ...]
    unless: tuple[str, ...]
    says: str


R = Rule
# fmt: off
RULES: tuple[Rule, ...] = (
    # name                              cause                 sender       conf
    #   needs (all must hold)                                   unless (none may hold)
    #   the sentence printed
    # -- something in the path forged it: the RST does not fit the sender's packets
    R("forged_ttl",                      "middlebox",          "middlebox", 0.9,
      ("ttl_mismatch",),                                        ("rst_answers_syn",),
      "RST TTL does not fit the claimed sender's other packets: sent by a device in the path"),
    R("forged_data_after",               "middlebox",          "middlebox", 0.85,
      ("sender_data_after_rst",),                               (),
      "the 'resetting' side kept sending data after the RST: it did not send the RST"),
    R("forged_both_ways",                "middlebox",          "middlebox", 0.7,
      ("rst_both_directions",),                                 (),
      "RSTs towards both ends at the same instant: a device in the path reset the flow"),
    R("forged_ttl_host",                 "middlebox",          "middlebox", 0.7,
      ("ttl_mismatch_host",),                                   (),
      "RST TTL does not fit the claimed sender's packets in other connections"),
    R("forged_ipid",                     "middlebox",          "middlebox", 0.65,
      ("ipid_out_of_sequence",),                                ("rst_answers_syn",),
      "RST IP ID fits neither way the claimed sender's stack makes RSTs: sent by a device "
      "in the path"),
    # -- handshake
    R("refused",                         "connection_refused", "server",    0.95,
      ("rst_answers_syn", "from_server"),                       (),
      "nothing was listening: the backend is down or restarting"),
    R("accept_queue_abort_burst",        "backlog_overflow",   "server",    0.9,
      ("from_server", "rst_after_handshake", "concurrent_connects"), (),
      "accept queue overflow with tcp_abort_on_overflow=1 during a burst of connects"),
    R("accept_queue_abort",              "backlog_overflow",   "server",    0.7,
      ("from_server", "rst_after_handshake"),                   (),
      "RST right after the handshake: accept queue overflow (tcp_abort_on_overflow=1)"),
    # -- keep-alive race: the backend closed an idle connection as nginx reused it
    R("keepalive_race_crossing",         "keepalive_race",     "server",    0.95,
      ("from_server", "request_outstanding", "fin_crossed_request", "reused_connection"), (),
      "the backend closed the idle keep-alive connection as nginx sent a request on it"),
    R("keepalive_race_after_fin",        "keepalive_race",     "server",    0.85,
      ("from_server", "request_outstanding", "server_fin_before", "reused_connection"), (),
      "nginx sent a request on a keep-alive connection the backend had already closed"),
    R("keepalive_race_timeout",          "keepalive_race",     "server",    0.85,
      ("from_server", "request_outstanding", "reused_connection",
       "idle_matches_server_timeout"),                          ("mass_reset",),
      "the request came after an idle gap equal to the backend's idle timeout"),
    R("keepalive_race_instant",          "keepalive_race",     "server",    0.75,
      ("from_server", "request_outstanding", "reused_connection", "idle_gap",
       "rst_soon_after_request"),                               ("mass_reset",),
      "the backend reset a request that came after an idle gap, at once: it was closing "
      "the idle connection"),
    R("keepalive_race_fresh",            "keepalive_race",     "server",    0.7,
      ("from_server", "request_outstanding", "fin_crossed_request", "idle_gap"), (),
      "the backend closed the idle connection as nginx sent a request on it"),
    # -- the backend died with requests in flight
    R("crash_mass_reset",                "backend_crash",      "server",    0.9,
      ("from_server", "mass_reset"),                            ("after_complete_response",),
      "many connections reset by the backend at one instant: the process died"),
    R("crash_then_refused",              "backend_crash",      "server",    0.85,
      ("from_server", "refused_after"),          ("after_complete_response", "idle_connection"),
      "the backend reset connections and then refused new ones: it crashed and restarted"),
    R("reset_mid_response",              "backend_crash",      "server",    0.7,
      ("from_server", "response_partial"),                      (),
      "the backend reset the connection in the middle of a response"),
    R("reset_with_request_outstanding",  "backend_crash",      "server",    0.6,
      ("from_server", "request_outstanding"),                   (),
      "the backend reset the connection while a request was outstanding"),
    # -- the backend chose RST instead of FIN
    R("abort_after_response",            "abortive_close",     "server",    0.85,
      ("from_server", "after_complete_response"),               (),
      "RST instead of FIN right after a complete response (SO_LINGER 0 or unread request "
      "bytes)"),
    R("abort_unread",                    "abortive_close",     "server",    0.75,
      ("from_server", "client_data_unacked"),                   ("request_outstanding",),
      "the backend closed with unread data from nginx"),
    R("abort_idle",                      "abortive_close",     "server",    0.6,
      ("from_server", "idle_connection"),                       (),
      "the backend reset an idle connection instead of closing it with FIN"),
    # -- nginx's side
    R("client_reset",                    "client_abort",       "client",    0.8,
      ("from_client",),                                         (),
      "nginx reset the upstream connection (client gave up, proxy timeout or worker exit)"),
)
# fmt: on


@dataclass(slots=True)
class Verdict:
    cause: str
    sender: str
    confidence: float
    rule: str
    says: str
    matched: list[Fact]
    evidence: list[Fact]


def classify(facts: dict[str, Fact]) -> Verdict:
    """First matching rule wins; the verdict lists the facts it matched."""
    for r in RULES:
        if all(n in facts for n in r.needs) and not any(n in facts for n in r.unless):
            sender = r.sender
            if sender == "rst":
                sender = "client" if "from_client" in facts else "server"
            return Verdict(
                r.cause,
                sender,
                r.confidence,
                r.name,
                r.says,
                [facts[n] for n in r.needs],
                list(facts.values()),
            )
    sender = (
        "client" if "from_client" in facts else "server" if "from_server" in facts else "unknown"
    )
    return Verdict("unknown", sender, 0.3, "none", "no rule matched", [], list(facts.values()))


def table_text() -> str:
    """The rules table as text (for docs and `pcapreset rules`)."""
    lines = []
    for r in RULES:
        need = " & ".join(r.needs)
        if r.unless:
            need += "  unless " + " | ".join(r.unless)
        lines.append(f"{r.name:32} {r.cause:20} {r.sender:10} {r.confidence:.2f}  {need}")
    return "\n".join(lines)
