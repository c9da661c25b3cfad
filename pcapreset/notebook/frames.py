"""frames: the analysis as pandas DataFrames, for notebooks and exports.

    >>> import pcapreset
    >>> a = pcapreset.load("backend.pcap")
    >>> a.resets["cause"].value_counts()      # every cause code, zeros included
    >>> a.packets(a.resets.conn_id.iloc[0])   # one connection's packets

:func:`load` runs the same engine and report as ``pcapreset analyze`` and turns
it into tables. Only per-connection state is kept from the main pass;
:meth:`Analysis.packets` re-reads the capture file(s) for one connection's
packets when asked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingExtraError
from ..errors import extra_hint as hint

try:
    import pandas as pd
except ImportError:
    raise MissingExtraError(
        hint("pandas", "the notebook API (pcapreset.load, --export, --plot)")
    ) from None

from ..api import _paths, analyze
from ..errors import PcapResetError
from ..interpret.findings import FINDING_CODES
from ..interpret.rules import CAUSES
from ..report.columns import CONN_COLUMNS, TIME_DECIMALS
from ..report.model import Report, require_all_conns
from ..track.connstate import CONN_STATES, conn_state
from ..track.flowid import community_id
from .dtypes import _cat, _utc, reset_columns
from .files import export_tables
from .packets import packets_frame

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def load(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    port: int | None = None,
    **options: Any,
) -> Analysis:
    """Analyse capture file(s) and return the flow tables as DataFrames.

    Same engine and verdicts as ``pcapreset analyze``; several files are one
    timeline. ``options`` go to :func:`pcapreset.analyze` (e.g.
    ``nginx_keepalive_s``, ``nginx_conf``, ``nginx_log``). Raises
    :class:`pcapreset.errors.PcapResetError` on bad input.
    """
    files = _paths(paths)
    options.pop("evict", None)  # the tables need every connection
    rep = analyze(files, port=port, evict=False, **options)
    return from_report(rep, files, port)


def from_report(rep: Report, paths: Sequence[str], port: int | None = None) -> Analysis:
    """Tables for a :class:`~pcapreset.report.Report` already built (the CLI's)
    with every connection (``analyze(..., evict=False)``)."""
    require_all_conns(rep.result)
    eps = _Endpoints(rep)
    return Analysis(
        report=rep,
        paths=list(paths),
        port=port,
        connections=connections_frame(rep, eps),
        resets=resets_frame(rep, eps),
        findings=findings_frame(rep.findings),
        summary=rep.summary(),
    )


class _Endpoints:
    """Endpoint key -> ('ip:port', ip, port), with the IP text cached per address."""

    def __init__(self, rep: Report) -> None:
        self.book = rep.result.book
        self._ip: dict[int, str] = {}

    def ip(self, key: int) -> str:
        a = key >> 16
        s = self._ip.get(a)
        if s is None:
            s = self._ip[a] = self.book.ip(a)
        return s

    def text(self, key: int) -> str:
        ip = self.ip(key)
        return f"[{ip}]:{key & 0xFFFF}" if ":" in ip else f"{ip}:{key & 0xFFFF}"

    def columns(self, keys: list[int], role: str) -> dict[str, Any]:
        return {
            role: [self.text(k) for k in keys],
            f"{role}_ip": [self.ip(k) for k in keys],
            f"{role}_port": np.asarray([k & 0xFFFF for k in keys], dtype="int32"),
        }


# ------------------------------------------------------------------ tables
def connections_frame(rep: Report, eps: _Endpoints | None = None) -> pd.DataFrame:
    """One row per TCP connection (the rows of ``pcapreset conns``, typed),
    indexed by ``conn_id`` (the ``conn_id`` column of the resets table)."""
    eps = eps or _Endpoints(rep)
    conns = rep.result.conns
    last_cause = rep.last_reset_causes()
    start = np.round(np.asarray([c.start for c in conns], dtype="float64"), TIME_DECIMALS)
    end = np.round(np.asarray([c.end for c in conns], dtype="float64"), TIME_DECIMALS)
    cols: dict[str, Any] = {"conn_id": np.asarray([c.id for c in conns], dtype="int64")}
    cols |= eps.columns([c.client for c in conns], "client")
    cols |= eps.columns([c.server for c in conns], "server")
    cols["community_id"] = pd.array(
        [
            community_id(eps.ip(c.client), eps.ip(c.server), c.client & 0xFFFF, c.server & 0xFFFF)
            for c in conns
        ],
        dtype="string",
    )
    cols |= {
        "start": _utc(start),
        "end": _utc(end),
        "duration_s": np.round(end - start, TIME_DECIMALS),
        "client_bytes": [c.c.bytes for c in conns],
        "server_bytes": [c.s.bytes for c in conns],
        "client_packets": [c.c.pkts for c in conns],
        "server_packets": [c.s.pkts for c in conns],
        "packets": [c.packets for c in conns],
        "conn_state": _cat([conn_state(c) for c in conns], CONN_STATES),
        "history": pd.array([c.history for c in conns], dtype="string"),
        "requests": [c.requests for c in conns],
        "completed_requests": [c.completed_exchanges for c in conns],
        "resets": [len(c.rst_events) for c in conns],
        "reset_cause": _cat([last_cause.get(c.id) for c in conns], CAUSES),
        "client_retrans": [c.c.retrans for c in conns],
        "server_retrans": [c.s.retrans for c in conns],
        "role_rule": pd.array([c.role_rule for c in conns], dtype="string"),
    }
    df = pd.DataFrame(cols)[list(CONN_COLUMNS)]  # (the vocabulary of `pcapreset conns`)
    for k in ("client_bytes", "server_bytes", "client_packets", "server_packets", "packets"):
        df[k] = df[k].astype("int64")
    return df.set_index("conn_id")


def resets_frame(rep: Report, eps: _Endpoints | None = None) -> pd.DataFrame:
    """One row per RST event, with the JSON contract's fields (same values)."""
    eps = eps or _Endpoints(rep)
    rows = [rep.reset_json(r) for r in rep.resets]
    n = len(rows)

    def col(name: str) -> list:
        return [row[name] for row in rows]

    cols: dict[str, Any] = {
        "conn_id": np.asarray(col("conn_id"), dtype="int64"),
        "ts": _utc(col("ts")),
    }
    cols |= eps.columns([r.conn.client for r in rep.resets], "client")
    cols |= eps.columns([r.conn.server for r in rep.resets], "server")
    cols |= reset_columns(col, n)
    return pd.DataFrame(cols)


def findings_frame(findings: list[dict]) -> pd.DataFrame:
    """One row per finding code: ``{cause, count, evidence, flows}``."""
    codes = list(FINDING_CODES) + sorted({f["cause"] for f in findings} - set(FINDING_CODES))
    n = len(findings)
    return pd.DataFrame(
        {
            "cause": _cat([f["cause"] for f in findings], codes),
            "count": np.asarray([f["count"] for f in findings], dtype="int64"),
            "evidence": pd.Series(
                [f["evidence"] for f in findings], dtype="object", index=range(n)
            ),
            "flows": pd.Series([f["flows"] for f in findings], dtype="object", index=range(n)),
        }
    )


# ---------------------------------------------------------------- Analysis
@dataclass
class Analysis:
    """The tables of one analysis. ``report`` is the full :class:`Report`."""

    report: Report
    paths: list[str]
    port: int | None
    connections: pd.DataFrame
    resets: pd.DataFrame
    findings: pd.DataFrame
    summary: dict
    _packets: dict[int, pd.DataFrame] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        names = ", ".join(os.path.basename(p) for p in self.paths)
        return (
            f"<Analysis {names}: {len(self.connections)} connections, "
            f"{len(self.resets)} resets, {len(self.findings)} findings>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: the capture, the resets by cause, the backend's idle
        timeout and what to change (the tables are attributes)."""
        from html import escape

        cap, s = self.capture, self.summary
        names = ", ".join(escape(os.path.basename(p)) for p in self.paths)
        span = cap.get("span_s")
        facts = [
            f"{cap.get('packets', 0):,} packets" + (f" over {span:.1f} s" if span else ""),
            f"{len(self.connections):,} connections",
            f"{len(self.resets):,} resets",
            f"{len(self.findings):,} findings",
        ]
        vantage = (cap.get("vantage") or {}).get("where")
        rows = "".join(
            f"<tr><td>{escape(str(c))}</td><td style='text-align:right'>{n:,}</td></tr>"
            for c, n in (s.get("by_cause") or {}).items()
        )
        parts = [f"<div><b>pcapreset</b> {names}: {escape(', '.join(facts))}"]
        if vantage:
            parts.append(f"<br>vantage: {escape(str(vantage))}")
        idle = s.get("server_idle_timeout_s")
        if idle is not None:
            parts.append(f"<br>backend idle timeout: ~{idle:g} s")
        if rows:
            parts.append(f"<table><tr><th>cause</th><th>resets</th></tr>{rows}</table>")
        recs = s.get("recommendations") or []
        if recs:
            items = "".join(f"<li>{escape(r)}</li>" for r in recs)
            parts.append(f"what to change:<ul>{items}</ul>")
        warnings = cap.get("warnings") or []
        if warnings:
            items = "".join(f"<li>{escape(str(w.get('message', w)))}</li>" for w in warnings)
            parts.append(f"warnings:<ul>{items}</ul>")
        return "".join(parts) + "</div>"

    @property
    def capture(self) -> dict:
        """The ``capture`` section of the JSON report (files, span, vantage, warnings)."""
        return self.report.capture_json()

    def to_json(self) -> dict:
        """The same JSON document as ``pcapreset analyze --format json``."""
        return self.report.to_json()

    def packets(self, conn_id: int) -> pd.DataFrame:
        """One connection's packets (re-read from the file(s); cached)."""
        conn_id = int(conn_id)
        if conn_id not in self._packets:
            self._packets[conn_id] = packets_frame(self.paths, self.report, conn_id)
        return self._packets[conn_id]

    def default_conn_id(self) -> int | None:
        """The connection of the first reset, else the one with most packets."""
        if len(self.resets):
            return int(self.resets["conn_id"].iloc[0])
        if len(self.connections):
            return int(self.connections.index[self.connections["packets"].argmax()])
        return None

    # ------------------------------------------------------------- plots
    def plot_resets_over_time(self, ax: Axes | None = None) -> Figure:
        """Resets per time bin by cause, on ``ax`` if given (its Figure is returned)."""
        from .plots import resets_over_time

        res = self.report.result
        span = None
        if res.first_ts is not None and res.last_ts is not None:
            span = (res.first_ts, res.last_ts)
        return resets_over_time(self.resets, span=span, ax=ax)

    def plot_idle_histogram(self, ax: Axes | None = None) -> Figure:
        """Idle time before each reset, with both timeouts, on ``ax`` if given."""
        from .plots import idle_histogram

        return idle_histogram(
            self.resets,
            self.summary.get("server_idle_timeout_s"),
            self.summary.get("nginx_keepalive_timeout_s"),
            ax=ax,
        )

    def plot_time_sequence(self, conn_id: int | None = None, ax: Axes | None = None) -> Figure:
        """Time-sequence graph of ``conn_id`` (default: :meth:`default_conn_id`),
        on ``ax`` if given (its Figure is returned)."""
        from .plots import time_sequence

        if conn_id is None:
            conn_id = self.default_conn_id()
            if conn_id is None:
                raise PcapResetError("no TCP connection in this capture")
        if conn_id not in self.connections.index:
            raise PcapResetError(f"no connection with id {conn_id}")
        rst = self.resets[self.resets["conn_id"] == conn_id]
        r = self.connections.loc[conn_id]
        title = f"connection {conn_id}: {r['client']} -> {r['server']} ({r['conn_state']})"
        return time_sequence(self.packets(conn_id), rst, title=title, ax=ax)

    # ------------------------------------------------------------ export
    def export(self, directory: str | os.PathLike, fmt: str = "parquet") -> list[Path]:
        """Write connections / resets / findings tables; returns the paths."""
        return export_tables(self, directory, fmt)
