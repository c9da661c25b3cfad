"""plots: matplotlib Figures from the DataFrames of :mod:`pcapreset.frames`.

Figures are built with :class:`matplotlib.figure.Figure` directly, not
``pyplot``: no GUI backend is touched (works headless, nothing global to leak,
never ``plt.show()``); ``fig.savefig`` renders with Agg. In Jupyter a returned
Figure shows inline (``%matplotlib inline``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MissingExtraError
from ..errors import extra_hint as hint

try:
    import pandas as pd
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as e:
    raise MissingExtraError(hint(e.name or "matplotlib", "plotting (--plot)")) from None

from ..interpret.rules import CAUSES

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: one fixed colour per cause code, so every plot (and every capture) agrees
CAUSE_COLORS = {
    "keepalive_race": "#d62728",
    "backlog_overflow": "#9467bd",
    "backend_crash": "#8c564b",
    "abortive_close": "#ff7f0e",
    "connection_refused": "#7f7f7f",
    "client_abort": "#1f77b4",
    "middlebox": "#e377c2",
    "mtu_blackhole": "#bcbd22",
    "unknown": "#17becf",
}
DIR_COLORS = {"client": "#1f77b4", "server": "#2ca02c"}
SIZE = (9.0, 4.2)
DPI = 100


def _naive_utc(ts: pd.Series) -> np.ndarray:
    """tz-aware UTC timestamps -> numpy datetime64 (matplotlib's native dates)."""
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    """``ax`` and its Figure, or a new Figure with one Axes."""
    if ax is not None:
        # (an Axes of a SubFigure: that SubFigure)
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _empty(ax, text: str) -> None:  # type: ignore[no-untyped-def]
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def resets_over_time(
    resets: pd.DataFrame,
    span: tuple[float, float] | None = None,
    bins: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Reset events per time bin, stacked and coloured by cause.

    ``span`` (epoch seconds, e.g. the capture's first and last packet) sets the
    time axis, so quiet stretches of the capture show as empty bins. Drawn on
    ``ax`` when given (every plot here takes one), else on a new Figure; the
    Figure is returned.
    """
    fig, ax = _axes(ax)
    ax.set_title("TCP resets over time, by cause")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("reset events")
    if resets.empty:
        _empty(ax, "no TCP resets in this capture")
        return fig
    known = resets["ts"].notna().to_numpy()
    resets = resets[known]
    t = _naive_utc(resets["ts"])
    if not len(t):
        _empty(ax, "no reset with a valid timestamp")
        return fig
    lo, hi = t.min(), t.max()
    if span is not None and None not in span:
        lo = min(lo, np.datetime64(round(span[0] * 1e6), "us"))
        hi = max(hi, np.datetime64(round(span[1] * 1e6), "us"))
    if hi == lo:
        lo, hi = lo - np.timedelta64(1, "s"), hi + np.timedelta64(1, "s")
    n_bins = bins or int(min(60, max(10, np.sqrt(len(t)) * 3)))
    edges = lo + (hi - lo) * np.linspace(0.0, 1.0, n_bins + 1)
    present = [c for c in CAUSES if (resets["cause"] == c).any()]
    data = [t[(resets["cause"] == c).to_numpy()] for c in present]
    ax.hist(
        data,
        bins=edges,
        stacked=True,
        color=[CAUSE_COLORS[c] for c in present],
        label=[f"{c} ({len(d)})" for c, d in zip(present, data, strict=True)],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
    ax.legend(loc="upper left", fontsize="small", frameon=False, ncols=3)
    for label in ax.get_xticklabels():  # (this Axes only: the Figure may hold others)
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    return fig


def idle_histogram(
    resets: pd.DataFrame,
    server_idle_timeout_s: float | None,
    nginx_keepalive_timeout_s: float | None,
    ax: Axes | None = None,
) -> Figure:
    """``idle_before_s`` of the resets, with the two timeouts that race marked."""
    fig, ax = _axes(ax)
    ax.set_title("idle time before each reset")
    ax.set_xlabel("idle_before_s (s)")
    ax.set_ylabel("reset events")
    idle = resets["idle_before_s"].to_numpy(dtype=float) if len(resets) else np.zeros(0)
    ok = ~np.isnan(idle)
    marks = [v for v in (server_idle_timeout_s, nginx_keepalive_timeout_s) if v is not None]
    top = max([*idle[ok].tolist(), *marks, 1.0]) * 1.05
    edges = np.linspace(0.0, top, 61).tolist()
    if ok.any():
        causes = resets["cause"].to_numpy()
        present = [c for c in CAUSES if (causes[ok] == c).any()]
        ax.hist(
            [idle[ok & (causes == c)] for c in present],
            bins=edges,
            stacked=True,
            color=[CAUSE_COLORS[c] for c in present],
            label=present,
            edgecolor="white",
            linewidth=0.5,
        )
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _empty(ax, "no reset with a known idle time")
    if server_idle_timeout_s is not None:
        ax.axvline(
            server_idle_timeout_s,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"backend idle timeout (inferred) {server_idle_timeout_s:g} s",
        )
    if nginx_keepalive_timeout_s is not None:
        ax.axvline(
            nginx_keepalive_timeout_s,
            color="#ff7f0e",
            linestyle=":",
            linewidth=1.8,
            label=f"nginx keepalive_timeout {nginx_keepalive_timeout_s:g} s",
        )
    ax.set_xlim(0, top)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small", frameon=False)
    return fig


def time_sequence(
    packets: pd.DataFrame,
    resets: pd.DataFrame | None = None,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Stevens / tcptrace time-sequence graph of one connection.

    Relative sequence number against time since the first packet, per
    direction: data segments as vertical bars (seq .. seq+len), the peer's
    ACKs as a step line in the same colour, SYN / FIN as markers, RSTs as red
    crosses labelled with their cause.
    """
    fig, ax = _axes(ax)
    ax.set_title(title or "time-sequence graph", fontsize="medium")
    ax.set_xlabel("time since first packet (s)")
    ax.set_ylabel("relative sequence number (bytes)")
    if packets.empty:
        _empty(ax, "no packets")
        return fig
    t = packets["rel_time_s"].to_numpy(dtype=float)
    rel = packets["rel_seq"].to_numpy(dtype=float)
    size = packets["payload_bytes"].to_numpy(dtype=float)
    flags = packets["tcp_flags"].to_numpy()
    side = packets["direction"].to_numpy()
    for d, col in DIR_COLORS.items():
        mine = side == d
        data = mine & (size > 0)
        if data.any():
            segs = np.stack(
                [
                    np.column_stack([t[data], rel[data]]),
                    np.column_stack([t[data], rel[data] + size[data]]),
                ],
                axis=1,
            )
            ax.add_collection(LineCollection(list(segs), colors=col, linewidths=2.5))
            ax.plot(
                t[data], rel[data] + size[data], "_", color=col, markersize=8, label=f"{d} data"
            )
        # the peer's ACKs acknowledge this side's bytes
        acks = (side != d) & ~np.isnan(packets["rel_ack"].to_numpy(dtype=float))
        if acks.any():
            ax.step(
                t[acks],
                packets["rel_ack"].to_numpy(dtype=float)[acks],
                where="post",
                color=col,
                alpha=0.45,
                linewidth=1,
                label=f"ACKs of {d} data",
            )
        for bit, marker, name in ((0x02, "^", "SYN"), (0x01, "s", "FIN")):
            m = mine & ((flags & bit) != 0) & ((flags & 0x04) == 0)
            if m.any():
                ax.plot(
                    t[m],
                    rel[m],
                    marker,
                    color=col,
                    markersize=7,
                    linestyle="none",
                    markerfacecolor="white",
                    label=f"{d} {name}",
                )
    rst = (flags & 0x04) != 0
    if rst.any():
        ax.plot(
            t[rst], rel[rst], "X", color="#d62728", markersize=12, linestyle="none", label="RST"
        )
        _label_resets(ax, packets, rst, resets)
    ax.autoscale_view()
    ax.margins(x=0.08, y=0.12)
    ax.legend(loc="upper left", fontsize="x-small", frameon=False, ncols=2)
    return fig


def _label_resets(ax, packets: pd.DataFrame, rst: np.ndarray, resets: pd.DataFrame | None) -> None:  # type: ignore[no-untyped-def]
    """Annotate the first RST packet of each event with its sender and cause."""
    rows = packets[rst]
    top = float((packets["rel_seq"] + packets["payload_bytes"]).max())
    bottom = float(packets["rel_seq"].min())
    mid = (top + bottom) / 2
    ev_ts = resets["ts"].tolist() if resets is not None and len(resets) else []
    done: set[int] = set()
    for _, p in rows.iterrows():
        label = f"RST from {p['direction']}"
        for i, ts in enumerate(ev_ts):
            if i not in done and abs((p["ts"] - ts).total_seconds()) < 1e-3:
                done.add(i)
                label += f"\n{resets['cause'].iloc[i]}"  # type: ignore[index]
                break
        else:
            if ev_ts:
                continue  # a retransmitted RST of an event already labelled
        ax.annotate(
            label,
            (p["rel_time_s"], p["rel_seq"]),
            # below the cross in the upper half of the graph, above it in the lower
            xytext=(-14, -8) if p["rel_seq"] > mid else (-14, 10),
            textcoords="offset points",
            ha="right",
            va="top" if p["rel_seq"] > mid else "bottom",
            fontsize="small",
            color="#d62728",
        )
