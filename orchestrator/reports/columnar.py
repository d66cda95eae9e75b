"""Read query results straight into Arrow columns, without a Python object per cell.

The DBAPI drivers build a Python object for every cell: about 3 µs a row for a 7-column query,
so 30 s for the 10 million decisions a report may read. Instead the database writes CSV text and
Arrow's multi-threaded CSV reader parses it:

- PostgreSQL: ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``.
- SQLite: each chunk of about a million rows (by ranges of an integer key, usually the rowid) is
  formatted by one ``printf`` per row and folded into one string by ``group_concat`` inside
  SQLite, then handed to Arrow (10M decisions: about 6 s instead of 30 s).

Text is quoted so that commas, quotes and line breaks in ids survive, and NULL stays distinct
from an empty string.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

KINDS: dict[str, pa.DataType] = {
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "money": pa.float64(),  # a float that is never NULL, exact to a millionth
    "date": pa.date32(),
    "bool": pa.bool_(),
}
MICRO = 1_000_000
CHUNK_ROWS = 1_000_000
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Col:
    """One output column: its name, an SQL expression, and its kind (a key of :data:`KINDS`)."""

    name: str
    sql: str
    kind: str


def is_postgres(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


def day_of(conn: sa.Connection, expr: str) -> str:
    """SQL for the calendar day (a date) of a timestamp column."""
    return f"CAST({expr} AS date)" if is_postgres(conn) else f"substr({expr}, 1, 10)"


def json_field(conn: sa.Connection, column: str, key: str) -> str:
    """SQL for one top-level value of a JSON column, as text (booleans as true/false)."""
    if is_postgres(conn):
        quoted = "'" + key.replace("'", "''") + "'"
        return f"({column} ->> {quoted})"
    path = "'$.\"" + key.replace("'", "''").replace('"', '\\"') + "\"'"
    return (
        f"(CASE json_type({column}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST(json_extract({column}, {path}) AS TEXT) END)"
    )


def _sqlite_line(cols: Sequence[Col]) -> str:
    """One ``printf`` per row: several times faster in SQLite than ``||`` concatenations.

    Text is SQL-quoted (``%Q``: ``'it''s'``, NULL unquoted); other values are SQLite's own text
    (reals with 15 significant digits), NULL as an empty field. ``money`` goes as an integer
    number of millionths: formatting integers costs SQLite half what reals do.
    """
    fmt = ",".join("%Q" if c.kind == "text" else "%s" for c in cols)
    args = [
        f"CAST(round(({c.sql}) * {MICRO}) AS INTEGER)" if c.kind == "money" else c.sql for c in cols
    ]
    return f"printf('{fmt}', {', '.join(args)})"


def _pg_field(col: Col) -> str:
    if col.kind == "bool":
        return f"CAST(({col.sql}) AS INTEGER) AS {col.name}"
    if col.kind == "text":
        return f"CAST({col.sql} AS TEXT) AS {col.name}"
    return f"{col.sql} AS {col.name}"


def _parse(data: bytes | bytearray | memoryview, cols: Sequence[Col], *, quote: str) -> pa.Table:
    """Parse CSV text: ``quote`` is ``"`` (PostgreSQL's CSV) or ``'`` (SQLite's ``%Q``)."""
    micro = quote == "'"
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=[c.name for c in cols], block_size=max(1 << 20, min(len(data), 64 << 20))
        ),
        parse_options=pa_csv.ParseOptions(
            quote_char=quote, double_quote=True, newlines_in_values=True
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                c.name: pa.int64() if micro and c.kind == "money" else KINDS[c.kind] for c in cols
            },
            null_values=["", "NULL"] if quote == "'" else [""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["1", "t", "true"],
            false_values=["0", "f", "false"],
        ),
    )
    if micro:
        for i, c in enumerate(cols):
            if c.kind == "money":
                money = pc.divide(pc.cast(table.column(i), pa.float64()), float(MICRO))
                table = table.set_column(i, c.name, money)
    return table


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def empty_table(cols: Sequence[Col]) -> pa.Table:
    return pa.table({c.name: pa.array([], KINDS[c.kind]) for c in cols})


def read_columns(
    conn: sa.Connection,
    cols: Sequence[Col],
    *,
    from_sql: str,
    where: str = "1 = 1",
    params: Mapping[str, Any] | None = None,
    chunk_key: str,
    chunk_rows: int = CHUNK_ROWS,
    size_where: str | None = None,
) -> pa.Table:
    """``SELECT cols FROM from_sql WHERE where`` as an Arrow table (row order unspecified).

    ``params`` are ``:name`` placeholders in ``from_sql`` and ``where``. ``chunk_key`` is an
    integer expression (a primary key or rowid) that SQLite reads are chunked by; chunks are
    sized by counting the rows of ``size_where`` (default ``where``; a cheaper condition that
    holds for every wanted row will do, and ``""`` takes the key's whole range as dense).
    """
    params = dict(params or {})
    for col in cols:
        if col.kind not in KINDS:
            raise ValueError(f"column {col.name!r}: unknown kind {col.kind!r}")
    raw = conn.connection.driver_connection
    assert raw is not None
    if is_postgres(conn):
        select = ", ".join(_pg_field(c) for c in cols)
        sql = _PARAM.sub(r"%(\1)s", f"SELECT {select} FROM {from_sql} WHERE {where}")
        buf = bytearray()
        with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as cp:
            for block in cp:
                buf += block
        return _parse(buf, cols, quote='"') if buf else empty_table(cols)
    plan = _sqlite_plan(raw, cols, from_sql, where, params, chunk_key, chunk_rows, size_where)
    parts = []
    for lo, hi in plan.ranges:
        text = raw.execute(plan.sql, {**plan.params, "_lo": lo, "_hi": hi}).fetchone()[0]
        if text:
            parts.append(_parse_sqlite(text.encode(), cols))
    return pa.concat_tables(parts) if parts else empty_table(cols)


