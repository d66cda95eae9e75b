"""Bulk writes through the raw driver connection: executemany on SQLite, COPY on PostgreSQL.

The ORM costs tens of microseconds a row; these helpers write well over 100k rows a second. They
run inside the caller's transaction (an ``sa.Connection`` from ``engine.begin()``), so a failed
import or run rolls back everything they wrote.

Values follow the storage conventions: datetimes naive UTC (``timestamp[us]`` in Arrow), written
on SQLite in the text format SQLAlchemy itself uses (``YYYY-MM-DD HH:MM:SS.ffffff``) so ORM reads
and range queries agree; JSON columns are given as JSON text.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from itertools import islice
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

CHUNK_ROWS = 100_000
DEFER_MIN_ROWS = 50_000
MAX_CHUNKS = 50


def chunk_rows_for(total: int) -> int:
    """Rows per chunk for writing ``total`` rows: :data:`CHUNK_ROWS`, or more past 50 chunks.

    Each chunk may be a PostgreSQL savepoint, and past 64 of them in one transaction every
    session's snapshots get slower.

    >>> chunk_rows_for(1_000), chunk_rows_for(10_000_000)
    (100000, 200000)
    """
    return max(CHUNK_ROWS, -(-total // MAX_CHUNKS))


def driver_connection(conn: sa.Connection) -> Any:
    """Return the DBAPI connection of ``conn`` (``sqlite3`` or ``psycopg``)."""
    return conn.connection.driver_connection


def is_postgres_conn(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def collate(conn: sa.Connection) -> str:
    """`` COLLATE "C"`` on PostgreSQL: customer ids compare byte-wise on both backends, so
    id ranges (batches, partitions) and their index scans are the same everywhere."""
    return collation(conn.dialect.name)


def collation(dialect: str) -> str:
    """`collate` for a dialect's name (for SQL run over another connection than SQLAlchemy's)."""
    return ' COLLATE "C"' if dialect == "postgresql" else ""


def quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _columns(conn: sa.Connection, columns: Sequence[str]) -> str:
    return ", ".join(quote(conn, c) for c in columns)


def begin_write(conn: sa.Connection) -> None:
    """Take SQLite's write lock now, so a long import cannot fail half-way on a busy database.

    PostgreSQL needs nothing: its row locks are taken as rows are written.
    """
    if is_postgres_conn(conn):
        return
    raw = driver_connection(conn)
    if not raw.in_transaction:
        raw.execute("BEGIN IMMEDIATE")


def advisory_lock(conn: sa.Connection, name: str) -> None:
    """Serialize writers of one kind until the transaction ends (SQLite is serialized anyway)."""
    if is_postgres_conn(conn):
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%(name)s))", {"name": name})


@contextmanager
def sqlite_cache(conn: sa.Connection, mib: int = 256) -> Iterator[None]:
    """Give SQLite a bigger page cache while bulk writing (random index inserts need it)."""
    if is_postgres_conn(conn):
        yield
        return
    raw = driver_connection(conn)
    before = raw.execute("PRAGMA cache_size").fetchone()[0]
    raw.execute(f"PRAGMA cache_size = -{int(mib) * 1024}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {int(before)}")


def count_up_to(conn: sa.Connection, table: str, limit: int) -> int:
    """Count the rows of ``table``, stopping at ``limit`` (cheap on big tables)."""
    sql = f"SELECT count(*) FROM (SELECT 1 FROM {quote(conn, table)} LIMIT {int(limit)}) AS s"
    return int(conn.exec_driver_sql(sql).scalar_one())


def worth_deferring(conn: sa.Connection, table: str, incoming: int) -> bool:
    """Whether rebuilding ``table``'s plain indexes beats maintaining them: many rows into few."""
    return incoming >= DEFER_MIN_ROWS and count_up_to(conn, table, incoming) < incoming


