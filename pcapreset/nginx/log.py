"""log: nginx error.log / access.log lines about an upstream -> the wire.

Ties each upstream error line of nginx's error.log (and an access.log with
``$upstream_addr $upstream_status``; both read by :mod:`.parse`), one to one,
to the reset or finding on the wire that produced it: same second (±1 s,
nginx logs whole seconds), same upstream address, a compatible kind of
failure, and the same request URI where the capture shows it. The URI in
``upstream:`` is ``u->uri``, the request target nginx wrote on the upstream
connection, so it can be compared with the request seen on the wire.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from collections import Counter

from ..textsafe import utc
from .match import COMPAT, MATCH_WINDOW_S, Leftovers, match
from .parse import _ERRNO_RE, MAX_LINE, AccessLine, ErrorLine, LogSet, _fmt_offset
from .wire import WireEvent, retry_events, wire_events

__all__ = ["COMPAT", "MATCH_WINDOW_S", "Leftovers", "WireEvent", "match", "wire_events"]

WIDTH = 80
#: an access.log request may end this long after its upstream error line
ACCESS_WINDOW_S = 120.0


# ---------------------------------------------------------------- section
def correlate(rep, logs: LogSet) -> tuple[dict, list[str]]:
    """The ``nginx_log`` JSON section and its text-report lines."""
    first, last = rep.result.first_ts, rep.result.last_ts
    if first is None or last is None:
        inside: list[ErrorLine] = []
    else:
        inside = [e for e in logs.errors if e.ts + 1.0 >= first - 1.0 and e.ts <= last + 1.0]
    events = wire_events(rep)
    assigned = match(inside, events)
    _tie_access(logs.access, inside)
    left = None
    if len(assigned) < len(inside):
        conns = [(rep.ep(c.server), rep.ep(c.client), c) for c, _j in rep.result.each_conn()]
        assigned |= _retried(rep, inside, assigned, events, conns)
        left = Leftovers(events, set(assigned.values()), conns)
    errors = []
    for i, e in enumerate(inside):
        d = e.as_dict()
        j = assigned.get(i)
        d["explained_by"] = events[j].as_dict() if j is not None else None
        if left is not None and j is None:
            detail, general = left.reason(e)
            d["unexplained"] = f"{detail}: {general}" if detail else general
            d["_detail"], d["_why"] = detail, general
        errors.append(d)
    section = {
        "files": logs.files,
        "time_zone": logs.time_zone,
        "upstream_errors": len(inside),
        "explained": len(assigned),
        "outside_capture": len(logs.errors) - len(inside),
        "errors": errors,
    }
    if "server" in rep.ctx.vantage.as_dict().get("where", ""):
        section["vantage_server_side"] = True
    hint = _tz_hint(logs.errors, inside, first, last)
    if logs.long_lines:
        skipped = f"{logs.long_lines} line(s) longer than {MAX_LINE} characters skipped"
        hint = f"{hint}; {skipped}" if hint else skipped
    if hint:
        section["warning"] = hint
    if logs.access:
        section["access_log"] = _access_summary(logs, inside, assigned, first, last)
    return section, _text(section, inside, assigned)


def _retried(rep, inside: list[ErrorLine], assigned: dict[int, int], events, conns) -> dict:
    """Reset lines no event explains, tied to the idle connection nginx reused and
    its retry of the request on a new one (:func:`retry_events`), which this
    capture shows though the reset itself did not pass here. ``events`` grows by
    the retry events; returns line -> event index of the new ties."""
    left = [i for i, e in enumerate(inside) if i not in assigned and e.kind == "reset"]
    extra = retry_events(rep, [inside[i] for i in left], conns) if left else []
    if not extra:
        return {}
    got = match([inside[i] for i in left], extra)
    base = len(events)
    events.extend(extra)
    return {left[i]: base + j for i, j in got.items()}


def _tie_access(access: list[AccessLine], lines: list[ErrorLine]) -> None:
    """Each failed upstream try in access.log -> its error.log line (same upstream,
    same request, error line at or before the request's end)."""
    free = set(range(len(lines)))
    for a in sorted(access, key=lambda a: a.ts):
        if not a.failed_attempts:
            continue
        best = None
        for i in free:
            e = lines[i]
            if e.request != a.request or not (a.ts - ACCESS_WINDOW_S <= e.ts <= a.ts + 1.0):
                continue
            if e.upstream and e.upstream not in {x for x, _ in a.failed_attempts}:
                continue
            if best is None or abs(a.ts - e.ts) < abs(a.ts - lines[best].ts):
                best = i
        if best is not None:
            free.discard(best)
            a.error_line = lines[best]


def _access_summary(logs: LogSet, inside, assigned, first, last) -> dict:
    explained_lines = {id(inside[i]) for i in assigned}
    span = [a for a in logs.access if first is not None and first - 1 <= a.ts <= last + 2]
    bad = [a for a in span if a.status in (502, 504)]
    retried = [a for a in span if a.failed_attempts and a.status not in (502, 504)]
    return {
        "requests": len(span),
        "has_upstream_fields": logs.access_has_upstream,
        "status_502": sum(a.status == 502 for a in bad),
        "status_504": sum(a.status == 504 for a in bad),
        "bad_gateway_explained": sum(
            1 for a in bad if a.error_line is not None and id(a.error_line) in explained_lines
        ),
        "failed_tries_retried": len(retried),
    }


def _tz_hint(all_lines: list[ErrorLine], inside, first, last) -> str | None:
    """If no line falls inside the capture but a whole-hour shift would, say so."""
    if inside or not all_lines or first is None:
        return None
    for hours in sorted(range(-14, 15), key=abs):
        shift = hours * 3600
        hit = next((e for e in all_lines if first - 1 <= e.ts - shift <= last + 1), None)
        if hit is not None and hit.local is not None:
            used = int(hit.local.replace(tzinfo=dt.UTC).timestamp() - hit.ts)
            return (
                "no error.log line falls inside the capture's time span; read with "
                f"--nginx-tz {_fmt_offset(used + shift)} they would (error.log times carry "
                "no zone)"
            )
    return "no error.log line falls inside the capture's time span"


# ------------------------------------------------------------------- text
def _hms(ts: float) -> str:
    return utc("%H:%M:%S", ts)


def _wrap(text: str, first: str = "  ", rest: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest) or [first]


def _short(message: str) -> str:
    """Short form: "recv() failed (104: ...) while ..." -> "recv() failed (104)"."""
    head = message.split(" while ", 1)[0]
    return _ERRNO_RE.sub(lambda m: f"({m.group(1)})", head)


#: ties to a reset this capture point did not see: what stands in for it
_UNSEEN = {
    "idle_then_reset": " not seen here (the same device's later reset of the connection idle then)",
    "idle_then_retried": " not seen here (the idle connection nginx reused, and its retry of "
    "the request on a new connection)",
}


def _text(section: dict, inside: list[ErrorLine], assigned: dict[int, int]) -> list[str]:
    n, m = section["explained"], section["upstream_errors"]
    names = ", ".join(os.path.basename(f) for f in section["files"])
    out = _wrap(f"nginx log ({names}; times read as {section['time_zone']})", "", "  ")
    out.append(f"  {n} of {m} upstream errors explained by the capture")
    ties = Counter(
        (
            _short(e["message"]),
            e["explained_by"]["kind"],
            e["explained_by"]["cause"],
            _UNSEEN.get(e["explained_by"].get("how", ""), ""),
        )
        for e in section["errors"]
        if e["explained_by"]
    )
    for (msg, kind, cause, unseen), k in ties.most_common():
        out += _wrap(f"{k:5}  {msg} <- {cause} {kind}{unseen}", "  ", "         ")
    acc = section.get("access_log")
    if acc:
        bad = acc["status_502"] + acc["status_504"]
        out.append(
            f"  access.log: {acc['bad_gateway_explained']} of {bad} 502/504 responses "
            f"explained ({acc['status_502']} x 502, {acc['status_504']} x 504)"
        )
        if acc["failed_tries_retried"]:
            out += _wrap(
                f"{acc['failed_tries_retried']} request(s) got a 502/504 from a first try "
                "and were answered by a retry (proxy_next_upstream)",
                "  access.log: ",
                "    ",
            )
    if section["outside_capture"]:
        out.append(f"  {section['outside_capture']} upstream error line(s) outside the capture")
    if section.get("warning"):
        out += _wrap(section["warning"], "  warning: ", "    ")
    missing = [e for i, e in enumerate(inside) if i not in assigned]
    why = [(d.pop("_detail"), d.pop("_why")) for d in section["errors"] if "_why" in d]
    idle_here = any(d for d, _g in why)
    if (
        any(e.kind == "reset" for e in missing)
        and section.get("vantage_server_side")
        and not idle_here
    ):
        out += _wrap(
            "nginx got resets this capture on the backend's host does not show: a device "
            "in between (firewall, NAT/conntrack, load balancer) may have sent them; "
            "capture on nginx's host too",
            "  note: ",
            "    ",
        )
    if missing:
        out.append("  unexplained (time UTC, line, upstream, message):")
        for e, (detail, _general) in zip(missing[:20], why, strict=False):
            head = f"    {_hms(e.ts)} {e.line:5} {e.upstream or '-'} "
            room = max(WIDTH - len(head), 20)
            msg = _short(e.message)
            out.append(head + (msg if len(msg) <= room else msg[: room - 3] + "..."))
            if detail:
                out.append(f"      ({detail})")
        for text, k in Counter(g for _d, g in why[:20]).most_common():
            out += _wrap(f"{k} x {text}", "    why: ", "      ")
        if len(missing) > 20:
            out.append(f"    ... and {len(missing) - 20} more (see --format json)")
    return out


def attach(rep, logs: LogSet) -> None:
    """Add the ``nginx_log`` section (and its text lines) to a Report."""
    section, lines = correlate(rep, logs)
    rep.extra["nginx_log"] = section
    text = rep.extra.setdefault("_text_lines", [])
    text.extend(([""] if text else []) + lines)
