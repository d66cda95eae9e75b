"""Reward maturation: when a decision's window has closed, store what its customer produced.

reward = revenue inside the window (sum of event amounts; returns are negative) minus the
treatment's unit cost for a sent (test-group) decision. Control-group and "send nothing"
decisions cost nothing: they are the no-contact arm. A decision matures once (the reward's
primary key is the decision id); maturing again adds nothing.

A control decision's window blocks other measured campaigns, so nothing else reaches the
customer inside it. A "send nothing" decision blocks nothing (sending nothing today does not
forbid a message tomorrow), so its window is cut at the customer's next contact: what it
measures is the no-contact outcome, not the next campaign's. The reward keeps the number of
days actually measured (``window_days``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.imports.common import constant_timestamp
from orchestrator.measure.outcomes import window_outcomes
from orchestrator.reports.columnar import Col, day_of, read_columns
from orchestrator.storage.bulk import begin_write, collate, insert_arrow
from orchestrator.storage.db import require_schema
from orchestrator.storage.models import utcnow
from orchestrator.storage.run_repo import partition_bounds

PURCHASE_TYPES = ("purchase",)
Bounds = tuple[str | None, str | None]


@dataclass
class MaturationReport:
    as_of: date
    matured: int = 0
    converted: int = 0
    value: float = 0.0
    still_open: int = 0
    seconds: float = 0.0


PENDING = (
    "decision d LEFT JOIN reward r ON r.decision_id = d.id "
    "LEFT JOIN treatment t ON t.campaign_id = d.campaign_id AND t.id = d.treatment_id"
)
PENDING_WHERE = "r.decision_id IS NULL AND d.window_end <= :as_of"
# SQLite reads decisions in ranges of this key. The unary + keeps its planner on the customer
# index: with a plain rowid range it scanned the whole table for every range of customers.
DECISION_KEY = "+d.id"


def mature_rewards(
    engine: sa.Engine,
    *,
    as_of: date,
    chunk: int = 1_000_000,
    progress: Callable[[int, int | None], None] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> MaturationReport:
    """Store the reward of every decision whose window ended on or before ``as_of``.

    The pending decisions are matured by ranges of customer ids of about ``chunk`` decisions,
    each in its own transaction: a range reads its decisions, its customers' events and sends
    of the period as Arrow columns (no Python object per row), computes in numpy and writes its
    rewards in bulk. An interrupted maturation keeps the ranges it committed; the next call
    matures the rest (a decision already matured is skipped, also when two calls race).

    With ``workers`` (a local Dask cluster of that many processes) or ``scheduler`` (a running
    one), PostgreSQL only, each range is a task on the cluster (:func:`mature_partition`),
    retried elsewhere if its worker is lost.
    """
    require_schema(engine)
    distributed = bool(workers) or bool(scheduler)
    if distributed and engine.dialect.name != "postgresql":
        raise InputError(
            "--workers and --scheduler need PostgreSQL (SQLite has one writer): run without "
            "them, or point ORCH_DATABASE_URL at a PostgreSQL database"
        )
    started = time.perf_counter()
    report = MaturationReport(as_of=as_of)
    with engine.connect() as conn:
        total = int(
            conn.execute(
                sa.text(f"SELECT COUNT(*) FROM {PENDING} WHERE {PENDING_WHERE}"),
                {"as_of": as_of},
            ).scalar_one()
        )
        report.still_open = int(
            conn.execute(
                sa.text("SELECT COUNT(*) FROM decision WHERE window_end > :as_of"),
                {"as_of": as_of},
            ).scalar_one()
        )
        count = math.ceil(total / chunk)
        if distributed:  # at least two ranges a worker, so that the cluster shares the work
            count = max(count, 2 * (workers or 1))
        ranges = partition_bounds(conn, count) if total else []
    if progress and ranges:
        progress(0, total)
    if distributed and ranges:
        from orchestrator.distributed import engine_url, map_on_dask

        def add(part: dict[str, Any]) -> None:
            report.matured += part["matured"]
            report.converted += part["converted"]
            report.value += part["value"]
            if progress:
                progress(report.matured, total)

        calls = [(engine_url(engine), as_of, bounds) for bounds in ranges]
        map_on_dask(
            mature_partition,
            calls,
            workers=workers,
            scheduler=scheduler,
            name=f"orch-mature-{as_of}-{uuid.uuid4().hex[:8]}",
            on_result=add,
        )
    for bounds in [] if distributed else ranges:
        with engine.begin() as conn:
            mature_range(conn, as_of, bounds, report)
        if progress:
            progress(report.matured, total)
    report.seconds = time.perf_counter() - started
    return report


def mature_partition(url: str, as_of: date, bounds: Bounds) -> dict[str, Any]:
    """One range's maturation in its own connection (a Dask task): its counts as a dict."""
    from orchestrator.storage.db import make_engine

    engine = make_engine(url)
    try:
        part = MaturationReport(as_of=as_of)
        with engine.begin() as conn:
            mature_range(conn, as_of, bounds, part)
        return {"matured": part.matured, "converted": part.converted, "value": part.value}
    finally:
        engine.dispose()