@contextmanager
def deferred_indexes(conn: sa.Connection, table: str, *, enabled: bool = True) -> Iterator[None]:
    """Drop the plain (non-unique) indexes of ``table`` and rebuild them when the block succeeds.

    Building an index once by sorting is several times faster than maintaining it row by row, but
    only worth it when the rows written outnumber the rows already there (see
    :func:`worth_deferring`). Unique indexes stay, so conflict detection keeps working. The drops
    are transactional on both backends: if the block fails, the rollback restores the indexes.
    On PostgreSQL the table is locked against readers until the transaction ends.
    """
    if not enabled:
        yield
        return
    # sqlite3 runs DDL outside any transaction unless one is open: open it, or a failed block
    # would leave the indexes dropped.
    begin_write(conn)
    postgres = is_postgres_conn(conn)
    rows: list[tuple[str, str]]
    if postgres:
        found = conn.exec_driver_sql(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = to_regclass(%(t)s) AND NOT i.indisunique AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            {"t": table},
        )
        rows = [(str(name), str(ddl)) for name, ddl in found]
    else:
        listed = conn.exec_driver_sql(f"PRAGMA index_list({quote(conn, table)})").all()
        plain = [str(row[1]) for row in listed if not row[2] and row[3] == "c"]
        rows = [
            (name, str(conn.exec_driver_sql(_SQLITE_INDEX_SQL, (name,)).scalar_one()))
            for name in plain
        ]
    for name, _ddl in rows:
        conn.exec_driver_sql(f"DROP INDEX {name if postgres else quote(conn, name)}")
    yield
    if postgres and rows:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for _name, ddl in rows:
        conn.exec_driver_sql(ddl)


_SQLITE_INDEX_SQL = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?"


def existing_keys(conn: sa.Connection, table: str, column: str, keys: Sequence[str]) -> set[str]:
    """Return which of ``keys`` are already in ``table.column`` (an indexed column)."""
    if not keys:
        return set()
    col, tab = quote(conn, column), quote(conn, table)
    # One JSON text parameter: far cheaper to send than a 100k-element array.
    listed = orjson.dumps(list(keys)).decode()
    if is_postgres_conn(conn):
        cur = driver_connection(conn).cursor()
        cur.execute(
            f"SELECT {col} FROM {tab} "
            f"WHERE {col} = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))",
            (listed,),
        )
        return {row[0] for row in cur}
    sql = f"SELECT {col} FROM {tab} WHERE {col} IN (SELECT value FROM json_each(?))"
    return {row[0] for row in driver_connection(conn).execute(sql, (listed,))}


# --- rows as Python tuples ------------------------------------------------------------------


def bulk_insert(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    on_conflict_do_nothing: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    native: bool = False,
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order); return how many were inserted.

    Values are Python values: datetimes naive UTC, dicts and lists for JSON columns; with
    ``native`` they are already what the driver stores (str, int, float, bytes, None: dates as
    ISO text) and go in unconverted. With ``on_conflict_do_nothing`` (the columns of a unique
    constraint), rows whose key exists, in the table or earlier in ``rows``, are skipped
    instead of failing.
    """
    inserted = 0
    iterator = iter(rows)
    postgres = is_postgres_conn(conn)
    convert = _pg_value if postgres else _sqlite_value

    def chunks() -> Iterator[list[tuple[Any, ...]]]:
        while chunk := list(islice(iterator, chunk_rows)):
            yield [tuple(r) for r in chunk] if native else [tuple(map(convert, r)) for r in chunk]

    for chunk in chunks():
        if postgres:
            inserted += _pg_insert_rows(conn, table, columns, chunk, on_conflict_do_nothing)
        else:
            inserted += _sqlite_executemany(conn, table, columns, chunk, on_conflict_do_nothing)
    return inserted


def _sqlite_value(value: Any) -> Any:
    """A value as SQLAlchemy would store it on SQLite (datetimes in its text format)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def _pg_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def _sqlite_executemany(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: tuple[str, ...] | None,
) -> int:
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {quote(conn, table)} ({_columns(conn, columns)}) VALUES ({marks})"
    if conflict:
        sql += f" ON CONFLICT ({_columns(conn, conflict)}) DO NOTHING"
    cur = driver_connection(conn).cursor()
    cur.executemany(sql, rows)
    return int(cur.rowcount)


