"""cluster.text: the fleet report as text, every line under 80 columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .merge import fmt_ts, wrap

if TYPE_CHECKING:
    from .merge import FleetReport

#: hosts named under a recommendation before "(+N more)"
HOSTS_NAMED = 6


def _fit(s: str, width: int) -> str:
    """``s`` cut to ``width`` characters ("~" marks a cut)."""
    return s if len(s) <= width else s[: width - 1] + "~"


def _causes(by_cause: dict[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in by_cause.items()) or "-"


def _idle(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return "-"
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.1f}-{hi:.1f}"


def _names(hosts: list[str]) -> str:
    named = ", ".join(hosts[:HOSTS_NAMED])
    return named + (f" (+{len(hosts) - HOSTS_NAMED} more)" if len(hosts) > HOSTS_NAMED else "")


def _row(head: str, causes: str) -> list[str]:
    """A table row whose last column (the causes) wraps under itself."""
    return wrap(causes, " " * len(head), first=head)


def text_lines(fr: FleetReport) -> Iterator[str]:
    t = fr.totals()
    yield from wrap(
        f"{t['hosts']} hosts: {t['analysed']} analysed, {t['failed']} failed; "
        f"{fr.workers} Dask workers ({fr.scheduler}), {fr.wall_s:.1f} s",
        "          ",
        "fleet     ",
    )
    yield from wrap(
        f"{t['packets']:,} packets, {t['flows']:,} TCP connections, {t['resets']:,} reset "
        f"events; {fmt_ts(t['first_ts'])} .. {fmt_ts(t['last_ts'])}",
        "          ",
        "captures  ",
    )
    if t["nginx_upstream_errors"]:
        yield (
            f"nginx     {t['nginx_upstream_errors']:,} upstream error lines, "
            f"{t['nginx_explained']:,} tied to the wire"
        )
    yield ""
    yield "resets by cause (all hosts)"
    if not t["by_cause"]:
        yield "  none"
    for cause, n in t["by_cause"].items():
        hosts = sum(1 for h in fr.ok if h["summary"]["by_cause"].get(cause))
        yield f"  {cause:<20} {n:>8,}  on {hosts} host{'s' if hosts != 1 else ''}"
    if t["findings"]:
        yield ""
        yield "findings (all hosts)"
        for cause, n in t["findings"].items():
            yield f"  {cause:<20} {n:>8,}"
    servers = fr.servers()
    if servers:
        yield ""
        yield "backend servers (all hosts)"
        yield f"{'server':<23} {'hosts':>5} {'resets':>7} {'idle_s':>9}  causes"
        for s in servers:
            head = (
                f"{_fit(s['server'], 23):<23} {len(s['hosts']):>5} {s['resets']:>7,} "
                f"{_idle(s['idle_timeout_s_min'], s['idle_timeout_s_max']):>9}  "
            )
            yield from _row(head, _causes(s["by_cause"]))
            if s["first_reset_ts"] is not None:
                yield f"{'':<23} first reset {fmt_ts(s['first_reset_ts'])}"
    if fr.ok:
        yield ""
        yield "hosts"
        yield f"{'host':<18} {'packets':>11} {'conns':>8} {'resets':>7} {'s':>6}  causes"
        for h in fr.ok:
            head = (
                f"{_fit(h['host'], 18):<18} {h['packets']:>11,} {h['flows']:>8,} "
                f"{h['summary']['resets']:>7,} {h['seconds'] or 0:>6.1f}  "
            )
            yield from _row(head, _causes(h["summary"]["by_cause"]))
            if len(h["servers"]) > 1:
                for s in h["servers"]:
                    sub = f"  {_fit(s['server'], 38):<38} {s['resets']:>7,} {'':>6}  "
                    yield from _row(sub, _causes(s["by_cause"]))
    recs = fr.recommendations()
    if recs:
        yield ""
        yield "what to change"
        for r in recs:
            yield from wrap(r["recommendation"], "    ", "  - ")
            yield from wrap(_names(r["hosts"]), "           ", "    hosts: ")
    if fr.failed:
        yield ""
        yield f"failed hosts ({len(fr.failed)})"
        for f in fr.failed:
            yield from wrap(f["error"], "    ", f"  {f['host']}: ")
