"""Columnar reads and bulk writes for the daily run (no per-customer ORM objects)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from orchestrator.engine.contacts import CAP_EXEMPT, Entries, entries_from_columns
from orchestrator.engine.partition import DECISION_COLUMNS
from orchestrator.features import COMPUTED_FEATURES
from orchestrator.storage.bulk import bulk_insert, collate
from orchestrator.storage.models import DecisionContext

FEATURE_COLUMNS = tuple(COMPUTED_FEATURES)


@dataclass(frozen=True)
class RawBatch:
    """Customers in id order: ``ids``, their attribute dicts and computed-feature columns, and
    (when asked) their stored contact states."""

    ids: list[str]
    attributes: list[dict[str, Any]]
    features: dict[str, list[Any]]
    states: list[bytes | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def load_customers(
    conn: sa.Connection,
    *,
    after: str | None,
    limit: int,
    customer_id: str | None = None,
    feature_names: Sequence[str] = FEATURE_COLUMNS,
    upto: str | None = None,
    with_state: bool = False,
) -> RawBatch:
    """The next ``limit`` customers with id greater than ``after`` and at most ``upto`` (or one
    given customer), with their contact state if ``with_state``."""
    order = collate(conn)
    pg = conn.dialect.name == "postgresql"
    attrs = "c.attributes::text" if pg else "c.attributes"
    feats = "".join(f", f.{name}" for name in feature_names)
    state = ", s.state" if with_state else ""
    params: dict[str, Any] = {"limit": limit}
    bounds: list[str] = []  # on every joined table too: PostgreSQL's merge joins then start
    if customer_id is not None:  # at the range instead of scanning each index from its start
        bounds.append("{t}.customer_id = :cid")
        params["cid"] = customer_id
    else:
        if after is not None:
            bounds.append(f"{{t}}.customer_id{order} > :after")
            params["after"] = after
        if upto is not None:
            bounds.append(f"{{t}}.customer_id{order} <= :upto")
            params["upto"] = upto

    def on(t: str) -> str:
        return "".join(f" AND {b.format(t=t)}" for b in bounds)

    join_state = (
        f" LEFT JOIN contact_state s ON s.customer_id = c.customer_id{on('s')}"
        if with_state
        else ""
    )
    where = " AND ".join(b.format(t="c") for b in bounds) or "1 = 1"
    sql = (
        f"SELECT c.customer_id, {attrs}{feats}{state} FROM customer c "
        f"LEFT JOIN customer_features f ON f.customer_id = c.customer_id{on('f')}{join_state} "
        f"WHERE {where} ORDER BY c.customer_id{order} LIMIT :limit"
    )
    rows = _fetch(conn, sql, params)
    if not rows:
        return RawBatch([], [], {name: [] for name in feature_names}, [] if with_state else None)
    cols = list(zip(*rows, strict=True))
    loads = orjson.loads
    k = len(feature_names)
    return RawBatch(
        ids=list(cols[0]),
        attributes=[loads(a) if a else {} for a in cols[1]],
        features={name: list(cols[2 + i]) for i, name in enumerate(feature_names)},
        states=list(cols[2 + k]) if with_state else None,
    )


def _fetch(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows of ``sql`` (``:name`` parameters) through the driver's own cursor: no SQLAlchemy
    result objects for a million rows."""
    if conn.dialect.name == "postgresql":  # psycopg's style; '::text' casts are not names
        sql = re.sub(r"(?<!:):([a-z_]+)\b", lambda m: f"%({m.group(1)})s", sql)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


