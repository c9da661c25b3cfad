"""Agreement with Zeek (issue 3, section 7).

``../shared/corpus/public/zeek_conn_truth.tsv`` holds the ``conn_state`` and
``history`` that Zeek's own btest baselines record for 1,477 connections in the
public traces. We rebuild the connections of each trace with the engine, pair them
with Zeek's rows by endpoints, and measure how often ``conn_state`` agrees. A
connection whose client/server are the other way round from Zeek's orig/resp counts
as a (role) disagreement. The remaining disagreements are explained in
docs/zeek-agreement.md.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
from conftest import CORPUS

from pcapreset.engine.run import run
from pcapreset.errors import PcapResetError
from pcapreset.track.connstate import conn_state

TRUTH = CORPUS / "zeek_conn_truth.tsv"
MIN_AGREEMENT = 0.95
#: history letters that depend on the Zeek version (T, W: not in the 2015 baselines)
#: or on things we do not model (G content gaps, X analyzer limit, C checksums)
_UNMODELLED = re.compile(r"[TtWwGgXxCc]")

pytestmark = pytest.mark.skipif(not TRUTH.is_file(), reason=f"{TRUTH} not found")


@dataclass
class Ours:
    client: str
    server: str
    conn_state: str
    history: str


@dataclass
class Tally:
    agree: int = 0
    total: int = 0
    kinds: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.agree / self.total if self.total else 1.0


def _endpoint(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _truth() -> dict[str, list[dict[str, str]]]:
    by_trace: dict[str, list[dict[str, str]]] = defaultdict(list)
    with TRUTH.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            by_trace[row["trace_file"]].append(row)
    return by_trace


def _analyse(trace: str) -> list[Ours] | str:
    try:
        res = run([str(CORPUS / trace)])
    except PcapResetError as e:
        return str(e)
    return [
        Ours(res.endpoint(c.client), res.endpoint(c.server), conn_state(c), c.history)
        for c in res.conns
    ]


@pytest.fixture(scope="module")
def truth() -> dict[str, list[dict[str, str]]]:
    return _truth()


@pytest.fixture(scope="module")
def ours(truth) -> dict[str, list[Ours] | str]:
    """Engine output per trace, computed once for the module."""
    return {trace: _analyse(trace) for trace in truth}


def compare(
    rows: list[dict[str, str]], conns: list[Ours] | str, column: str, norm=lambda s: s
) -> Tally:
    """Pair Zeek rows with our connections on the same endpoints.

    Several connections may share a 4-tuple (port reuse, Zeek's close delay), and
    the baselines carry no timestamps: pair equal values first (a multiset match),
    then count what is left as role, value or missing disagreements.
    """
    t = Tally()
    rows = [r for r in rows if r[column] != "-"]
    if isinstance(conns, str):
        t.total = len(rows)
        t.kinds["unreadable: " + conns.split(":")[-1].strip()[:60]] += len(rows)
        return t
    free: dict[frozenset, list[Ours]] = defaultdict(list)
    for c in conns:
        free[frozenset((c.client, c.server))].append(c)
    left = []
    for r in rows:
        t.total += 1
        orig, resp = _endpoint(r["orig_h"], r["orig_p"]), _endpoint(r["resp_h"], r["resp_p"])
        pool = free[frozenset((orig, resp))]
        hit = next(
            (
                c
                for c in pool
                if (c.client, c.server) == (orig, resp)
                and norm(getattr(c, column)) == norm(r[column])
            ),
            None,
        )
        if hit is not None:
            pool.remove(hit)
            t.agree += 1
        else:
            left.append((r, orig, resp, pool))
    for r, orig, resp, pool in left:
        same = [c for c in pool if (c.client, c.server) == (orig, resp)]
        flipped = [c for c in pool if (c.client, c.server) == (resp, orig)]
        if same:
            c, kind = same[0], f"{column} {r[column]} vs {getattr(same[0], column)}"
        elif flipped:
            c, kind = flipped[0], "role (client/server swapped)"
        else:
            c, kind = None, "no such connection"
        if c is not None:
            pool.remove(c)
        t.kinds[kind] += 1
        got = "-" if c is None else f"{c.conn_state} {c.history}"
        t.examples.append(
            f"{r['trace_file']} {orig}->{resp}: zeek {r['conn_state']} {r['history']}, ours {got}"
        )
    return t


def _tally(truth, ours, column: str, norm=lambda s: s, select=lambda trace: True) -> Tally:
    total = Tally()
    for trace, rows in truth.items():
        if not select(trace):
            continue
        t = compare(rows, ours[trace], column, norm)
        total.agree += t.agree
        total.total += t.total
        total.kinds.update(t.kinds)
        total.examples.extend(t.examples)
    return total


def test_conn_state_agrees_with_zeek(truth, ours) -> None:
    t = _tally(truth, ours, "conn_state")
    h = _tally(truth, ours, "history")
    hn = _tally(truth, ours, "history", norm=lambda s: _UNMODELLED.sub("", s))
    other = _tally(truth, ours, "conn_state", select=lambda tr: tr != "zeek__llc.pcap")
    print(f"\nconn_state agreement: {t.agree}/{t.total} = {t.rate:.3f}")
    print(f"  without zeek__llc.pcap (1,333 identical rows): {other.agree}/{other.total}")
    print(f"history agreement: {h.agree}/{h.total} = {h.rate:.3f}")
    print(f"  ignoring T W G X C letters: {hn.agree}/{hn.total} = {hn.rate:.3f}")
    for kind, n in t.kinds.most_common():
        print(f"  {n:4}  {kind}")
    for line in t.examples:
        print("   ", line)
    assert t.total >= 1400, "the truth file should hold ~1,463 rows with a conn_state"
    assert t.rate >= MIN_AGREEMENT, (
        f"conn_state agrees with Zeek on {t.rate:.3f} of {t.total} connections: {dict(t.kinds)}"
    )


#: traces whose Zeek rows each exercise one rule of Zeek's connection tracking
RULES = {
    # a SYN retransmitted after the RST,ACK that refused it is a new connection (IsReuse)
    "zeek__pop3__pop3.pcap": "SYN after RST starts a new connection",
    # RST after both FINs leaves both endpoints CLOSED (UpdateClosedState)
    "zeek__tls__imap-starttls.pcap": "RST after the FIN exchange stays SF",
    # FIN, then RST, then the peer's FIN: the RST is undone (UpdateEstablishedState)
    "zeek__tls__irc-starttls.pcap": "FIN, RST, peer FIN is SF",
    # packets more than tcp_close_delay (5 s) after a close start a new connection,
    # roles of those from the likely server port (80) are flipped ('^')
    "zeek__tunnels__Teredo.pcap": "close delay and role flipping",
    # a RST, then data 16 s later: a second, partial connection (RSTRH)
    "zeek__modbus__modbus-and-non-modbus-p502.pcap": "close delay after RST",
    # SYN-ACK first: Zeek flips the roles on the first pure ACK ('^h')
    "zeek__tcp__ctu-64702-888.pcap": "SYN-ACK-first connection",
    # 1,333 lone RSTs 60 s apart on one 4-tuple: 1,333 OTH connections
    "zeek__llc.pcap": "lone RSTs far apart are separate connections",
}


@pytest.mark.parametrize("trace", sorted(RULES))
def test_zeek_connection_rules(trace, truth, ours) -> None:
    rows = truth[trace]
    conns = ours[trace]
    assert not isinstance(conns, str), f"{trace} ({RULES[trace]}) unreadable: {conns}"
    t = compare(rows, conns, "conn_state")
    assert t.agree == t.total, f"{RULES[trace]}: {t.examples}"
    assert len(conns) == len(rows), f"{RULES[trace]}: {len(conns)} connections, Zeek {len(rows)}"
    h = compare(rows, conns, "history", norm=lambda s: _UNMODELLED.sub("", s))
    assert h.agree == h.total, f"{RULES[trace]}: {h.examples}"


# ----------------------------------------------------------------------------------
# Single facts of the replayed state machine on the product's own shape of traffic
# (backend on port 3000, which is not one of Zeek's likely server ports), where the
# public traces do not reach. Each packet list states one rule from Zeek's source.

C, S, CP, SP = "10.0.0.1", "10.0.0.2", 40000, 3000
_FL = {"S": 0x02, "SA": 0x12, "A": 0x10, "PA": 0x18, "FA": 0x11, "R": 0x04, "RA": 0x14}


def _conns(tmp_path, pkts: list[tuple[float, bool, str, int, int, int]]) -> list[Ours]:
    """pkts: (ts, from_client, flags, seq, ack, payload length) -> our connections."""
    from conftest import ipv4, pcap_bytes, tcp, write

    recs = []
    for ts, up, fl, seq, ack, n in pkts:
        a, b, p, q = (C, S, CP, SP) if up else (S, C, SP, CP)
        recs.append(
            (1_700_000_000.0 + ts, ipv4(a, b, tcp(p, q, seq, ack, _FL[fl], payload=b"x" * n)))
        )
    path = write(tmp_path / "t.pcap", pcap_bytes(recs, linktype=101))
    res = run([str(path)])
    return [
        Ours(res.endpoint(c.client), res.endpoint(c.server), conn_state(c), c.history)
        for c in res.conns
    ]


def test_reordered_handshake_is_one_connection(tmp_path) -> None:
    # IsReuse: a SYN whose seq is one before what the earlier SYN-ACK acknowledged
    # belongs to that connection (Zeek flips the roles back)
    got = _conns(
        tmp_path,
        [(0.0, False, "SA", 5000, 1001, 0), (0.0, True, "S", 1000, 0, 0),
         (0.001, True, "A", 1001, 5001, 0), (0.002, True, "PA", 1001, 5001, 10),
         (0.003, False, "PA", 5001, 1011, 20), (0.004, True, "FA", 1011, 5021, 0),
         (0.005, False, "FA", 5021, 1012, 0)],
    )  # fmt: skip
    assert len(got) == 1
    assert (got[0].client, got[0].server, got[0].conn_state) == (f"{C}:{CP}", f"{S}:{SP}", "SF")


def test_syn_after_refusal_is_a_new_connection(tmp_path) -> None:
    # IsReuse: once a side has closed (a RST counts), any SYN starts a new connection,
    # the same ISN too (Windows retries a refused connect; zeek__pop3__pop3.pcap)
    got = _conns(
        tmp_path,
        [(0.0, True, "S", 1000, 0, 0), (0.001, False, "RA", 0, 1001, 0),
         (0.5, True, "S", 1000, 0, 0), (0.501, False, "RA", 0, 1001, 0)],
    )  # fmt: skip
    assert [(c.conn_state, c.history) for c in got] == [("REJ", "Sr"), ("REJ", "Sr")]


def test_syn_retransmissions_stay_one_attempt(tmp_path) -> None:
    # deliberately not Zeek's tcp_attempt_delay (5 s): Linux retries at 1, 3, 7 s and
    # the backlog-overflow finding needs the retransmissions on one connection
    got = _conns(tmp_path, [(t, True, "S", 1000, 0, 0) for t in (0.0, 1.0, 3.0, 7.0)])
    assert [(c.conn_state, c.history) for c in got] == [("S0", "S")]


def test_close_delay_splits_late_packets(tmp_path) -> None:
    # ConnectionClosed: a RST completes the close, the connection is removed
    # tcp_close_delay (5 s) later; a RST 2 s after it still belongs to it
    got = _conns(
        tmp_path,
        [(0.0, True, "RA", 1000, 5000, 0), (2.0, True, "RA", 1000, 5000, 0),
         (60.0, True, "RA", 1000, 5000, 0)],
    )  # fmt: skip
    assert [(c.conn_state, c.history) for c in got] == [("OTH", "R"), ("OTH", "R")]


_RSTR = [
    (0.0, True, "S", 1000, 0, 0), (0.001, False, "SA", 5000, 1001, 0),
    (0.002, True, "A", 1001, 5001, 0), (0.003, True, "PA", 1001, 5001, 10),
    (0.004, False, "PA", 5001, 1011, 20), (0.005, True, "A", 1011, 5021, 0),
    (5.0, False, "FA", 5021, 1011, 0), (5.0, True, "PA", 1011, 5021, 10),
    (5.001, False, "R", 5022, 0, 0),
]  # fmt: skip


@pytest.mark.parametrize(("late", "conns"), [(4.0, 1), (6.0, 2)])
def test_reset_after_own_fin_is_removed_after_reset_delay(tmp_path, late, conns) -> None:
    # UpdateClosedState: a RST after its sender's own FIN, the peer not closed,
    # sets a ResetTimer tcp_reset_delay (5 s) later that removes the connection
    # (a Zeek btest: history ShADadtFRfr expires then, not after the 5-minute
    # inactivity timeout). A packet 4 s after the RST still belongs to it, one
    # 6 s after starts a new connection.
    got = _conns(tmp_path, [*_RSTR, (5.001 + late, True, "A", 1021, 5022, 0)])
    assert len(got) == conns
    assert (got[0].conn_state, got[0].history) == ("RSTR", "ShADdfr")


def test_keepalive_race_is_sf_as_in_zeek(tmp_path) -> None:
    # server FIN, a request crossing it, server RST, client FIN: Zeek turns the
    # server's RESET back into CLOSED (UpdateEstablishedState: "FIN followed by a
    # RST ... actually normal termination"), as zeek__tls__irc-starttls.pcap shows.
    # The resets stay visible in the history (r) and in the resets column.
    got = _conns(
        tmp_path,
        [(0.0, True, "S", 1000, 0, 0), (0.001, False, "SA", 5000, 1001, 0),
         (0.002, True, "A", 1001, 5001, 0), (0.003, True, "PA", 1001, 5001, 10),
         (0.004, False, "PA", 5001, 1011, 20), (0.005, True, "A", 1011, 5021, 0),
         (5.0, False, "FA", 5021, 1011, 0), (5.0, True, "PA", 1011, 5021, 10),
         (5.001, False, "R", 5022, 0, 0), (5.002, True, "FA", 1021, 5022, 0),
         (5.003, False, "R", 5022, 0, 0)],
    )  # fmt: skip
    assert [(c.conn_state, c.history) for c in got] == [("SF", "ShADdfrF")]
