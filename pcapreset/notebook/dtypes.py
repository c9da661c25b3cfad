"""dtypes: the column types the notebook tables share (categoricals, UTC times)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..interpret.rules import CAUSES, PHASES, SENDERS

DIRECTIONS = ("client", "server")


def _cat(values: Any, codes: Sequence[str]) -> pd.Categorical:
    return pd.Categorical(values, categories=list(codes))


def _utc(seconds: Any) -> pd.DatetimeIndex:
    """Epoch seconds -> tz-aware UTC at µs resolution (a float64 epoch carries no
    more); a timestamp outside datetime64's range (a damaged record) becomes NaT."""
    us = np.round(np.asarray(seconds, dtype="float64") * 1e6)
    bad = ~np.isfinite(us) | (np.abs(us) >= 2.0**62)
    arr = np.where(bad, 0, us).astype("int64").view("datetime64[us]")
    arr[bad] = np.datetime64("NaT", "us")
    return pd.DatetimeIndex(arr).tz_localize("UTC")


def reset_columns(col: Callable[[str], list], n: int) -> dict[str, Any]:
    """A resets table's columns taken as they are from the JSON contract's reset
    objects, typed (``col(name)``: that field of each of the ``n`` rows)."""
    return {
        "sender": _cat(col("sender"), SENDERS),
        "cause": _cat(col("cause"), CAUSES),
        "confidence": np.asarray(col("confidence"), dtype="float64"),
        "phase": _cat(col("phase"), PHASES),
        "idle_before_s": np.asarray(
            [np.nan if v is None else v for v in col("idle_before_s")], dtype="float64"
        ),
        "requests_before": np.asarray(col("requests_before"), dtype="int64"),
        "direction": _cat(col("direction"), DIRECTIONS),
        "rst_packets": np.asarray(col("rst_packets"), dtype="int64"),
        "rule": pd.array(col("rule"), dtype="string"),
        "explanation": pd.array(col("explanation"), dtype="string"),
        "evidence": pd.Series(col("evidence"), dtype="object", index=range(n)),
        "facts": pd.Series(col("facts"), dtype="object", index=range(n)),
    }
