"""Segment history: who was in which lifecycle stage and RFM cell, from when until when.

A row ``(customer, kind, value, valid_from, valid_to)`` says the customer was in ``value`` from
the refresh of ``valid_from`` (inclusive) until the refresh of ``valid_to`` (exclusive; NULL
while open). A refresh opens a row exactly when a customer's segment changes, and closes the
previous one on the same day; customers whose segment stayed the same are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.errors import InputError

# Segment kinds recorded in segment_history, and the customer_features column of each.
SEGMENT_KINDS: dict[str, str] = {
    "lifecycle": "lifecycle_stage",
    "rfm": "rfm_cell",
    "micro": "micro_segment",
}


def _day_param(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=sa.Date())


def check_kind(kind: str) -> None:
    """Refuse a segment kind that is not recorded."""
    if kind not in SEGMENT_KINDS:
        known = ", ".join(SEGMENT_KINDS)
        raise InputError(f"unknown segment kind {kind!r}: use one of {known}")


def last_history_day(conn: sa.Connection) -> date | None:
    """The latest day a refresh changed the history (opened or closed a row), if any."""
    row = conn.execute(sa.text("SELECT max(valid_from), max(valid_to) FROM segment_history")).one()
    days = [
        value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        for value in row
        if value is not None
    ]
    return max(days) if days else None


def record_history(conn: sa.Connection, kind: str, as_of: date) -> int:
    """Close the open rows of customers whose ``kind`` segment changed and open their new ones.

    The new segments are read from ``customer_features`` (as just written by the refresh).
    A refresh repeated for the same day first undoes the earlier one's changes (rows opened on
    that day are removed, rows closed on it reopened), so it replaces it. Returns how many
    customers entered a segment.

    The changes are collected into a temporary table first: joining ``segment_history`` while
    writing it lets PostgreSQL pick plans that rescan the rows being added (quadratic).
    """
    column = SEGMENT_KINDS[kind]
    params = {"kind": kind, "d": as_of}
    postgres = conn.dialect.name == "postgresql"
    differs = "IS DISTINCT FROM" if postgres else "IS NOT"
    if postgres:
        # Both tables changed a lot in this transaction; stale statistics lead to nested loops.
        conn.exec_driver_sql("ANALYZE customer_features")
        conn.exec_driver_sql("ANALYZE segment_history")
    conn.execute(
        sa.text("DELETE FROM segment_history WHERE kind = :kind AND valid_from = :d").bindparams(
            _day_param("d")
        ),
        params,
    )
    conn.execute(
        sa.text(
            "UPDATE segment_history SET valid_to = NULL WHERE kind = :kind AND valid_to = :d"
        ).bindparams(_day_param("d")),
        params,
    )
    conn.exec_driver_sql("DROP TABLE IF EXISTS _orch_segment_changes")
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE _orch_segment_changes "
        "(customer_id VARCHAR(128) PRIMARY KEY, value VARCHAR(64))"
    )
    # Customers whose segment differs from their open row: new ones, changed ones, and those
    # who no longer have one (value NULL).
    conn.execute(
        sa.text(
            "INSERT INTO _orch_segment_changes (customer_id, value) "
            f"SELECT f.customer_id, f.{column} FROM customer_features f "
            "LEFT JOIN segment_history h ON h.customer_id = f.customer_id "
            "AND h.kind = :kind AND h.valid_to IS NULL "
            f"WHERE f.{column} {differs} h.value"
        ),
        params,
    )
    if postgres:
        conn.exec_driver_sql("ANALYZE _orch_segment_changes")
    conn.execute(
        sa.text(
            "UPDATE segment_history SET valid_to = :d FROM _orch_segment_changes c "
            "WHERE segment_history.customer_id = c.customer_id "
            "AND segment_history.kind = :kind AND segment_history.valid_to IS NULL"
        ).bindparams(_day_param("d")),
        params,
    )
    opened = conn.execute(
        sa.text(
            "INSERT INTO segment_history (customer_id, kind, value, valid_from) "
            "SELECT customer_id, :kind, value, :d FROM _orch_segment_changes "
            "WHERE value IS NOT NULL"
        ).bindparams(_day_param("d")),
        params,
    ).rowcount
    conn.exec_driver_sql("DROP TABLE _orch_segment_changes")
    return int(opened)


def segment_at(conn: sa.Connection, kind: str, day: date) -> dict[str, str]:
    """Each customer's ``kind`` segment on ``day`` (as recorded by the refreshes up to then)."""
    check_kind(kind)
    sql = sa.text(
        "SELECT customer_id, value FROM segment_history WHERE kind = :kind "
        "AND valid_from <= :d AND (valid_to IS NULL OR valid_to > :d)"
    ).bindparams(_day_param("d"))
    return {str(cid): str(value) for cid, value in conn.execute(sql, {"kind": kind, "d": day})}


def segments_on(
    conn: sa.Connection, kind: str, customer_ids: Sequence[str], days: Sequence[date]
) -> list[str | None]:
    """The ``kind`` segment of each ``(customer_ids[i], days[i])`` pair (None: no segment then).

    The vectorized form of :func:`segment_at` for many customers on many days (e.g. decisions
    on their run dates): one read of the kind's history, then a sorted interval lookup.
    """
    check_kind(kind)
    if len(customer_ids) != len(days):
        raise ValueError("customer_ids and days must have the same length")
    rows = conn.execute(
        sa.text(
            "SELECT customer_id, value, valid_from, valid_to FROM segment_history "
            "WHERE kind = :kind"
        ),
        {"kind": kind},
    ).all()
    if not rows or not len(customer_ids):
        return [None] * len(customer_ids)
    owners, values, starts, ends = zip(*rows, strict=True)
    vocabulary = {cid: i for i, cid in enumerate(dict.fromkeys(owners))}
    row_owner = np.array([vocabulary[c] for c in owners], dtype=np.int64)
    row_start = _day_numbers(starts)
    row_end = _day_numbers([e if e is not None else _FOREVER for e in ends])
    query_owner = np.array([vocabulary.get(c, -1) for c in customer_ids], dtype=np.int64)
    query_day = _day_numbers(days)
    span = int(max(row_end.max(), query_day.max())) + 2
    row_key = row_owner * span + row_start
    order = np.argsort(row_key)
    row_key = row_key[order]
    # The latest row of the same customer starting on or before the day, if it still lasts.
    at = np.searchsorted(row_key, query_owner * span + query_day, side="right") - 1
    at_safe = np.maximum(at, 0)
    hit = (
        (at >= 0)
        & (query_owner >= 0)
        & (row_owner[order][at_safe] == query_owner)
        & (row_end[order][at_safe] > query_day)
    )
    picked = np.asarray(values, dtype=object)[order][at_safe]
    return [str(v) if ok else None for v, ok in zip(picked, hit, strict=True)]


_FOREVER = date(9999, 12, 31)


def _day_numbers(days: Sequence[Any]) -> np.ndarray:
    """Day numbers (days since 1970-01-01) of dates or ISO date strings; int64 (n,)."""
    text = [d.isoformat() if isinstance(d, date) else str(d)[:10] for d in days]
    return np.array(text, dtype="datetime64[D]").astype(np.int64)