def _pg_copy_rows(
    conn: sa.Connection, target: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    cur = driver_connection(conn).cursor()
    with cur.copy(f"COPY {target} ({_columns(conn, columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _pg_insert_rows(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: tuple[str, ...] | None,
) -> int:
    target = quote(conn, table)
    if not conflict:
        _pg_copy_rows(conn, target, columns, rows)
        return len(rows)
    stage = _pg_stage(conn, table, columns)
    _pg_copy_rows(conn, stage, columns, rows)
    return _pg_insert_from_stage(conn, table, stage, columns, conflict)


def _pg_stage(conn: sa.Connection, table: str, columns: Sequence[str]) -> str:
    """Create an empty temporary table with ``columns`` typed as in ``table``."""
    stage = quote(conn, f"_orch_stage_{table}")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
        f"SELECT {_columns(conn, columns)} FROM {quote(conn, table)} WITH NO DATA"
    )
    return stage


def _pg_insert_from_stage(
    conn: sa.Connection, table: str, stage: str, columns: Sequence[str], conflict: tuple[str, ...]
) -> int:
    cols = _columns(conn, columns)
    cur = driver_connection(conn).cursor()
    cur.execute(
        f"INSERT INTO {quote(conn, table)} ({cols}) SELECT {cols} FROM {stage} "
        f"ON CONFLICT ({_columns(conn, conflict)}) DO NOTHING"
    )
    inserted = int(cur.rowcount)
    cur.execute(f"DROP TABLE {stage}")
    return inserted


# --- rows as Arrow tables ---------------------------------------------------------------------


def copy_arrow(conn: sa.Connection, table: str, data: pa.Table) -> None:
    """COPY ``data`` into ``table`` on PostgreSQL (CSV made by Arrow: no per-row Python)."""
    if data.num_rows == 0:
        return
    buf = io.BytesIO()
    pa_csv.write_csv(data, buf, pa_csv.WriteOptions(include_header=False))
    cur = driver_connection(conn).cursor()
    sql = f"COPY {quote(conn, table)} ({_columns(conn, data.column_names)}) FROM STDIN (FORMAT csv)"
    with cur.copy(sql) as copy:
        copy.write(buf.getbuffer())


def try_copy_arrow(conn: sa.Connection, table: str, data: pa.Table) -> bool:
    """COPY ``data`` in a savepoint; False, with nothing written, if a unique key exists already."""
    import psycopg  # PostgreSQL only: the driver takes 0.2 s to load, which SQLite need not pay

    cur = driver_connection(conn).cursor()
    cur.execute("SAVEPOINT orch_bulk")
    try:
        copy_arrow(conn, table, data)
    except psycopg.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT orch_bulk")
        return False
    cur.execute("RELEASE SAVEPOINT orch_bulk")
    return True


def arrow_to_rows(data: pa.Table) -> list[tuple[Any, ...]]:
    """Turn an Arrow table into DBAPI tuples for SQLite (timestamps and dates as text)."""
    columns: list[list[Any]] = []
    for col in data.itercolumns():
        kind = col.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            col = pc.cast(col, pa.string())
        if (pa.types.is_floating(kind) or pa.types.is_integer(kind)) and col.null_count == 0:
            columns.append(np.asarray(col).tolist())
        else:
            columns.append(col.to_pylist())
    return list(zip(*columns, strict=True))


