"""Bulk writes through the raw driver connection: executemany on SQLite, COPY on PostgreSQL.

The ORM costs tens of microseconds a row; these helpers write well over 100k rows a second. They
run inside the caller's transaction (an ``sa.Connection`` from ``engine.begin()``), so a failed
import or run rolls back everything they wrote.

Values follow the storage conventions: datetimes naive UTC, written on SQLite in the text format
SQLAlchemy itself uses (``YYYY-MM-DD HH:MM:SS.ffffff``) so ORM reads and range queries agree; JSON
columns are given as JSON text.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

CHUNK_ROWS = 100_000
Progress = Callable[[int], None]


def driver_connection(conn: sa.Connection) -> Any:
    """Return the DBAPI connection (``sqlite3.Connection`` or ``psycopg.Connection``) of ``conn``."""
    return conn.connection.driver_connection


def is_postgres_conn(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


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
    """Serialize writers of one kind until the transaction ends (PostgreSQL; SQLite locks anyway)."""
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


@contextmanager
def deferred_indexes(conn: sa.Connection, table: str, *, enabled: bool = True) -> Iterator[None]:
    """Drop the plain (non-unique) indexes of ``table`` and rebuild them when the block succeeds.

    Building an index once by sorting is several times faster than maintaining it row by row, but
    only worth it when the rows written outnumber the rows already there. Unique indexes stay, so
    conflict detection keeps working. The drops are transactional on both backends: if the block
    fails, the rollback restores the indexes.
    """
    if not enabled:
        yield
        return
    if is_postgres_conn(conn):
        rows = conn.exec_driver_sql(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = to_regclass(%(t)s) AND NOT i.indisunique AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            {"t": table},
        ).all()
    else:
        listed = conn.exec_driver_sql(f"PRAGMA index_list({quote(conn, table)})").all()
        plain = [row[1] for row in listed if not row[2] and row[3] == "c"]
        rows = [
            (name, conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
             .scalar_one())
            for name in plain
        ]
    for name, _ddl in rows:
        conn.exec_driver_sql(f"DROP INDEX {name if is_postgres_conn(conn) else quote(conn, name)}")
    yield
    if is_postgres_conn(conn) and rows:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for _name, ddl in rows:
        conn.exec_driver_sql(ddl)


def existing_keys(conn: sa.Connection, table: str, column: str, keys: Sequence[str]) -> set[str]:
    """Return which of ``keys`` are already in ``table.column`` (an indexed column)."""
    if not keys:
        return set()
    col, tab = quote(conn, column), quote(conn, table)
    if is_postgres_conn(conn):
        cur = driver_connection(conn).cursor()
        cur.execute(f"SELECT {col} FROM {tab} WHERE {col} = ANY(%s)", (list(keys),))
        return {row[0] for row in cur}
    sql = f"SELECT {col} FROM {tab} WHERE {col} IN (SELECT value FROM json_each(?))"
    cur = driver_connection(conn).execute(sql, (orjson.dumps(list(keys)).decode(),))
    return {row[0] for row in cur}


# --- rows as Python tuples ------------------------------------------------------------------


def bulk_insert(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    on_conflict_do_nothing: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Insert ``rows`` (tuples in ``columns`` order); return how many were inserted.

    With ``on_conflict_do_nothing`` (the columns of a unique constraint), rows whose key exists,
    in the table or earlier in ``rows``, are skipped instead of failing.
    """
    inserted = 0
    iterator = iter(rows)
    while chunk := [tuple(r) for r in islice(iterator, chunk_rows)]:
        if is_postgres_conn(conn):
            inserted += _pg_insert_chunk(conn, table, columns, chunk, on_conflict_do_nothing)
        else:
            inserted += _sqlite_executemany(conn, table, columns, chunk, on_conflict_do_nothing)
    return inserted


def _insert_sql(
    conn: sa.Connection, table: str, columns: Sequence[str], conflict: tuple[str, ...] | None
) -> str:
    cols = ", ".join(quote(conn, c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {quote(conn, table)} ({cols}) VALUES ({marks})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(quote(conn, c) for c in conflict)}) DO NOTHING"
    return sql


def _sqlite_executemany(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: tuple[str, ...] | None,
) -> int:
    cur = driver_connection(conn).cursor()
    cur.executemany(_insert_sql(conn, table, columns, conflict), rows)
    return int(cur.rowcount)


