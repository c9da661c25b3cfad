"""The rules table: well-formed, first match wins, unknown when nothing fits."""

from __future__ import annotations

from pcapreset.interpret.evidence import FACT_NAMES, Fact
from pcapreset.interpret.rules import CAUSES, RULES, SENDERS, classify, table_text


def facts(*names: str) -> dict[str, Fact]:
    return {n: Fact(n, f"text of {n}") for n in names}


def test_every_rule_names_real_facts_causes_and_senders() -> None:
    for r in RULES:
        assert set(r.needs) <= FACT_NAMES, (r.name, set(r.needs) - FACT_NAMES)
        assert set(r.unless) <= FACT_NAMES, (r.name, set(r.unless) - FACT_NAMES)
        assert r.needs, r.name
        assert r.cause in CAUSES and r.cause != "unknown"
        assert r.sender in SENDERS or r.sender == "rst"
        assert 0 < r.confidence <= 1
        assert r.says and len(r.says) < 120


def test_rule_names_unique_and_every_reset_cause_has_a_rule() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    # mtu_blackhole is a finding (no RST); unknown is the fallback
    assert {r.cause for r in RULES} == set(CAUSES) - {"mtu_blackhole", "unknown"}


def test_first_match_wins() -> None:
    # a forged-looking RST that also fits a keep-alive race: the middlebox row is first
    f = facts("from_server", "request_outstanding", "fin_crossed_request", "reused_connection")
    assert classify(f).rule == "keepalive_race_crossing"
    f.update(facts("ttl_mismatch"))
    v = classify(f)
    assert (v.rule, v.cause, v.sender) == ("forged_ttl", "middlebox", "middlebox")
    order = [r.name for r in RULES]
    assert order.index("forged_ttl") < order.index("keepalive_race_crossing")


def test_unless_blocks_a_row() -> None:
    # a SYN refused by a middlebox-looking TTL is still "refused" (no other packets to judge)
    v = classify(facts("from_server", "rst_answers_syn", "ttl_mismatch"))
    assert v.rule == "refused"


def test_verdict_lists_matched_facts_first_then_the_rest() -> None:
    f = facts("from_client", "bare_rst", "client_fin_before")
    v = classify(f)
    assert (v.cause, v.sender, v.rule) == ("client_abort", "client", "client_reset")
    assert [x.name for x in v.matched] == ["from_client"]
    assert {x.name for x in v.evidence} == set(f)


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
