"""Columnar reads and bulk writes for the daily run (no per-customer ORM objects)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
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
NAMED_PARAM = re.compile(r"(?<!:):([a-z_]+)\b")  # ``:name`` in the SQL here, not a ``::cast``


@dataclass(frozen=True)
class RawBatch:
    """Customers in id order: ``ids``, their attribute and computed-feature columns by name
    (Python lists or Arrow arrays), and (when asked) their stored contact states."""

    ids: list[str]
    attributes: Mapping[str, Sequence[Any]]
    features: Mapping[str, Sequence[Any]]
    states: list[bytes | None] | None = None
    keys: np.ndarray | None = None  # the ids' ``customer_keys`` under ``key_salt``, if known
    key_salt: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of_rows(
        cls,
        ids: list[str],
        rows: Sequence[Mapping[str, Any]],
        features: Mapping[str, Sequence[Any]] | None = None,
        names: Sequence[str] | None = None,
        states: list[bytes | None] | None = None,
    ) -> RawBatch:
        """A batch from one attribute dict per customer (its ``names``, or every key).

        >>> RawBatch.of_rows(["a", "b"], [{"x": 1}, {"y": "z"}]).attributes
        {'x': [1, None], 'y': [None, 'z']}
        """
        keys = sorted({k for row in rows for k in row}) if names is None else names
        columns = {k: [row.get(k) for row in rows] for k in keys}
        return cls(ids, columns, features or {}, states)


CUSTOMER_SELECT = (
    "SELECT c.customer_id, {attrs}{feats}{state} FROM customer c "
    "LEFT JOIN customer_features f ON f.customer_id = c.customer_id{on_f}{join_state} "
    "WHERE {where} ORDER BY c.customer_id{order} LIMIT :limit"
)


def customer_query(
    order: str,
    attrs: str,
    feature_names: Sequence[str],
    *,
    after: str | None,
    limit: int,
    customer_id: str | None = None,
    upto: str | None = None,
    with_state: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The SQL (``:name`` parameters) of a customer batch: ``attrs`` (a select list of the
    customer row), the computed features, the contact state; every joined table is bounded
    too, so PostgreSQL's merge joins start at the range instead of each index's start."""
    params: dict[str, Any] = {"limit": limit}
    bounds: list[str] = []
    if customer_id is not None:
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

    sql = CUSTOMER_SELECT.format(
        attrs=attrs,
        feats="".join(f", f.{name}" for name in feature_names),
        state=", s.state" if with_state else "",
        on_f=on("f"),
        join_state=(
            f" LEFT JOIN contact_state s ON s.customer_id = c.customer_id{on('s')}"
            if with_state
            else ""
        ),
        where=" AND ".join(b.format(t="c") for b in bounds) or "1 = 1",
        order=order,
    )
    return sql, params


def load_customers(
    conn: sa.Connection,
    *,
    after: str | None,
    limit: int,
    customer_id: str | None = None,
    feature_names: Sequence[str] = FEATURE_COLUMNS,
    attribute_names: Sequence[str] | None = None,
    upto: str | None = None,
    with_state: bool = False,
) -> RawBatch:
    """The next ``limit`` customers with id greater than ``after`` and at most ``upto`` (or one
    given customer), with their ``attribute_names`` (None: every one they have), the
    ``feature_names`` and their contact state if ``with_state``; each row's JSON attributes
    parsed here (see `CustomerReader` for the run's columnar path)."""
    pg = conn.dialect.name == "postgresql"
    sql, params = customer_query(
        collate(conn),
        "c.attributes::text" if pg else "c.attributes",
        feature_names,
        after=after,
        limit=limit,
        customer_id=customer_id,
        upto=upto,
        with_state=with_state,
    )
    rows = _fetch(conn, sql, params)
    names = attribute_names
    if not rows:
        empty: dict[str, list[Any]] = {n: [] for n in feature_names}
        return RawBatch([], {n: [] for n in names or ()}, empty, [] if with_state else None)
    cols = list(zip(*rows, strict=True))
    loads = orjson.loads
    k = len(feature_names)
    return RawBatch.of_rows(
        list(cols[0]),
        [loads(a) if a else {} for a in cols[1]],
        {name: list(cols[2 + i]) for i, name in enumerate(feature_names)},
        names,
        list(cols[2 + k]) if with_state else None,
    )


def _fetch(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows of ``sql`` (``:name`` parameters) through the driver's own cursor: no SQLAlchemy
    result objects for a million rows."""
    if conn.dialect.name == "postgresql":  # psycopg's style; '::text' casts are not names
        sql = NAMED_PARAM.sub(lambda m: f"%({m.group(1)})s", sql)
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