def _pg_copy_rows(
    conn: sa.Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    cols = ", ".join(quote(conn, c) for c in columns)
    cur = driver_connection(conn).cursor()
    with cur.copy(f"COPY {quote(conn, table)} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _pg_insert_chunk(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: tuple[str, ...] | None,
) -> int:
    if not conflict:
        _pg_copy_rows(conn, table, columns, rows)
        return len(rows)
    key_at = [list(columns).index(c) for c in conflict]
    unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        unique.setdefault(tuple(row[i] for i in key_at), row)
    fresh = list(unique.values())
    if len(conflict) == 1:
        seen = existing_keys(conn, table, conflict[0], [k[0] for k in unique])
        fresh = [row for key, row in unique.items() if key[0] not in seen]
    return _pg_write_new(
        conn, table, columns, conflict, fresh, lambda: _pg_copy_rows(conn, table, columns, fresh)
    )


def _pg_write_new(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    conflict: tuple[str, ...],
    fresh: Any,
    copy_into: Callable[[], None],
) -> int:
    """COPY rows believed new; if another writer got there first, redo them ignoring conflicts."""
    n = len(fresh)
    if n == 0:
        return 0
    cur = driver_connection(conn).cursor()
    if len(conflict) == 1:
        cur.execute("SAVEPOINT orch_bulk")
        try:
            copy_into()
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT orch_bulk")
        else:
            cur.execute("RELEASE SAVEPOINT orch_bulk")
            return n
    stage = _pg_stage(conn, table, columns)
    _copy_into_stage(conn, stage, columns, fresh)
    cols = ", ".join(quote(conn, c) for c in columns)
    keys = ", ".join(quote(conn, c) for c in conflict)
    cur.execute(
        f"INSERT INTO {quote(conn, table)} ({cols}) SELECT {cols} FROM {stage} "
        f"ON CONFLICT ({keys}) DO NOTHING"
    )
    inserted = int(cur.rowcount)
    cur.execute(f"DROP TABLE {stage}")
    return inserted


def _pg_stage(conn: sa.Connection, table: str, columns: Sequence[str]) -> str:
    """Create an empty temporary table with ``columns`` typed as in ``table``."""
    stage = quote(conn, f"_orch_stage_{table}")
    cols = ", ".join(quote(conn, c) for c in columns)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
        f"SELECT {cols} FROM {quote(conn, table)} WITH NO DATA"
    )
    return stage


def _copy_into_stage(conn: sa.Connection, stage: str, columns: Sequence[str], fresh: Any) -> None:
    if isinstance(fresh, pa.Table):
        copy_arrow(conn, stage, fresh, quoted=True)
    else:
        cols = ", ".join(quote(conn, c) for c in columns)
        cur = driver_connection(conn).cursor()
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
            for row in fresh:
                copy.write_row(row)


# --- rows as Arrow tables ---------------------------------------------------------------------


def insert_arrow(
    conn: sa.Connection,
    table: str,
    data: pa.Table,
    *,
    on_conflict_do_nothing: tuple[str, ...] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> int:
    """Insert the rows of ``data`` (columns named as in ``table``); return how many were inserted.

    Timestamps must be naive UTC ``timestamp[us]``, JSON columns JSON text. ``progress`` gets the
    number of rows handled after each chunk. With ``on_conflict_do_nothing``, the caller must
    have removed duplicate keys from ``data`` (PostgreSQL would otherwise fall back to the slow
    path for the chunk).
    """
    inserted = 0
    done = 0
    for start in range(0, data.num_rows, chunk_rows):
        chunk = data.slice(start, chunk_rows)
        if is_postgres_conn(conn):
            inserted += _pg_insert_arrow(conn, table, chunk, on_conflict_do_nothing)
        else:
            rows = arrow_to_rows(chunk)
            inserted += _sqlite_executemany(
                conn, table, chunk.column_names, rows, on_conflict_do_nothing
            )
        done += chunk.num_rows
        if progress is not None:
            progress(done)
    return inserted


def _pg_insert_arrow(
    conn: sa.Connection, table: str, chunk: pa.Table, conflict: tuple[str, ...] | None
) -> int:
    if not conflict:
        copy_arrow(conn, table, chunk)
        return chunk.num_rows
    fresh = chunk
    if len(conflict) == 1:
        keys = chunk.column(conflict[0]).to_pylist()
        seen = existing_keys(conn, table, conflict[0], keys)
        if seen:
            mask = pc.invert(pc.is_in(chunk.column(conflict[0]), pa.array(list(seen))))
            fresh = chunk.filter(mask)
    return _pg_write_new(
        conn, table, chunk.column_names, conflict, fresh, lambda: copy_arrow(conn, table, fresh)
    )


def copy_arrow(conn: sa.Connection, table: str, data: pa.Table, *, quoted: bool = False) -> None:
    """COPY ``data`` into ``table`` on PostgreSQL (CSV made by Arrow: no per-row Python)."""
    if data.num_rows == 0:
        return
    buf = io.BytesIO()
    pa_csv.write_csv(data, buf, pa_csv.WriteOptions(include_header=False))
    cols = ", ".join(quote(conn, c) for c in data.column_names)
    target = table if quoted else quote(conn, table)
    cur = driver_connection(conn).cursor()
    with cur.copy(f"COPY {target} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buf.getbuffer())


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
