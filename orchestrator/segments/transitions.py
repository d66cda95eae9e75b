"""Segment migration between two days: how many customers moved from each segment to each other.

Built from ``segment_history``: a customer's segment on a day is the row whose
``[valid_from, valid_to)`` contains it. Customers with no segment on a day (not yet a customer,
or before the first refresh) are counted under ``NONE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.features import LIFECYCLE_STAGES, RFM_CELLS
from orchestrator.segments.history import check_kind
from orchestrator.segments.model_store import load_model

NONE = "(none)"


@dataclass(frozen=True)
class TransitionMatrix:
    """``counts[i, j]``: customers in segment ``rows[i]`` on ``start`` and ``columns[j]`` on
    ``end``; int64 (len(rows), len(columns))."""

    kind: str
    start: date
    end: date
    rows: list[str]
    columns: list[str]
    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def moved(self) -> int:
        """Customers whose segment differs between the two days."""
        same = sum(
            int(self.counts[i, self.columns.index(label)])
            for i, label in enumerate(self.rows)
            if label in self.columns
        )
        return self.total - same

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "rows": self.rows,
            "columns": self.columns,
            "counts": self.counts.tolist(),
            "total": self.total,
            "moved": self.moved,
        }


def order_labels(labels: set[str], preferred: tuple[str, ...] | list[str]) -> list[str]:
    """``labels`` in the ``preferred`` order, others after them sorted, ``NONE`` last.

    >>> order_labels({"lapsed", NONE, "new", "zeta"}, LIFECYCLE_STAGES)
    ['new', 'lapsed', 'zeta', '(none)']
    """
    known = [label for label in preferred if label in labels]
    rest = sorted(labels - set(known) - {NONE})
    return known + rest + ([NONE] if NONE in labels else [])


def _segment_query(name: str) -> str:
    return (
        f"{name} AS (SELECT customer_id, value FROM segment_history WHERE kind = :kind "
        f"AND valid_from <= :{name}_day AND (valid_to IS NULL OR valid_to > :{name}_day))"
    )


def transition_matrix(conn: sa.Connection, kind: str, start: date, end: date) -> TransitionMatrix:
    """Count customers by (segment on ``start``, segment on ``end``) in one grouped query."""
    check_kind(kind)
    if start > end:
        raise InputError(f"--from {start} is after --to {end}")
    if conn.execute(sa.text("SELECT 1 FROM segment_history LIMIT 1")).first() is None:
        raise InputError("no segment history yet: run `orch segments refresh` first")
    sql = sa.text(
        f"WITH {_segment_query('a')}, {_segment_query('b')} "
        "SELECT a.value, b.value, count(*) FROM a LEFT JOIN b ON b.customer_id = a.customer_id "
        "GROUP BY a.value, b.value "
        "UNION ALL "
        "SELECT NULL, b.value, count(*) FROM b "
        "WHERE NOT EXISTS (SELECT 1 FROM a WHERE a.customer_id = b.customer_id) "
        "GROUP BY b.value"
    ).bindparams(sa.bindparam("a_day", type_=sa.Date()), sa.bindparam("b_day", type_=sa.Date()))
    found = [
        (a or NONE, b or NONE, int(count))
        for a, b, count in conn.execute(sql, {"kind": kind, "a_day": start, "b_day": end})
    ]
    preferred: tuple[str, ...] | list[str] = LIFECYCLE_STAGES if kind == "lifecycle" else RFM_CELLS
    if kind == "rfm":
        model = load_model(conn)
        cells = ((model or {}).get("config") or {}).get("rfm", {}).get("cells")
        if cells:
            preferred = [c["name"] for c in cells]
    rows = order_labels({a for a, _, _ in found}, preferred)
    columns = order_labels({b for _, b, _ in found}, preferred)
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for a, b, count in found:
        counts[rows.index(a), columns.index(b)] += count
    return TransitionMatrix(kind, start, end, rows, columns, counts)