def _within(conn: sa.Connection, bounds: Bounds, table: str) -> tuple[str, dict[str, Any]]:
    """SQL (``AND ...``) and parameters keeping ``table``'s customers inside ``(lo, hi]``."""
    order = collate(conn)
    lo, hi = bounds
    sql, params = "", {}
    if lo is not None:
        sql += f" AND {table}.customer_id{order} > :c_lo"
        params["c_lo"] = lo
    if hi is not None:
        sql += f" AND {table}.customer_id{order} <= :c_hi"
        params["c_hi"] = hi
    return sql, params


def _days(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dates (Arrow date32) as day numbers since 1970-01-01, int64."""
    return np.asarray(pc.cast(values, pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def mature_range(
    conn: sa.Connection, as_of: date, bounds: Bounds, report: MaturationReport
) -> None:
    """Mature the pending decisions of the customers in ``bounds`` (``(lo, hi]``, None: open)."""
    begin_write(conn)  # SQLite: read and write in one snapshot, not upgraded half-way
    within, params = _within(conn, bounds, "d")
    decisions = read_columns(
        conn,
        [
            Col("id", "d.id", "int"),
            Col("customer_id", "d.customer_id", "text"),
            Col("start", "d.run_date", "date"),
            Col("end", "d.window_end", "date"),
            Col("sent", "(d.\"group\" = 'test' AND d.campaign_id IS NOT NULL)", "bool"),
            Col("no_send", "(d.campaign_id IS NULL)", "bool"),
            Col("cost", "COALESCE(t.cost, 0)", "money"),
        ],
        from_sql=PENDING,
        where=PENDING_WHERE + within,
        params={"as_of": as_of, **params},
        chunk_key=DECISION_KEY,
    )
    if decisions.num_rows == 0:
        return
    ids = pc.unique(decisions.column("customer_id"))
    d_cust = _codes(decisions.column("customer_id"), ids)
    start_day, end_day = _days(decisions.column("start")), _days(decisions.column("end"))
    lo, hi = _date(int(start_day.min())), _date(int(end_day.max()))
    e_cust, e_day, e_amt, e_buy = _events(conn, bounds, ids, lo, hi)
    no_send = _bools(decisions.column("no_send"))
    if no_send.any():
        end_day = _cut_at_next_contact(conn, bounds, ids, d_cust, start_day, end_day, no_send)
    out = window_outcomes(d_cust, start_day, end_day, e_cust, e_day, e_amt, e_buy)
    sent = _bools(decisions.column("sent"))
    cost = np.where(sent, decisions.column("cost").to_numpy(), 0.0)
    value = out.revenue - cost
    rewards = pa.table(
        {
            "decision_id": decisions.column("id"),
            "value": value,
            "revenue": out.revenue,
            "cost": cost,
            "converted": out.converted,
            "matured_at": constant_timestamp(utcnow(), len(value)),
            "window_days": end_day - start_day,
        }
    )
    # A decision another maturation stored meanwhile (PostgreSQL) is skipped, not doubled.
    report.matured += insert_arrow(conn, "reward", rewards, on_conflict_do_nothing=("decision_id",))
    report.converted += int(out.converted.sum())
    report.value += float(value.sum())


def _codes(customers: pa.ChunkedArray, ids: pa.Array) -> np.ndarray:
    """Each row's index in ``ids`` (-1 when not there), int64."""
    index = pc.fill_null(pc.index_in(customers, value_set=ids), -1)
    return np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)