def insert_arrow(
    conn: sa.Connection,
    table: str,
    data: pa.Table,
    *,
    on_conflict_do_nothing: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Insert the rows of ``data`` (columns named as in ``table``); return how many were inserted.

    Timestamps must be naive UTC ``timestamp[us]``, JSON columns JSON text. ``progress`` gets the
    number of rows written so far after each chunk.
    """
    chunks = (
        (data.slice(start, chunk_rows), min(chunk_rows, data.num_rows - start))
        for start in range(0, data.num_rows, chunk_rows)
    )
    return insert_arrow_chunks(
        conn, table, chunks, on_conflict_do_nothing=on_conflict_do_nothing, progress=progress
    )


def insert_arrow_chunks(
    conn: sa.Connection,
    table: str,
    chunks: Iterable[tuple[pa.Table, int]],
    *,
    on_conflict_do_nothing: tuple[str, ...] | None = None,
    progress: Callable[[int], None] | None = None,
    after: Callable[[pa.Table, int], None] | None = None,
) -> int:
    """Insert ``(data, weight)`` chunks as they are produced; return how many rows were inserted.

    On PostgreSQL each chunk is written on a worker thread while the caller's iterator produces
    the next one, so preparing (here) and inserting (in the server) overlap. Not on SQLite: it
    releases the GIL for every row it steps, and the two threads would convoy on it.
    ``progress`` gets the running sum of the weights of the written chunks (e.g. input rows
    accounted for). With ``on_conflict_do_nothing`` (a unique key), rows whose key exists, in
    the table or earlier in the chunks, are skipped. ``after(data, inserted)`` is called once
    each chunk is written, in order, on the caller's thread and before the next write starts
    (it may use ``conn``).
    """
    writer = _ChunkWriter(conn, table, on_conflict_do_nothing)
    inserted = done = 0

    def finished(data: pa.Table, count: int, weight: int) -> None:
        nonlocal inserted, done
        inserted += count
        done += weight
        if after is not None:
            after(data, count)
        if progress is not None:
            progress(done)

    if not is_postgres_conn(conn):
        for data, weight in chunks:
            finished(data, writer.write(data), weight)
        return inserted
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-bulk") as pool:
        pending: tuple[Future[int], pa.Table, int] | None = None
        for data, weight in chunks:
            if pending is not None:
                finished(pending[1], pending[0].result(), pending[2])
            pending = (pool.submit(writer.write, data), data, weight)
        if pending is not None:
            finished(pending[1], pending[0].result(), pending[2])
    return inserted


class _ChunkWriter:
    """Writes Arrow chunks into one table; on PostgreSQL, adapts to how many keys exist already.

    Fresh keys (the usual case) are COPYed straight into the table inside a savepoint. When a
    chunk hits an existing key, it is rolled back and redone with a pre-check of its keys, and
    later chunks are pre-checked too until one turns out to have no existing key.

    Rows are written in key order within each chunk: the unique index then takes them page by
    page instead of all over the tree, which halves the write time on PostgreSQL.
    """

    def __init__(self, conn: sa.Connection, table: str, conflict: tuple[str, ...] | None) -> None:
        self.conn = conn
        self.table = table
        self.conflict = conflict
        self.optimistic = True

    def write(self, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        conn, table, conflict = self.conn, self.table, self.conflict
        if conflict and len(conflict) == 1:
            data = data.take(pc.sort_indices(data.column(conflict[0])))
        if not is_postgres_conn(conn):
            return _sqlite_executemany(
                conn, table, data.column_names, arrow_to_rows(data), conflict
            )
        if not conflict:
            copy_arrow(conn, table, data)
            return data.num_rows
        if self.optimistic and try_copy_arrow(conn, table, data):
            return data.num_rows
        if len(conflict) > 1:
            stage = _pg_stage(conn, table, data.column_names)
            copy_arrow(conn, stage, data)
            return _pg_insert_from_stage(conn, table, stage, data.column_names, conflict)
        keys = data.column(conflict[0])
        data = data.take(pa.array(first_of_each(keys)))
        seen = existing_keys(conn, table, conflict[0], data.column(conflict[0]).to_pylist())
        self.optimistic = not seen
        if seen:
            data = data.filter(pc.invert(pc.is_in(data.column(conflict[0]), pa.array(list(seen)))))
        if data.num_rows == 0 or try_copy_arrow(conn, table, data):
            return data.num_rows
        # Another transaction inserted some of these keys meanwhile: let PostgreSQL sort it out.
        stage = _pg_stage(conn, table, data.column_names)
        copy_arrow(conn, stage, data)
        return _pg_insert_from_stage(conn, table, stage, data.column_names, conflict)


def first_of_each(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Indices of the first occurrence of each distinct key, in order, shape (k,)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    codes = np.asarray(keys.dictionary_encode().indices.to_numpy(zero_copy_only=False))
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    # Arrow numbers distinct values in order of first appearance: a first occurrence is a row
    # whose code exceeds every code before it.
    before = np.maximum.accumulate(np.concatenate(([-1], codes[:-1])))
    first = np.flatnonzero(codes > before)
    if len(first) != int(codes.max()) + 1:  # not numbered in order after all: sort instead
        _, first = np.unique(codes, return_index=True)
        first.sort()
    return first.astype(np.int64)
