"""Typed rule columns for a batch, from raw customer attributes and computed features.

Derived fields are computed for the run date here: ``days_to_birthday`` (0 on the birthday; a
29 February birthday falls on 1 March in other years) and ``days_since_signup``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np

from orchestrator.features import COMPUTED_FEATURES
from orchestrator.rules import column_from_values
from orchestrator.rules.columns import BoolColumn, Column, DateColumn, NumberColumn

DERIVED_SOURCES = {"days_to_birthday": "birth_date", "days_since_signup": "signup_date"}


def days_to_birthday(birth: np.ndarray, day: date) -> np.ndarray:
    """Days from ``day`` to the next birthday (0 on it), NaN where unknown; ``birth`` datetime64[D].

    >>> b = np.array(["1990-11-24", "1985-11-23", "2000-01-01", "NaT"], dtype="datetime64[D]")
    >>> days_to_birthday(b, date(2026, 11, 23)).tolist()
    [1.0, 0.0, 39.0, nan]
    """
    valid = ~np.isnat(birth)
    safe = np.where(valid, birth, np.datetime64("2000-01-01"))
    month_start = safe.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12
    dom = (safe - month_start.astype("datetime64[D]")).astype(np.int64)

    def occurrence(year: int) -> np.ndarray:
        start = np.datetime64(f"{year:04d}-01", "M") + month
        return start.astype("datetime64[D]") + dom

    today = np.datetime64(day, "D")
    this_year = occurrence(day.year)
    nxt = np.where(this_year < today, occurrence(day.year + 1), this_year)
    out = (nxt - today).astype(np.float64)
    out[~valid] = np.nan
    return out


def build_columns(
    attributes: Sequence[Mapping[str, Any]],
    features: Mapping[str, Sequence[Any]],
    schema: Mapping[str, str],
    needed: Collection[str],
    day: date,
) -> dict[str, Column]:
    """Columns for the ``needed`` fields of a batch of ``n = len(attributes)`` customers.

    ``features`` maps computed-feature names to ``(n,)`` values (None = null).
    """
    n = len(attributes)
    out: dict[str, Column] = {}
    for name in needed:
        if name in DERIVED_SOURCES:
            source = DERIVED_SOURCES[name]
            raw = column_from_values("date", [a.get(source) for a in attributes])
            assert isinstance(raw, DateColumn)
            if name == "days_to_birthday":
                out[name] = NumberColumn(days_to_birthday(raw.values, day))
            else:
                delta = (np.datetime64(day, "D") - raw.values).astype(np.float64)
                delta[np.isnat(raw.values)] = np.nan
                out[name] = NumberColumn(delta)
        elif name in COMPUTED_FEATURES:
            values = features.get(name)
            out[name] = column_from_values(
                schema[name], values if values is not None else [None] * n
            )
        else:
            out[name] = column_from_values(schema[name], [a.get(name) for a in attributes])
    return out


def context_matrix(columns: Mapping[str, Column], names: Sequence[str]) -> np.ndarray:
    """``(n, d)`` float32 policy contexts from number and bool columns (null → 0)."""
    if not names:
        n = len(next(iter(columns.values()))) if columns else 0
        return np.zeros((n, 0), dtype=np.float32)
    parts = []
    for name in names:
        col = columns[name]
        if isinstance(col, NumberColumn):
            parts.append(np.nan_to_num(col.values, nan=0.0))
        elif isinstance(col, BoolColumn):
            parts.append((col.values & col.known).astype(np.float64))
    return np.stack(parts, axis=1).astype(np.float32)