def _bools(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _events(
    conn: sa.Connection, bounds: Bounds, ids: pa.Array, lo: date, hi: date
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The events from ``lo`` to before ``hi`` of the customers ``ids``: their codes, days,
    amounts and whether each is a purchase."""
    within, params = _within(conn, bounds, "e")
    kinds = ", ".join("'" + t + "'" for t in PURCHASE_TYPES)
    events = read_columns(
        conn,
        [
            Col("customer_id", "e.customer_id", "text"),
            Col("day", day_of(conn, "e.occurred_at"), "date"),
            Col("amount", "e.amount", "money"),
            Col("buy", f"(e.type IN ({kinds}))", "bool"),
        ],
        from_sql="event e",
        where="e.occurred_at >= :e_lo AND e.occurred_at < :e_hi" + within,
        params={
            "e_lo": datetime.combine(lo, datetime.min.time()),
            "e_hi": datetime.combine(hi, datetime.min.time()),
            **params,
        },
        chunk_key="e.id",
    )
    code = _codes(events.column("customer_id"), ids)
    kept = code >= 0
    return (
        code[kept],
        _days(events.column("day"))[kept],
        events.column("amount").to_numpy()[kept],
        _bools(events.column("buy"))[kept],
    )


def _cut_at_next_contact(
    conn: sa.Connection,
    bounds: Bounds,
    ids: pa.Array,
    d_cust: np.ndarray,
    start_day: np.ndarray,
    end_day: np.ndarray,
    cut: np.ndarray,
) -> np.ndarray:
    """``end_day (n,)`` with the rows in ``cut`` ended at the customer's first contact (a
    test-group send) after the decision's day, when that comes before the window's end."""
    within, params = _within(conn, bounds, "d")
    sends = read_columns(
        conn,
        [Col("customer_id", "d.customer_id", "text"), Col("day", "d.run_date", "date")],
        from_sql="decision d",
        where=(
            "d.run_date > :s_lo AND d.run_date < :s_hi AND d.\"group\" = 'test' "
            "AND d.campaign_id IS NOT NULL" + within
        ),
        params={
            "s_lo": _date(int(start_day[cut].min())),
            "s_hi": _date(int(end_day[cut].max())),
            **params,
        },
        chunk_key=DECISION_KEY,
    )
    s_cust = _codes(sends.column("customer_id"), ids)
    kept = s_cust >= 0
    if not kept.any():
        return end_day
    s_cust, s_day = s_cust[kept], _days(sends.column("day"))[kept]
    # One sorted key per send, (customer, day); the first send after a decision's day is the
    # first key above (customer, start day).
    span = np.int64(1 << 32)
    keys = np.sort(s_cust * span + s_day)
    rows = np.flatnonzero(cut)
    probe = d_cust[rows] * span + start_day[rows]
    at = np.searchsorted(keys, probe, side="right")
    found = at < len(keys)
    nxt = np.where(found, keys[np.minimum(at, len(keys) - 1)], 0)
    same = found & (nxt // span == d_cust[rows])
    nxt_day = nxt % span
    out = end_day.copy()
    hit = same & (nxt_day < end_day[rows])
    out[rows[hit]] = nxt_day[hit]
    return out