def count_customers(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT COUNT(*) FROM customer")).scalar_one())


def partition_bounds(conn: sa.Connection, count: int) -> list[tuple[str | None, str | None]]:
    """``count`` customer-id ranges ``(lo, hi]`` of about equal size that cover every id, now
    and later (the first starts at the beginning, the last has no end)."""
    total = count_customers(conn)
    if count <= 1 or total <= count:
        return [(None, None)]
    step = math.ceil(total / count)
    order = collate(conn)
    cuts = [
        r[0]
        for r in conn.execute(
            sa.text(
                f"SELECT customer_id FROM (SELECT customer_id, ROW_NUMBER() OVER "
                f"(ORDER BY customer_id{order}) AS rn FROM customer) ranked "
                "WHERE rn % :step = 0 ORDER BY rn"
            ),
            {"step": step},
        )
    ]
    cuts = [c for c in cuts][: count - 1]
    edges: list[str | None] = [None, *cuts, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def load_entries(
    conn: sa.Connection,
    ids: Sequence[str],
    *,
    day: date,
    lookback_days: int,
    exempt: frozenset[str] = frozenset(),
) -> Entries:
    """Decisions of the batch's customers ``ids`` (sorted) in the ``lookback_days`` before
    ``day``, from the decision log (one indexed range query).

    Ages and open-window days are computed by the database, so only ids and labels cross into
    Python.
    """
    if not ids:
        return Entries.empty()
    order = collate(conn)
    since = date.fromordinal(day.toordinal() - lookback_days)
    if conn.dialect.name == "postgresql":
        age, left = "(CAST(:day AS DATE) - run_date)", "(window_end - CAST(:day AS DATE))"
    else:
        age = "CAST(julianday(:day) - julianday(run_date) AS INTEGER)"
        left = "CAST(julianday(window_end) - julianday(:day) AS INTEGER)"
    where_ids = (
        "customer_id = :lo"
        if len(ids) == 1
        else f"customer_id{order} >= :lo AND customer_id{order} <= :hi"
    )
    sql = (
        f"SELECT customer_id, {age}, campaign_id, channel, "
        f"CASE WHEN \"group\" = 'test' AND campaign_id IS NOT NULL THEN 1 ELSE 0 END, "
        f"COALESCE({left}, 0), journey_id FROM decision WHERE {where_ids} "
        "AND run_date >= :since AND run_date < :day"
    )
    params = {"lo": ids[0], "hi": ids[-1], "since": since, "day": day}
    rows = _fetch(conn, sql, params)
    if not rows:
        return Entries.empty()
    cust, age_col, camps, chans, sent, window_left, journeys = zip(*rows, strict=True)
    flags = np.asarray(sent, dtype=np.uint8)
    if exempt:  # contacts of cap-exempt journeys do not count against caps
        free = np.fromiter((j in exempt for j in journeys), bool, len(journeys))
        flags |= np.where(free & (flags > 0), CAP_EXEMPT, 0).astype(np.uint8)
    row_of = {cid: i for i, cid in enumerate(ids)}
    row = np.fromiter((row_of.get(c, -1) for c in cust), np.int64, len(cust))
    keep = row >= 0
    entries = entries_from_columns(
        row,
        day,
        np.asarray(age_col, dtype=np.int64),
        np.asarray(window_left, dtype=np.int64),
        camps,
        chans,
        flags,
    )
    if keep.all():
        return entries
    ok = entries.row >= 0
    return Entries(entries.row[ok], entries.data[ok])


def insert_context(
    conn: sa.Connection,
    *,
    run_date: date,
    batch: int,
    names: Sequence[str],
    customer_ids: Sequence[str],
    matrix: np.ndarray,
    actions: Sequence[str],
    eligible: np.ndarray,
) -> None:
    """Log the contexts and eligible actions of one batch's decisions (one row per batch)."""
    conn.execute(
        sa.insert(DecisionContext),
        {
            "run_date": run_date,
            "batch": batch,
            "names": list(names),
            "customer_ids": list(customer_ids),
            "matrix": np.ascontiguousarray(matrix, dtype=np.float32).tobytes(),
            "actions": list(actions),
            "eligible": np.packbits(np.asarray(eligible, dtype=bool), axis=1).tobytes(),
        },
    )


@dataclass(frozen=True)
class LoggedContexts:
    """One run date's logged contexts: ``matrix (n, d)`` and ``eligible (n, A)`` by customer."""

    names: list[str]
    actions: list[str]
    row_of: dict[str, int]
    matrix: np.ndarray
    eligible: np.ndarray


def load_contexts(conn: sa.Connection, run_dates: Sequence[date]) -> dict[date, LoggedContexts]:
    """The logged contexts of each run date (batches whose layout differs are skipped)."""
    out: dict[date, LoggedContexts] = {}
    for day in sorted(set(run_dates)):
        rows = conn.execute(
            sa.select(DecisionContext)
            .where(DecisionContext.run_date == day)  # type: ignore[arg-type]
            .order_by(DecisionContext.batch)  # type: ignore[arg-type]
        ).all()
        if not rows:
            continue
        names, actions = list(rows[0].names), list(rows[0].actions)
        ids: list[str] = []
        mats, elig = [], []
        for r in rows:
            if list(r.names) != names or list(r.actions) != actions:
                continue
            n = len(r.customer_ids)
            ids += list(r.customer_ids)
            mats.append(np.frombuffer(r.matrix, dtype=np.float32).reshape(n, len(names)))
            bits = np.frombuffer(r.eligible, dtype=np.uint8).reshape(n, -1)
            elig.append(np.unpackbits(bits, axis=1, count=len(actions)).astype(bool))
        out[day] = LoggedContexts(
            names, actions, {c: i for i, c in enumerate(ids)}, np.vstack(mats), np.vstack(elig)
        )
    return out


def insert_decisions(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Write decision rows, tuples in ``DECISION_COLUMNS`` order (the caller owns the transaction).

    Dates go in as ISO text, which both backends store as dates.
    """
    return bulk_insert(conn, "decision", DECISION_COLUMNS, rows, native=True) if rows else 0
