"""Typed rule columns for a batch, from raw customer attributes and computed features.

Derived fields are computed for the run date here: ``days_to_birthday`` (0 on the birthday; a
29 February birthday falls on 1 March in other years) and ``days_since_signup``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np

from orchestrator.features import (
    COMPUTED_FEATURES,
    LIFECYCLE_STAGES,
    NOT_POLICY_CONTEXT,
    RFM_CELLS,
)
from orchestrator.rules import column_from_values
from orchestrator.rules.columns import (
    BoolColumn,
    Column,
    DateColumn,
    NumberColumn,
    StringColumn,
)

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
    attributes: Mapping[str, Sequence[Any]],
    features: Mapping[str, Sequence[Any]],
    schema: Mapping[str, str],
    needed: Collection[str],
    day: date,
    n: int,
) -> dict[str, Column]:
    """Columns for the ``needed`` fields of a batch of ``n`` customers.

    ``attributes`` and ``features`` map attribute and computed-feature names to ``(n,)`` values
    (Python lists or Arrow arrays; None = null); a name missing from them is null throughout.
    """
    out: dict[str, Column] = {}

    def values(name: str) -> Sequence[Any]:
        found = (features if name in COMPUTED_FEATURES else attributes).get(name)
        return found if found is not None else [None] * n

    for name in needed:
        if name in DERIVED_SOURCES:
            raw = column_from_values("date", values(DERIVED_SOURCES[name]))
            assert isinstance(raw, DateColumn)
            if name == "days_to_birthday":
                out[name] = NumberColumn(days_to_birthday(raw.values, day))
            else:
                delta = (np.datetime64(day, "D") - raw.values).astype(np.float64)
                delta[np.isnat(raw.values)] = np.nan
                out[name] = NumberColumn(delta)
        else:
            out[name] = column_from_values(schema[name], values(name))
    return out


def attribute_sources(needed: Collection[str]) -> list[str]:
    """The customer attributes ``needed`` fields read (a derived field reads its source).

    >>> attribute_sources({"age", "days_to_birthday", "monetary"})
    ['age', 'birth_date']
    """
    names = {DERIVED_SOURCES.get(n, n) for n in needed}
    return sorted(n for n in names if n not in COMPUTED_FEATURES)


def feature_sources(needed: Collection[str]) -> list[str]:
    """The computed features ``needed`` fields read, in ``COMPUTED_FEATURES`` order."""
    return [n for n in COMPUTED_FEATURES if n in needed]


# String fields whose values are known in advance become one-hot context columns.
ONE_HOT = {"lifecycle_stage": LIFECYCLE_STAGES, "rfm_cell": RFM_CELLS}


def context_names(schema: Mapping[str, str]) -> tuple[str, ...]:
    """The policy context columns: every number and bool field (but ``NOT_POLICY_CONTEXT``),
    plus one-hot segments.

    >>> context_names({"monetary": "number", "email_opt_in": "bool", "lifecycle_stage": "string",
    ...                "country": "string"})[:3]
    ('email_opt_in', 'monetary', 'lifecycle_stage=prospect')
    """
    names = [
        n
        for n, t in sorted(schema.items())
        if t in ("number", "bool") and n not in NOT_POLICY_CONTEXT
    ]
    hot = [f"{f}={v}" for f, values in ONE_HOT.items() if f in schema for v in values]
    return tuple(names + hot)


def context_fields(names: Sequence[str]) -> set[str]:
    """The columns the context ``names`` read."""
    return {name.split("=", 1)[0] for name in names}


def context_matrix(columns: Mapping[str, Column], names: Sequence[str], n: int) -> np.ndarray:
    """``(n, d)`` float32 policy contexts (null → 0; one-hot for ``field=value`` names)."""
    out = np.zeros((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        field, _, value = name.partition("=")
        col = columns[field]
        if value and isinstance(col, StringColumn):
            code = col.code_of(value)
            if code >= 0:
                out[:, j] = col.codes == code
        elif isinstance(col, NumberColumn):
            out[:, j] = np.nan_to_num(col.values, nan=0.0)
        elif isinstance(col, BoolColumn):
            out[:, j] = col.values & col.known
    return out


def align(matrix: np.ndarray, names: Sequence[str], to: Sequence[str]) -> np.ndarray:
    """Reorder the columns of ``matrix`` (named ``names``) to ``to``; missing columns are 0.

    >>> align(np.array([[1.0, 2.0]]), ["a", "b"], ["b", "c", "a"]).tolist()
    [[2.0, 0.0, 1.0]]
    """
    if list(names) == list(to):
        return matrix
    index = {n: j for j, n in enumerate(names)}
    out = np.zeros((matrix.shape[0], len(to)), dtype=matrix.dtype)
    for j, name in enumerate(to):
        if name in index:
            out[:, j] = matrix[:, index[name]]
    return out
