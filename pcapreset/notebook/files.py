"""files: an analysis written to a directory.

The tables (``--export``; :meth:`Analysis.export`) as Parquet or CSV, and the
plots (``--plot``) as PNGs. Every file is opened with
:func:`~pcapreset.capture.outfile.open_output` (no following links).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..capture.outfile import open_output
from ..errors import PcapResetError, require
from ..report.columns import CSV_TIME

if TYPE_CHECKING:
    import pandas as pd

    from .frames import Analysis

EXPORT_FORMATS = ("parquet", "csv")
#: list-valued columns; CSV export joins them with this separator
LIST_SEP = " | "


def _for_csv(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for name in out.columns:
        if out[name].dtype == object:
            out[name] = out[name].map(
                lambda v: LIST_SEP.join(map(str, v)) if isinstance(v, list) else v
            )
    return out


#: the list-valued columns (lists of strings) of the tables
LIST_COLUMNS = ("evidence", "facts", "flows")


def _arrow_schema(df: pd.DataFrame) -> Any:
    """The table's Arrow schema, list columns typed ``list<string>`` even when
    the table is empty (else they are ``null`` columns, and two captures'
    files cannot be read together: pandas.read_parquet([a, b]), DuckDB)."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(df, preserve_index=False)
    for name in LIST_COLUMNS:
        i = schema.get_field_index(name)
        if i >= 0:
            schema = schema.set(i, pa.field(name, pa.list_(pa.string())))
    return schema


def export_tables(a: Analysis, directory: str | os.PathLike, fmt: str = "parquet") -> list[Path]:
    if fmt not in EXPORT_FORMATS:
        raise PcapResetError(f"unknown export format {fmt!r} (use parquet or csv)")
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        written = []
        for name in ("connections", "resets", "findings"):
            df: pd.DataFrame = getattr(a, name)
            path = d / f"{name}.{fmt}"
            if name == "connections":
                df = df.reset_index()  # (conn_id: a column in files, as in `conns`)
            if fmt == "parquet":
                require("pyarrow", "Parquet export", " (or --export-format csv)")
            try:
                with open_output(path) as f:
                    if fmt == "parquet":
                        df.to_parquet(f, index=False, schema=_arrow_schema(df))
                    else:
                        with io.TextIOWrapper(f, encoding="utf-8", newline="") as t:
                            _for_csv(df).to_csv(t, index=False, date_format=CSV_TIME)
            except OSError as e:
                raise PcapResetError(f"cannot write {path}: {e.strerror or e}") from None
            written.append(path)
    except OSError as e:
        raise PcapResetError(f"cannot write to {d}: {e.strerror or e}") from None
    return written


# ----------------------------------------------------------------- files
PLOT_FILES = ("resets_over_time.png", "idle_before.png", "time_sequence_conn{conn}.png")


def write_plots(
    a: Analysis, directory: str | os.PathLike, conn_ids: Sequence[int] | None = None
) -> list[Path]:
    """Write the three plots as PNGs into ``directory``; returns the paths.

    The time-sequence graph is drawn for ``conn_ids`` (default: the
    connection of the first reset, else the busiest one).
    """
    d = Path(directory)
    if conn_ids is None:
        first = a.default_conn_id()
        conn_ids = [] if first is None else [first]
    figs = [(PLOT_FILES[0], a.plot_resets_over_time()), (PLOT_FILES[1], a.plot_idle_histogram())]
    figs += [(PLOT_FILES[2].format(conn=c), a.plot_time_sequence(c)) for c in conn_ids]
    try:
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for name, fig in figs:
            try:
                with open_output(d / name) as f:
                    fig.savefig(f, format="png")
            except OSError as e:
                raise PcapResetError(f"cannot write {d / name}: {e.strerror or e}") from None
            out.append(d / name)
    except OSError as e:
        raise PcapResetError(f"cannot write plots to {d}: {e.strerror or e}") from None
    return out
