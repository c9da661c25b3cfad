"""cluster.merge: the hosts' reports merged into one fleet report (docs/fleet.md).

Built from each host's ``analyze --format json`` report (the same verdicts),
so it knows nothing of the engine: per host and per backend server (resets by
cause, idle timeouts, advice), the fleet's totals, and the hosts that failed.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..interpret.rules import CAUSES, SENDERS

if TYPE_CHECKING:
    import pandas as pd

    from .run import Host

WIDTH = 79


def _ordered(counts: Counter[str], codes: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Counts in the codes' order (as in the analyze report), others after."""
    out = {c: counts[c] for c in codes if counts.get(c)}
    out.update({c: n for c, n in sorted(counts.items()) if c not in out and n})
    return out


def _servers(report: dict) -> list[dict]:
    """Per backend server of one host: resets by cause, idle timeout, first/last reset."""
    summary = report["summary"]
    known = {s["server"]: dict(s) for s in summary.get("servers", [])}
    idle = summary.get("server_idle_timeouts", {})
    by_server: dict[str, list[dict]] = {}
    for r in report["resets"]:
        by_server.setdefault(r["server"], []).append(r)
    names = sorted(set(known) | set(idle) | set(by_server))
    single_backend = summary.get("backend") if len(names) == 1 else None
    out = []
    for s in names:
        rs = by_server.get(s, [])
        entry = {
            "server": s,
            "backend": known.get(s, {}).get("backend", single_backend),
            "idle_timeout_s": known.get(s, {}).get("idle_timeout_s", idle.get(s)),
            "resets": len(rs),
            "by_cause": _ordered(Counter(r["cause"] for r in rs), CAUSES),
            "by_sender": _ordered(Counter(r["sender"] for r in rs), SENDERS),
            "first_reset_ts": min((r["ts"] for r in rs), default=None),
            "last_reset_ts": max((r["ts"] for r in rs), default=None),
        }
        out.append(entry)
    return out


def host_json(host: Host, entry: dict) -> dict:
    """One host's object in the fleet report (failed: with its one-line reason)."""
    base = {
        "host": host.name,
        "spec": host.spec,
        "files": list(host.files),
        "nginx_logs": list(host.nginx_logs),
        "status": entry["status"],
        "seconds": entry.get("seconds"),
        "cpu_s": entry.get("cpu_s"),
        "worker": entry.get("worker"),
    }
    if entry["status"] != "ok":
        return base | {"error": entry["error"]}
    rep = entry["report"]
    cap = rep["capture"]
    log = rep.get("nginx_log")
    return base | {
        "packets": cap["packets"],
        "flows": rep["flows"],
        "first_ts": cap["first_ts"],
        "last_ts": cap["last_ts"],
        "span_s": cap["span_s"],
        "vantage": cap["vantage"],
        "warnings": cap["warnings"],
        "summary": rep["summary"],
        "servers": _servers(rep),
        "findings": rep["findings"],
        "nginx_log": None
        if log is None
        else {"upstream_errors": log["upstream_errors"], "explained": log["explained"]},
        "resets": rep["resets"],
    }


