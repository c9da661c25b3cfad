"""dtypes: the column types the notebook tables share (categoricals, UTC times)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

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
