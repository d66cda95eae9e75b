"""Reading the events a segment refresh summarizes: purchases and returns before a day, as columns.

SQLite: one table scan fetched in chunks (most of the time goes into making Python objects of
the values). PostgreSQL: ``COPY ... TO STDOUT`` parsed by Arrow.

A long-lived process (the daemon, `orch simulate`) refreshes every day over the same, growing
history; on SQLite it keeps the last read and reads only what is new since: an import skips an
event it already has, and ``--update``, which corrects one in place, gives it a new import
time. Before reusing the rows up to the newest id read it checks that they are still there and
unchanged (their count and their latest import time), then reads the events inserted since
and those of the days between the two ends that were already there (late arrivals), and keeps
the rows in id order, the order of a full scan. PostgreSQL is read whole: its COPY is fast, and
ids there are not committed in order. The cache holds at most ``ORCH_EVENTS_CACHE_MB``
(default 512).
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from orchestrator.storage.bulk import driver_connection, is_postgres_conn

FETCH_ROWS = 200_000
EVENT_COLUMNS = ("customer_id", "day", "is_return", "amount", "discount", "category", "channel")
EVENT_TYPES = pa.schema(
    [
        ("customer_id", pa.string()),
        ("day", pa.date32()),
        ("is_return", pa.bool_()),
        ("amount", pa.float64()),
        ("discount", pa.float64()),
        ("category", pa.string()),
        ("channel", pa.string()),
    ]
)


def latest_event_day(conn: sa.Connection) -> date | None:
    """The day of the most recent event, or None when there is none."""
    value = conn.execute(sa.text("SELECT max(occurred_at) FROM event")).scalar_one_or_none()
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    return date.fromisoformat(str(value)[:10])


def has_events(conn: sa.Connection, end: date) -> bool:
    """Whether any event happened before the start of ``end``."""
    sql = sa.text("SELECT 1 FROM event WHERE occurred_at < :end LIMIT 1")
    return conn.execute(sql, {"end": time_bound(conn, end)}).first() is not None


def time_bound(conn: sa.Connection, end: date) -> Any:
    """Midnight starting ``end``, as a bound in ``occurred_at < bound``.

    SQLite keeps timestamps as text: the bare date sorts after every timestamp of the days before
    it, whatever its format, and before every timestamp of ``end`` itself.
    """
    if is_postgres_conn(conn):
        return datetime.combine(end, datetime.min.time())
    return end.isoformat()


def read_events(conn: sa.Connection, end: date) -> pa.Table:
    """Purchase and return events before ``end`` as columns (``EVENT_TYPES``)."""
    if is_postgres_conn(conn):
        return _read_events_postgres(conn, end)
    return _cached_sqlite(conn, end)


_WITH_ID = pa.schema([("id", pa.int64()), *EVENT_TYPES])


def _fetch(cur: Any, where: str, params: tuple[Any, ...]) -> pa.Table:
    """Purchase and return events matching ``where``, with their ids (``_WITH_ID``)."""
    # `+occurred_at` keeps SQLite from walking the time index (a random table lookup per row):
    # one sequential scan is far cheaper for any as-of day. Most of the time goes into making
    # Python objects of the values; columns are built per chunk to keep memory flat.
    cur.execute(
        "SELECT id, customer_id, substr(occurred_at, 1, 10), type = 'return', amount, discount, "
        f"category, channel FROM event WHERE type IN ('purchase', 'return') AND {where}",
        params,
    )
    text_types = [pa.int64(), pa.string(), pa.string(), pa.int8(), *EVENT_TYPES.types[3:]]
    batches = []
    while rows := cur.fetchmany(FETCH_ROWS):
        arrays = [pa.array([row[i] for row in rows], kind) for i, kind in enumerate(text_types)]
        arrays[2] = pc.cast(arrays[2], pa.date32())
        arrays[3] = pc.not_equal(arrays[3], 0)
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=_WITH_ID))
    return pa.Table.from_batches(batches, schema=_WITH_ID)


def _read_events_postgres(conn: sa.Connection, end: date) -> pa.Table:
    sql = (
        "COPY (SELECT customer_id, occurred_at::date, type = 'return', amount, discount, "
        "category, channel FROM event "
        "WHERE type IN ('purchase', 'return') AND occurred_at < %s) TO STDOUT (FORMAT csv)"
    )
    buf = io.BytesIO()
    cur = driver_connection(conn).cursor()
    with cur.copy(sql, (time_bound(conn, end),)) as copy:
        for chunk in copy:
            buf.write(chunk)
    if buf.tell() == 0:
        return EVENT_TYPES.empty_table()
    buf.seek(0)
    # COPY's CSV: NULL is an empty unquoted field, an empty string is quoted ("").
    return pa_csv.read_csv(
        buf,
        read_options=pa_csv.ReadOptions(column_names=list(EVENT_COLUMNS)),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=EVENT_TYPES,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def read_customer_ids(conn: sa.Connection) -> pa.Array:
    """Every id of the ``customer`` table."""
    cur = driver_connection(conn).cursor()
    cur.execute("SELECT customer_id FROM customer")
    return pa.array([row[0] for row in cur.fetchall()], pa.string())


@dataclass
class _Read:
    """Events with ``id <= max_id`` and before ``end``, in id order (an ``id`` column first)."""

    end: date
    max_id: int
    count: int  # events of any type with id <= max_id
    stamp: str  # the latest imported_at among them (an update in place sets it anew)
    table: pa.Table


_LOCK = threading.Lock()
_CACHE: dict[str, _Read] = {}


def _budget() -> int:
    return int(float(os.environ.get("ORCH_EVENTS_CACHE_MB", "512")) * 2**20)


def _cached_sqlite(conn: sa.Connection, end: date) -> pa.Table:
    key = str(conn.engine.url)
    cur = driver_connection(conn).cursor()
    cur.execute("SELECT COUNT(*), MAX(id) FROM event")
    total, newest = cur.fetchone()
    newest = int(newest or 0)
    stamp = _stamp(cur, newest)
    with _LOCK:
        old = _CACHE.pop(key, None)
    table: pa.Table | None = None
    if old is not None and end >= old.end and _still_there(cur, old):
        new = _fetch(cur, "id > ? AND +occurred_at < ?", (old.max_id, time_bound(conn, end)))
        late = _fetch(
            cur,
            "occurred_at >= ? AND occurred_at < ? AND id <= ?",
            (time_bound(conn, old.end), time_bound(conn, end), old.max_id),
        )
        table = pa.concat_tables([old.table, late, new])
        if late.num_rows:
            table = table.take(pc.sort_indices(table.column("id")))
    if table is None:
        table = _fetch(cur, "+occurred_at < ?", (time_bound(conn, end),))
    if table.nbytes <= _budget():
        with _LOCK:
            _CACHE[key] = _Read(end, newest, int(total), stamp, table)
    return table.drop_columns(["id"])


def _stamp(cur: Any, event_id: int) -> str:
    """The latest import time of the events up to ``event_id``."""
    cur.execute("SELECT MAX(imported_at) FROM event WHERE id <= ?", (event_id,))
    row = cur.fetchone()
    return str(row[0]) if row and row[0] is not None else ""


def _still_there(cur: Any, old: _Read) -> bool:
    cur.execute("SELECT COUNT(*), MAX(id) FROM event WHERE id <= ?", (old.max_id,))
    count, newest = cur.fetchone()
    same = (int(count), int(newest or 0)) == (old.count, old.max_id)
    return same and _stamp(cur, old.max_id) == old.stamp


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
