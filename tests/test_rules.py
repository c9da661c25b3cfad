"""The rules table: well-formed, first match wins, unknown when nothing fits."""

from __future__ import annotations

from pcapreset.interpret.evidence import FACT_NAMES
from pcapreset.interpret.fact import Fact
from pcapreset.interpret.rules import CAUSES, RULES, SENDERS, classify, table_text


def facts(*names: str) -> dict[str, Fact]:
    return {n: Fact(n, f"text of {n}") for n in names}


def test_every_rule_names_real_facts_causes_and_senders() -> None:
    for r in RULES:
        assert set(r.needs) <= FACT_NAMES, (r.name, set(r.needs) - FACT_NAMES)
        assert set(r.unless) <= FACT_NAMES, (r.name, set(r.unless) - FACT_NAMES)
        assert r.needs, r.name
        assert r.cause in CAUSES
        # a row is a cause, or an "unknown" (with the cause it leans to, if any)
        assert r.best_guess is None or r.cause == "unknown", r.name
        assert r.best_guess is None or r.best_guess in CAUSES
        assert r.confidence < 0.5 if r.cause == "unknown" else r.confidence >= 0.5, r.name
        assert r.sender in SENDERS or r.sender == "rst"
        assert 0 < r.confidence <= 1
        assert r.says and len(r.says) < 120


def test_rule_names_unique_and_every_reset_cause_has_a_rule() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    # mtu_blackhole is a finding (no RST); unknown is the fallback and the guess rows
    ruleless = {"mtu_blackhole", "unknown"}
    assert {r.cause for r in RULES} - {"unknown"} == set(CAUSES) - ruleless


def test_first_match_wins() -> None:
    # a forged-looking RST that also fits a keep-alive race: the middlebox row is first
    f = facts("from_server", "request_outstanding", "fin_crossed_request", "reused_connection")
    assert classify(f).rule == "keepalive_race_crossing"
    f.update(facts("ttl_mismatch"))
    v = classify(f)
    assert (v.rule, v.cause, v.sender) == ("forged_ttl", "middlebox", "middlebox")
    order = [r.name for r in RULES]
    assert order.index("forged_ttl") < order.index("keepalive_race_crossing")


def test_a_refused_syn_is_never_forged_by_ttl() -> None:
    # RST,ACK answering a SYN at once: TTL 1/255 quirks of BGP speakers are no forgery
    v = classify(facts("from_server", "rst_answers_syn", "ttl_mismatch"))
    assert v.rule == "refused"


def test_unless_blocks_a_row() -> None:
    # a lone RST after the handshake leans to an accept-queue abort, unless it ACKs
    # payload bytes (an open socket had received them)
    f = facts("from_server", "rst_after_handshake")
    assert (classify(f).rule, classify(f).best_guess) == ("accept_queue_abort", "backlog_overflow")
    f.update(facts("rst_acks_payload"))
    assert classify(f).rule != "accept_queue_abort"


def test_verdict_lists_matched_facts_first_then_the_rest() -> None:
    f = facts("from_client", "request_outstanding", "client_fin_before")
    v = classify(f)
    assert (v.cause, v.sender, v.rule) == ("client_abort", "client", "client_abort_request")
    assert [x.name for x in v.matched] == ["from_client", "request_outstanding"]
    assert {x.name for x in v.evidence} == set(f)


def test_an_ipid_jump_alone_is_no_forgery() -> None:
    v = classify(facts("from_server", "ipid_jump", "stateless_rst", "server_fin_before"))
    assert v.cause != "middlebox"
    # against the host's own RST shape (its other RSTs carry IP ID 0) it is
    v = classify(facts("from_server", "ipid_jump", "rst_shape_mismatch"))
    assert (v.cause, v.sender) == ("middlebox", "middlebox")


def test_client_abort_needs_something_in_flight() -> None:
    # nothing lost: an RST close after a complete exchange is abortive_close, from the client
    v = classify(facts("from_client", "after_complete_response", "app_http"))
    assert (v.cause, v.sender) == ("abortive_close", "client")
    # a lone RST with nothing around it: no cause
    assert classify(facts("from_client", "app_none")).cause == "unknown"


def test_mass_reset_of_idle_connections_is_a_restart_not_a_crash() -> None:
    idle = facts("from_server", "mass_reset", "nothing_in_flight", "idle_gap")
    assert (classify(idle).cause, classify(idle).rule) == ("backend_restart", "restart_mass_reset")
    # right after each one's reply (a client firing many requests): no restart
    busy = facts("from_server", "mass_reset", "nothing_in_flight", "sender_spoke_last",
                 "both_spoke")  # fmt: skip
    assert classify(busy).cause == "abortive_close"
    # with requests in flight the process died
    crash = facts("from_server", "mass_reset", "request_outstanding", "idle_gap")
    assert classify(crash).cause == "backend_crash"


def test_closes_together_then_reused_is_a_restart() -> None:
    """Server FINs less than 1 s after its last answer (no idle timer), several at
    once, then a request meets one: a shutdown or worker recycling."""
    f = facts("from_server", "request_outstanding", "server_fin_before", "reused_connection",
              "fin_crossed_request")  # fmt: skip
    assert classify(f).cause == "keepalive_race"
    f.update(facts("restart_closes"))
    assert (classify(f).cause, classify(f).rule) == ("backend_restart", "restart_closed_reused")
    # closes together with nothing reusing them: no reset to blame on it
    assert classify(facts("from_server", "restart_closes", "server_fin_before")).cause != (
        "backend_restart"
    )


def test_harmless_causes() -> None:
    v = classify(facts("from_server", "late_segment_no_request", "server_fin_before"))
    assert (v.cause, v.sender) == ("after_close", "server")
    v = classify(facts("from_client", "no_request", "syn_seen", "app_none"))
    assert (v.cause, v.sender) == ("probe", "client")


def test_weak_evidence_is_unknown_with_a_best_guess() -> None:
    v = classify(facts("from_server", "rst_after_handshake"))  # no burst of connects
    assert (v.cause, v.best_guess) == ("unknown", "backlog_overflow")
    assert v.confidence < 0.5


def test_unknown_when_nothing_matches_keeps_evidence_and_direction() -> None:
    f = facts("from_server", "bare_rst", "server_fin_before")  # closing, no request, no data
    v = classify(f)
    assert (v.cause, v.sender, v.rule) == ("unknown", "server", "none")
    assert {x.name for x in v.evidence} == set(f)
    assert classify({}).sender == "unknown"


def test_crash_needs_more_than_a_reused_request() -> None:
    race = facts("from_server", "request_outstanding", "reused_connection", "idle_gap",
                 "rst_soon_after_request")  # fmt: skip
    assert classify(race).cause == "keepalive_race"
    race.update(facts("mass_reset"))  # many at once: the process died, not a timer
    assert classify(race).cause == "backend_crash"


def test_table_text_shows_every_rule() -> None:
    text = table_text()
    for r in RULES:
        assert r.name in text and r.cause in text