@dataclass
class FleetReport:
    """The merged fleet report: ``hosts`` (every host's object), ``failed``."""

    hosts: list[dict]
    scheduler: str
    workers: int
    wall_s: float
    start_s: float = 0.0  # of wall_s: starting the local cluster / connecting

    @classmethod
    def merge(
        cls,
        results: list[tuple[Host, dict]],
        scheduler: str,
        workers: int,
        wall_s: float,
        start_s: float = 0.0,
    ) -> FleetReport:
        return cls([host_json(h, e) for h, e in results], scheduler, workers, wall_s, start_s)

    @property
    def ok(self) -> list[dict]:
        return [h for h in self.hosts if h["status"] == "ok"]

    @property
    def failed(self) -> list[dict]:
        return [
            {"host": h["host"], "files": h["files"], "error": h["error"]}
            for h in self.hosts
            if h["status"] != "ok"
        ]

    # ------------------------------------------------------------ merge
    def totals(self) -> dict:
        by_cause: Counter[str] = Counter()
        by_sender: Counter[str] = Counter()
        findings: Counter[str] = Counter()
        errors = explained = 0
        for h in self.ok:
            by_cause.update(h["summary"]["by_cause"])
            by_sender.update(h["summary"]["by_sender"])
            for f in h["findings"]:
                findings[f["cause"]] += f["count"]
            if h["nginx_log"] is not None:
                errors += h["nginx_log"]["upstream_errors"]
                explained += h["nginx_log"]["explained"]
        firsts = [h["first_ts"] for h in self.ok if h["first_ts"] is not None]
        lasts = [h["last_ts"] for h in self.ok if h["last_ts"] is not None]
        return {
            "hosts": len(self.hosts),
            "analysed": len(self.ok),
            "failed": len(self.hosts) - len(self.ok),
            "packets": sum(h["packets"] for h in self.ok),
            "flows": sum(h["flows"] for h in self.ok),
            "resets": sum(h["summary"]["resets"] for h in self.ok),
            "by_cause": _ordered(by_cause, CAUSES),
            "by_sender": _ordered(by_sender, SENDERS),
            "findings": dict(sorted(findings.items())),
            "nginx_upstream_errors": errors,
            "nginx_explained": explained,
            "first_ts": min(firsts, default=None),
            "last_ts": max(lasts, default=None),
        }

    def servers(self) -> list[dict]:
        """Per backend server across hosts, the most resets first."""
        acc: dict[str, dict] = {}
        for h in self.ok:
            for s in h["servers"]:
                a = acc.setdefault(
                    s["server"],
                    {"server": s["server"], "hosts": [], "backends": set(), "idle": [],
                     "resets": 0, "by_cause": Counter(), "first": [], "last": []},
                )  # fmt: skip
                a["hosts"].append(h["host"])
                if s["backend"]:
                    a["backends"].add(s["backend"])
                if s["idle_timeout_s"] is not None:
                    a["idle"].append(s["idle_timeout_s"])
                a["resets"] += s["resets"]
                a["by_cause"].update(s["by_cause"])
                if s["first_reset_ts"] is not None:
                    a["first"].append(s["first_reset_ts"])
                    a["last"].append(s["last_reset_ts"])
        out = [
            {
                "server": a["server"],
                "hosts": a["hosts"],
                "backends": sorted(a["backends"]),
                "resets": a["resets"],
                "by_cause": _ordered(a["by_cause"], CAUSES),
                "idle_timeout_s_min": min(a["idle"], default=None),
                "idle_timeout_s_max": max(a["idle"], default=None),
                "first_reset_ts": min(a["first"], default=None),
                "last_reset_ts": max(a["last"], default=None),
            }
            for a in acc.values()
        ]
        return sorted(out, key=lambda s: (-s["resets"], s["server"]))

    def recommendations(self) -> list[dict]:
        """Each distinct recommendation once, with the hosts it applies to."""
        acc: dict[str, list[str]] = {}
        for h in self.ok:
            for text in h["summary"]["recommendations"]:
                acc.setdefault(text, []).append(h["host"])
        return [
            {"recommendation": t, "hosts": hs}
            for t, hs in sorted(acc.items(), key=lambda kv: -len(kv[1]))
        ]

    def to_json(self) -> dict:
        return {
            "tool": {"name": "pcapreset", "version": __version__},
            "fleet": {
                "scheduler": self.scheduler,
                "workers": self.workers,
                "wall_s": round(self.wall_s, 3),
                "start_s": round(self.start_s, 3),
            },
            "totals": self.totals(),
            "servers": self.servers(),
            "recommendations": self.recommendations(),
            "hosts": self.hosts,
            "failed": self.failed,
        }

    # ------------------------------------------------------------ tables
    def resets_frame(self) -> pd.DataFrame:
        """Every host's resets, one row each, ``host`` first; the other columns
        as :func:`pcapreset.frames.resets_frame` (the JSON contract's values)."""
        import numpy as np
        import pandas as pd

        from ..notebook.dtypes import _cat, reset_columns

        rows = [(h["host"], r) for h in self.ok for r in h["resets"]]
        hosts = [h["host"] for h in self.hosts]

        def col(name: str) -> list:
            return [r[name] for _h, r in rows]

        cols: dict[str, Any] = {
            "host": _cat([h for h, _r in rows], hosts),
            "conn_id": np.asarray(col("conn_id"), dtype="int64"),
            "ts": pd.to_datetime(np.asarray(col("ts"), dtype="float64"), unit="s", utc=True),
        }
        for role in ("client", "server"):
            eps = col(role)
            ips, ports = zip(*(_split_ep(e) for e in eps), strict=True) if eps else ((), ())
            cols |= {
                role: eps,
                f"{role}_ip": list(ips),
                f"{role}_port": np.asarray(ports, dtype="int32"),
            }
        cols |= reset_columns(col, len(rows))
        return pd.DataFrame(cols)

    def hosts_frame(self) -> pd.DataFrame:
        """One row per host: status, packets, flows, resets, error."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "host": h["host"],
                    "status": h["status"],
                    "packets": h.get("packets"),
                    "flows": h.get("flows"),
                    "resets": h["summary"]["resets"] if h["status"] == "ok" else None,
                    "seconds": h["seconds"],
                    "error": h.get("error"),
                }
                for h in self.hosts
            ]
        )

    # ------------------------------------------------------------ text
    def text_lines(self) -> Iterator[str]:
        """The text report, under 80 columns."""
        from .text import text_lines

        return text_lines(self)


def _split_ep(ep: str) -> tuple[str, int]:
    """("ip", port) of "ip:port" or "[v6]:port"."""
    ip, _, port = ep.rpartition(":")
    return ip.strip("[]"), int(port)


def fmt_ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def wrap(text: str, indent: str, first: str = "") -> list[str]:
    lines = textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first or indent,
        subsequent_indent=indent,
        break_on_hyphens=False,  # (options such as --keep-alive stay whole)
    )
    return lines or [first.rstrip()]
