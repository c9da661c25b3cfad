"""rules: the one place that decides a cause.

``RULES`` is a table read top to bottom; the first row whose ``needs`` facts
all hold and none of whose ``unless`` facts hold decides the verdict. No row
matches -> ``unknown``, with the evidence still listed. Each verdict lists the
facts that matched, in words.

Sender ``"rst"`` means "whoever sent the RST" (client or server).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .fact import Fact

CAUSES = (
    "keepalive_race",
    "backlog_overflow",
    "backend_crash",
    "backend_restart",
    "abortive_close",
    "connection_refused",
    "client_abort",
    "middlebox",
    "mtu_blackhole",
    "after_close",
    "probe",
    "unknown",
)
SENDERS = ("client", "server", "middlebox", "unknown")
PHASES = ("handshake", "idle", "request", "response", "after_response", "closing")
APPS = ("http", "tls", "fastcgi", "uwsgi", "websocket", "other", "none")
#: causes that lose nothing: the report says so
HARMLESS = ("after_close", "probe")


@dataclass(frozen=True)
class Rule:
    name: str
    cause: str
    sender: str
    confidence: float
    needs: tuple[str, ...]
    unless: tuple[str, ...]
    says: str
    #: for a row whose cause is ``unknown``: the cause the evidence leans to
    best_guess: str | None = None


R = Rule
#: the app facts of connections whose requests and responses are known (HTTP, FastCGI,
#: uwsgi): rows for protocols without them name these in ``unless``
RQ = ("app_http", "app_fastcgi", "app_uwsgi")


def G(name: str, guess: str, sender: str, confidence: float, needs: tuple[str, ...],
      unless: tuple[str, ...], says: str) -> Rule:  # fmt: skip
    """A row too weak for a cause: ``unknown``, with ``best_guess``."""
    return Rule(name, "unknown", sender, confidence, needs, unless, says, guess)


# fmt: off
RULES: tuple[Rule, ...] = (
    # name                              cause                 sender       conf
    #   needs (all must hold)                                   unless (none may hold)
    #   the sentence printed
    # -- handshake: a SYN answered by RST,ACK at once, whatever its TTL
    R("refused",                         "connection_refused", "server",    0.95,
      ("rst_answers_syn", "from_server"),                       (),
      "nothing was listening: the backend is down or restarting"),
    # -- something in the path forged it: the RST does not fit the sender's own stack
    R("forged_ttl",                      "middlebox",          "middlebox", 0.9,
      ("ttl_mismatch",),                                        (),
      "RST TTL does not fit the claimed sender's other packets: sent by a device in the path"),
    R("forged_ttl_host",                 "middlebox",          "middlebox", 0.7,
      ("ttl_mismatch_host",),                                   (),
      "RST TTL does not fit the claimed sender's packets in other connections"),
    R("forged_rst_shape",                "middlebox",          "middlebox", 0.75,
      ("rst_shape_mismatch",),                                  (),
      "RST IP ID fits neither way the claimed sender's stack makes RSTs: sent by a device "
      "in the path"),
    R("forged_peer_ipid",                "middlebox",          "middlebox", 0.8,
      ("rst_ipid_of_peer",),                                    (),
      "RST IP ID copied from the other end's segment: a device built it from what it "
      "intercepted"),
    R("forged_data_after",               "middlebox",          "middlebox", 0.85,
      ("sender_data_after_rst", "ipid_counter_skips_rst"),      (),
      "the 'resetting' side kept sending data after the RST, its IP IDs counting on past "
      "the RST's: it did not send the RST"),
    G("data_after_rst",                  "middlebox",          "rst",       0.4,
      ("sender_data_after_rst",),                               (),
      "the 'resetting' side kept sending data after the RST, but the RST fits its packets"),
    # -- a handshake no stack would make: no cause fits
    R("odd_handshake",                   "unknown",            "rst",       0.3,
      ("odd_handshake",),                                       (),
      "the SYN was answered by something other than SYN-ACK: crafted or broken traffic"),
    # -- harmless: a closed socket answering a late segment; a probe
    R("reset_socket",                    "after_close",        "rst",       0.8,
      ("socket_reset_before",),                                 (),
      "a forged RST had killed this socket; the kernel answered the next segment with RST"),
    R("closed_socket",                   "after_close",        "rst",       0.85,
      ("late_segment_no_request",),                             ("request_outstanding",),
      "a segment reached a socket its host had already closed; the kernel answered with "
      "RST. Harmless: nothing was lost"),
    R("probe_no_request",                "probe",              "client",    0.8,
      ("from_client", "no_request", "syn_seen"),                ("peer_bulk",),
      "the initiator opened the connection, sent no request and reset it: a health check "
      "or scan. Harmless"),
    R("probe_banner",                    "probe",              "client",    0.65,
      ("from_client", "server_spoke_first", "client_said_little"), ("peer_bulk",),
      "the client took the server's banner, said next to nothing and reset: a version scan "
      "or health check. Harmless"),
    R("probe_tls_handshake",             "probe",              "client",    0.65,
      ("from_client", "tls_handshake_only"),                    ("peer_bulk",),
      "the client took the server's TLS handshake and reset without a request: a TLS scan "
      "or check. Harmless"),
    R("probe_health_check",              "probe",              "client",    0.7,
      ("from_client", "health_check_request"),                  ("request_outstanding",
                                                                 "response_partial"),
      "a health-check request, then RST from the checker. Harmless"),
    # -- the client closed, then the answer it had asked for came: it gave up on it
    R("client_abort_closed_waiting",     "client_abort",       "client",    0.75,
      ("from_client", "reply_after_client_close"),              (),
      "the client closed with its request unanswered; the answer then met the closed socket"),
    # -- accept queue overflow
    R("accept_queue_abort_burst",        "backlog_overflow",   "server",    0.9,
      ("from_server", "rst_after_handshake", "concurrent_connects"), (),
      "accept queue overflow with tcp_abort_on_overflow=1 during a burst of connects"),
    G("accept_queue_abort",              "backlog_overflow",   "server",    0.45,
      ("from_server", "rst_after_handshake"),                   ("rst_acks_payload",),
      "RST right after the handshake but no burst of connects: maybe an accept queue "
      "overflow"),
    # -- the backend closed its connections together (shutdown, worker recycling)
    R("restart_closed_reused",           "backend_restart",    "server",    0.8,
      ("from_server", "restart_closes", "request_outstanding"), (),
      "the backend closed its connections together as it shut down or recycled, and "
      "requests met them"),
    R("restart_message_crossed",         "backend_restart",    "server",    0.8,
      ("from_server", "restart_closes", "message_crossed_close"), (),
      "the server closed its connections together as it shut down, and a message met them"),
    R("restart_message_late",            "backend_restart",    "server",    0.8,
      ("from_server", "restart_closes", "late_request_after_close"), (),
      "the server closed its connections together as it shut down, and a message met them"),
    # -- keep-alive race: the backend closed an idle connection as nginx reused it (HTTP)
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
    R("keepalive_race_message_crossing", "keepalive_race",     "server",    0.85,
      ("from_server", "message_crossed_close"),                 (),
      "the backend closed the idle connection as the client sent its next message on it"),
    R("keepalive_race_crossed_close",    "keepalive_race",     "server",    0.7,
      ("from_server", "late_request_after_close"),              (),
      "the client's next request crossed the server's close; the closed socket reset it"),
    R("keepalive_race_fresh",            "keepalive_race",     "server",    0.7,
      ("from_server", "request_outstanding", "fin_crossed_request", "idle_gap"), (),
      "the backend closed the idle connection as nginx sent a request on it"),
    # -- the backend died with requests in flight (HTTP: requests are known)
    R("crash_mass_reset",                "backend_crash",      "server",    0.9,
      ("from_server", "mass_reset", "request_outstanding"),     (),
      "many connections reset by the backend at one instant, requests in flight: the "
      "process died"),
    R("crash_mass_reset_response",       "backend_crash",      "server",    0.9,
      ("from_server", "mass_reset", "response_partial"),        (),
      "many connections reset by the backend at one instant, mid-response: the process died"),
    R("restart_mass_reset",              "backend_restart",    "server",    0.75,
      ("from_server", "mass_reset", "nothing_in_flight", "idle_gap"), (),
      "the server reset many connections at one instant with nothing in flight on them: "
      "it restarted or recycled its workers"),
    R("crash_then_refused",              "backend_crash",      "server",    0.85,
      ("from_server", "refused_after", "request_outstanding"),  (),
      "the backend reset a request and then refused new connections: it crashed and "
      "restarted"),
    R("reset_mid_response",              "backend_crash",      "server",    0.7,
      ("from_server", "response_partial"),                      (),
      "the backend reset the connection in the middle of a response"),
    R("reset_with_request_outstanding",  "backend_crash",      "server",    0.6,
      ("from_server", "request_outstanding"),                   ("server_spoke_first",
                                                                 "client_data_unacked"),
      "the backend reset the connection while a request was outstanding"),
    G("reset_mid_request",               "backend_crash",      "server",    0.4,
      ("from_server", "request_outstanding", "client_data_unacked"), (),
      "the server reset the connection while the request was still arriving"),
    R("client_abort_not_tls",            "client_abort",       "client",    0.6,
      ("from_client", "tls_reply_not_tls"),                     ("peer_closed_first",),
      "the client started TLS, the server answered in another protocol, the client gave up"),
    R("client_abort_still_arriving",     "client_abort",       "client",    0.7,
      ("from_client", "peer_still_sending", "peer_spoke_last"), RQ,
      "the client reset the connection while the server's data was still arriving"),
    R("client_abort_waited",             "client_abort",       "client",    0.65,
      ("from_client", "client_waited"),                         RQ,
      "the client's message was acknowledged but never answered; it gave up and reset"),
    R("client_abort_request",            "client_abort",       "client",    0.8,
      ("from_client", "request_outstanding"),                   (),
      "the client reset the connection with its request unanswered (client gave up, "
      "proxy timeout or worker exit)"),
    R("client_abort_response",           "client_abort",       "client",    0.8,
      ("from_client", "response_partial"),                      (),
      "the client reset the connection while the response was still arriving"),
    R("client_abort_unread",             "client_abort",       "client",    0.75,
      ("from_client", "peer_data_unread"),                      (),
      "the client reset the connection with data from the server unread"),
    # -- RST instead of FIN, nothing in flight lost: from whichever end
    R("abort_after_response",            "abortive_close",     "rst",       0.85,
      ("after_complete_response",),                             ("request_outstanding",
                                                                 "peer_data_unread"),
      "RST instead of FIN right after a complete response (SO_LINGER 0, or a client or "
      "proxy that closes that way)"),
    R("abort_http_done",                 "abortive_close",     "rst",       0.75,
      ("exchanges_complete",),                                  ("peer_data_unread",
                                                                 "sender_gave_up"),
      "RST instead of FIN after every request had its complete response: nothing in "
      "flight was lost"),
    R("abort_unread_after_response",     "abortive_close",     "server",    0.75,
      ("from_server", "response_ended_by_fin", "client_data_unacked"), (),
      "the server answered, closed, and reset the rest of the client's upload unread"),
    R("abort_after_fin_response",        "abortive_close",     "rst",       0.75,
      ("response_ended_by_fin",),                               ("peer_data_unread",
                                                                 "client_data_unacked"),
      "RST after a response the server's FIN completed: nothing in flight was lost"),
    R("abort_unread",                    "abortive_close",     "server",    0.75,
      ("from_server", "client_data_unacked", "both_spoke"),     ("request_outstanding",),
      "the server closed with unread data from the client"),
    R("abort_idle",                      "abortive_close",     "rst",       0.6,
      ("idle_connection", "app_http", "reused_connection"),     ("peer_data_unread",
                                                                 "own_data_unacked"),
      "RST instead of FIN on an idle connection after complete exchanges"),
    R("abort_after_reply",               "abortive_close",     "rst",       0.65,
      ("sender_spoke_last", "both_spoke"),                      (*RQ, "peer_data_unread",
                                                                 "own_data_unacked"),
      "RST instead of FIN after the sender's reply was acknowledged: nothing in flight"),
    R("abort_client_done",               "abortive_close",     "client",    0.65,
      ("from_client", "peer_spoke_last", "both_spoke"),         (*RQ, "peer_data_unread",
                                                                 "own_data_unacked"),
      "the client reset the connection after reading everything the server sent"),
    R("abort_own_fin",                   "abortive_close",     "rst",       0.7,
      ("reset_after_own_fin",),                                 ("peer_data_unread",
                                                                 "request_outstanding",
                                                                 "response_partial",
                                                                 "client_unanswered",
                                                                 "sender_gave_up"),
      "RST right after its own FIN, nothing in flight: an abortive close"),
    R("abort_after_peer_close",          "abortive_close",     "rst",       0.7,
      ("peer_closed_first",),                                   (*RQ, "peer_data_unread",
                                                                 "own_data_unacked"),
      "the other end closed first; this end read everything and reset instead of closing"),
    R("abort_after_goodbye",             "abortive_close",     "server",    0.65,
      ("from_server", "client_said_goodbye", "both_spoke"),     RQ,
      "the client's last, short message (a closing request) was answered by RST instead of "
      "FIN"),
    R("abort_after_banner",              "abortive_close",     "server",    0.6,
      ("from_server", "server_spoke_first", "peer_spoke_last", "rst_soon_after_peer"), (),
      "the server (it had spoken first) reset the connection on what the client sent"),
    # -- nginx's side gave up on something in flight
    # -- too little to name a cause
    G("server_reset_unanswered",         "backend_crash",      "server",    0.4,
      ("from_server", "peer_spoke_last"),                       (),
      "the server reset the connection after the client's last message, without answering"),
    G("client_reset_waiting",            "client_abort",       "client",    0.4,
      ("from_client", "sender_spoke_last"),                     (),
      "the client reset the connection after its last message"),
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
    best_guess: str | None = None


#: each row's needs and unless as sets (classify compares them with the facts' names)
_SETS = tuple((frozenset(r.needs), frozenset(r.unless), r) for r in RULES)


def classify(facts: dict[str, Fact]) -> Verdict:
    """First matching rule wins; the verdict lists the facts it matched."""
    names = facts.keys()
    for needs, unless, r in _SETS:
        if needs <= names and names.isdisjoint(unless):
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
                r.best_guess,
            )
    sender = (
        "client" if "from_client" in facts else "server" if "from_server" in facts else "unknown"
    )
    return Verdict(
        "unknown", sender, 0.3, "none", "no rule matched: too little evidence for a cause", [],
        list(facts.values()),
    )  # fmt: skip


def decided(facts: dict[str, Fact], unsure: Collection[str]) -> Verdict | None:
    """The verdict of ``facts`` whatever each fact named in ``unsure`` turns
    out to be (present or not), or None when one of them could change it.

    The rows are read as :func:`classify` reads them, each one's test three-
    valued: a row that might match before the first row sure to match leaves
    the verdict open. The verdict returned lists only the sure facts."""
    sure = {k: v for k, v in facts.items() if k not in unsure}

    def absent(n: str) -> bool:
        return n not in sure and n not in unsure

    for r in RULES:
        if any(absent(n) for n in r.needs) or any(n in sure for n in r.unless):
            continue  # cannot match
        if all(n in sure for n in r.needs) and all(absent(n) for n in r.unless):
            return classify(sure)  # (every row before it cannot match: this one)
        return None  # might match or not
    return classify(sure)


def table_text() -> str:
    """The rules table as text (for docs and `pcapreset rules`)."""
    lines = []
    for r in RULES:
        need = " & ".join(r.needs)
        if r.unless:
            need += "  unless " + " | ".join(r.unless)
        cause = r.cause if r.best_guess is None else f"unknown({r.best_guess})"
        lines.append(f"{r.name:32} {cause:26} {r.sender:10} {r.confidence:.2f}  {need}")
    return "\n".join(lines)