def _parse_sqlite(text: bytes, cols: Sequence[Col]) -> pa.Table:
    # A final line without its newline loses the null of an empty last field (Arrow 26).
    return _parse(text + b"\n", cols, quote="'")


@dataclass(frozen=True)
class _SqlitePlan:
    """One chunked SQLite read: the chunk query (``:_lo``, ``:_hi`` bound per chunk)."""

    sql: str
    params: dict[str, Any]
    ranges: list[tuple[int, int]]


def _sqlite_plan(
    raw: Any,
    cols: Sequence[Col],
    from_sql: str,
    where: str,
    params: dict[str, Any],
    chunk_key: str,
    chunk_rows: int,
    size_where: str | None,
) -> _SqlitePlan:
    # As SQLAlchemy stores them on SQLite: dates "YYYY-MM-DD", datetimes "YYYY-MM-DD HH:MM:SS".
    params = {k: _sqlite_value(v) for k, v in params.items()}
    sizing = where if size_where is None else size_where
    if sizing.strip() in ("", "1 = 1"):
        lo, hi = raw.execute(
            f"SELECT min({chunk_key}), max({chunk_key}) FROM {from_sql}"
        ).fetchone()
        count = 0 if lo is None else hi - lo + 1
    else:
        lo, hi, count = raw.execute(
            f"SELECT min({chunk_key}), max({chunk_key}), count(*) FROM {from_sql} WHERE {sizing}",
            params,
        ).fetchone()
    line = _sqlite_line(cols)
    sql = (
        f"SELECT group_concat(line, char(10)) FROM (SELECT {line} AS line FROM {from_sql} "
        f"WHERE ({where}) AND {chunk_key} >= :_lo AND {chunk_key} < :_hi)"
    )
    if not count:
        return _SqlitePlan(sql, params, [])
    step = max(1, math.ceil((hi - lo + 1) * chunk_rows / count))
    return _SqlitePlan(sql, params, [(start, start + step) for start in range(lo, hi + 1, step)])


BACKGROUND_MIN_ROWS = 2_000_000
"""Reads of fewer rows than this are not worth starting a process for."""


def sqlite_file(engine: sa.Engine) -> str | None:
    """The file of a SQLite database (None for PostgreSQL or an in-memory database)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return path if path and path != ":memory:" and not path.startswith("file::memory") else None


def read_in_background(
    engine: sa.Engine,
    cols: Sequence[Col],
    *,
    rows: int,
    from_sql: str,
    where: str = "1 = 1",
    params: Mapping[str, Any] | None = None,
    chunk_key: str,
    chunk_rows: int = CHUNK_ROWS,
    size_where: str | None = None,
) -> Callable[[], pa.Table]:
    """Start :func:`read_columns` and return a function that waits for its table.

    SQLite formats rows in the process that asks, on one core however many there are, so a
    large read (``rows`` about ``BACKGROUND_MIN_ROWS`` or more) of a SQLite file is run by a
    child process (``python -m orchestrator.reports.sqlite_dump``: the standard library's sqlite3
    and nothing else) while the caller reads something else. Otherwise the read happens when
    asked.
    """
    path = sqlite_file(engine)
    query: dict[str, Any] = dict(
        from_sql=from_sql,
        where=where,
        params=dict(params or {}),
        chunk_key=chunk_key,
        chunk_rows=chunk_rows,
        size_where=size_where,
    )
    if path is None or rows < BACKGROUND_MIN_ROWS:

        def now() -> pa.Table:
            with engine.connect() as conn:
                return read_columns(conn, cols, **query)

        return now
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        plan = _sqlite_plan(raw, cols, **query)
    request = json.dumps(
        {"path": path, "sql": plan.sql, "params": plan.params, "ranges": plan.ranges}
    ).encode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.reports.sqlite_dump"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    result: dict[str, bytes] = {}
    # communicate() in a thread: reading the pipe releases the GIL while the caller works.
    reader = threading.Thread(
        target=lambda: result.update(zip(("out", "err"), proc.communicate(request), strict=True))
    )
    reader.start()

    def wait() -> pa.Table:
        reader.join()
        if proc.returncode != 0:
            err = result.get("err", b"").decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"reading {path} failed: {err[-1] if err else proc.returncode}")
        from orchestrator.reports.sqlite_dump import split_frames

        parts = [_parse_sqlite(frame, cols) for frame in split_frames(result["out"])]
        return pa.concat_tables(parts) if parts else empty_table(cols)

    return wait
