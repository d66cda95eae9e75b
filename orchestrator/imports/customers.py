"""Import customers: upsert by ``customer_id``, attribute columns merged into ``attributes``.

Each attribute column has a type in the ``customer_attribute`` registry; a column not there yet
gets its type inferred and registered (origin ``import``) in the same transaction. An existing
customer keeps the attributes the file does not mention; an empty cell removes that attribute
(JSON merge-patch semantics, identical on SQLite and PostgreSQL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import ImportFileError
from orchestrator.imports.common import (
    column,
    constant_timestamp,
    first_occurrences,
    progress_of,
    require_columns,
    text_field,
    write_rejects,
)
from orchestrator.imports.convert import (
    DTYPES,
    Converted,
    convert,
    empty_cells,
    infer,
    json_objects,
    json_value,
    member,
    shown,
)
from orchestrator.imports.problems import Problems
from orchestrator.imports.report import ImportReport, Progress
from orchestrator.imports.source import Source, read_source
from orchestrator.storage import bulk
from orchestrator.storage.models import metadata, utcnow

EPOCH = date(1970, 1, 1)

ID = "customer_id"
MAX_ID = 128
MAX_NAME = 64
STAGE = "_orch_customer_patch"


@dataclass
class _Attribute:
    """One attribute column: its values as JSON text (null where empty) and its empty cells."""

    name: str
    json: pa.Array
    empty: np.ndarray


@dataclass
class _Prepared:
    """The customers of a file, shape (n,) each: ids and their attribute columns."""

    ids: pa.Array
    attributes: list[_Attribute]
    problems: Problems
    new_attributes: dict[str, str] = field(default_factory=dict)


def import_customers(
    engine: sa.Engine,
    path: str | Path,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Upsert the customers of a CSV, Parquet or JSON-lines file in one transaction.

    Raises :class:`ImportFileError` on the first bad row unless ``skip_invalid``, in which case
    bad rows go to a reject file and the others are written.
    """
    started = time.perf_counter()
    source = read_source(path, fmt)
    require_columns(source, [ID])
    attributes = [name for name in source.table.column_names if name != ID]
    for name in attributes:
        if len(name) > MAX_NAME:
            raise ImportFileError(
                f"{source.label}: column name {name!r} is longer than {MAX_NAME} characters"
            )
        _check_attribute_name(source.label, name)
    now = utcnow()
    with engine.begin() as conn:
        bulk.begin_write(conn)
        bulk.advisory_lock(conn, "orch.import.customers")
        registry = {
            name: dtype
            for name, dtype in conn.exec_driver_sql("SELECT name, dtype FROM customer_attribute")
        }
        ranges = _declared_ranges(conn)
        prepared = _prepare(source, attributes, registry, ranges)
        if not skip_invalid:
            prepared.problems.raise_first()
        _register(conn, prepared.new_attributes, now)
        good = ~prepared.problems.bad()
        with bulk.sqlite_cache(conn):
            inserted, updated = _write(conn, prepared, good, now, progress)
    rejected, written = write_rejects(
        source, prepared.problems, skip_invalid=skip_invalid, rejects_path=rejects_path
    )
    return ImportReport(
        path=str(path),
        rows_read=source.rows_read,
        inserted=inserted,
        updated=updated,
        unchanged_or_duplicate=int(good.sum()) - inserted - updated,
        rejected=rejected,
        rejects_path=written,
        seconds=time.perf_counter() - started,
        new_attributes=prepared.new_attributes,
    )


def _check_attribute_name(label: str, name: str) -> None:
    """A customer column becomes a rule field: it must be one a rule can name, and not the name
    of a computed feature (rules would read the computed one, never the column)."""
    from orchestrator.features import builtin_schema
    from orchestrator.rules.parser import KEYWORDS, NAME_PATTERN

    if name in builtin_schema():
        raise ImportFileError(
            f"{label}: column {name!r} has the name of a computed feature (rules would read the "
            "computed one, never this column): rename the column"
        )
    if not NAME_PATTERN.fullmatch(name) or name in KEYWORDS:
        raise ImportFileError(
            f"{label}: column name {name!r} cannot be used in rules: use letters, digits and _ "
            "(not first), and not a keyword of the rule language"
        )


def _declared_ranges(conn: sa.Connection) -> dict[str, tuple[Any, Any]]:
    """The plan's ``settings.attribute_ranges``: ``{name: (min, max)}``, None for no bound."""
    value = conn.execute(
        sa.text("SELECT value FROM plan_setting WHERE key = 'attribute_ranges'")
    ).scalar()
    if isinstance(value, str):
        value = orjson.loads(value)
    if not isinstance(value, dict):
        return {}
    return {name: (b.get("min"), b.get("max")) for name, b in value.items()}


def _check_range(
    problems: Problems, name: str, dtype: str, converted: Converted, bounds: tuple[Any, Any]
) -> None:
    """Refuse the values of ``name`` outside its declared range (nulls are not checked)."""
    lo, hi = bounds
    if dtype == "date":
        days = converted.values.cast(pa.date32()).cast(pa.int32())
        v = np.asarray(days.to_numpy(zero_copy_only=False), dtype=np.float64)
        lo = None if lo is None else float((date.fromisoformat(str(lo)) - EPOCH).days)
        hi = None if hi is None else float((date.fromisoformat(str(hi)) - EPOCH).days)
    elif dtype == "number":
        v = np.asarray(
            converted.values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
    else:
        return
    known = ~np.isnan(v)
    out = known & (
        ((v < lo) if lo is not None else False) | ((v > hi) if hi is not None else False)
    )

    def bound(x: Any) -> str:
        return "…" if x is None else f"{x:g}" if isinstance(x, float) else str(x)

    shown_range = f"[{bound(bounds[0])}, {bound(bounds[1])}]"
    problems.add(
        name,
        np.asarray(out, dtype=bool),
        lambda row: (
            f"{shown(converted.original[row].as_py())} is outside the declared range "
            f"{shown_range} (plan settings.attribute_ranges)"
        ),
    )


def _prepare(
    source: Source,
    attributes: list[str],
    registry: dict[str, str],
    ranges: dict[str, tuple[Any, Any]] | None = None,
) -> _Prepared:
    n = source.table.num_rows
    problems = Problems(source)
    ids = text_field(source, problems, ID, max_length=MAX_ID, required=True)
    first = first_occurrences(ids.values)
    duplicate = (first != np.arange(n)) & ~ids.empty
    problems.add(
        ID,
        duplicate,
        lambda row: (
            f"duplicate customer_id {ids.values[row].as_py()!r} "
            f"(first on {source.unit} {int(source.lines()[first[row]])})"
        ),
    )
    new: dict[str, str] = {}
    prepared = []
    for name in attributes:
        arr = column(source, name)
        dtype = registry.get(name)
        converted: Converted | None
        if dtype is None:
            dtype, converted = infer(arr, source.fmt)
            if dtype is not None:
                new[name] = dtype
        elif dtype in DTYPES:
            converted = convert(arr, dtype)
        else:
            raise ImportFileError(f"attribute {name!r} is registered with unknown type {dtype!r}")
        if dtype is None or converted is None:  # no value at all: the column only clears
            prepared.append(_Attribute(name, pa.nulls(n, pa.string()), empty_cells(arr)))
        else:
            problems.add_converted(name, converted)
            if ranges and name in ranges:
                _check_range(problems, name, dtype, converted, ranges[name])
            value = json_value(converted.values, dtype)
            prepared.append(_Attribute(name, value, converted.empty))
    return _Prepared(ids=ids.values, attributes=prepared, problems=problems, new_attributes=new)


def _register(conn: sa.Connection, new: dict[str, str], now: datetime) -> None:
    if new:
        conn.execute(
            sa.insert(metadata.tables["customer_attribute"]),
            [
                {"name": name, "dtype": dtype, "origin": "import", "updated_at": now}
                for name, dtype in new.items()
            ],
        )


def _write(
    conn: sa.Connection,
    prepared: _Prepared,
    good: np.ndarray,
    now: datetime,
    progress: Progress | None,
) -> tuple[int, int]:
    """Insert the new customers and merge into the existing ones; return (inserted, updated)."""
    rows = np.flatnonzero(good)
    total = len(rows)
    report = progress_of(progress, total)
    postgres = bulk.is_postgres_conn(conn)
    inserted = updated = 0
    optimistic = postgres  # on PostgreSQL, assume new customers until proven otherwise
    size = bulk.chunk_rows_for(total)
    for start in range(0, total, size):
        chunk = _Chunk(prepared, pa.array(rows[start : start + size]))
        if optimistic and bulk.try_copy_arrow(conn, "customer", chunk.fresh(now)):
            inserted += chunk.size
        else:
            known = bulk.existing_keys(conn, "customer", ID, chunk.ids.to_pylist())
            old = pc.is_in(chunk.ids, pa.array(list(known), pa.string()))
            inserted += bulk.insert_arrow(conn, "customer", chunk.fresh(now, pc.invert(old)))
            if known:
                update = _update_postgres if postgres else _update_sqlite
                updated += update(conn, chunk, old, now)
            optimistic = postgres and not known
        if report is not None:
            report(min(start + size, total))
    return inserted, updated


class _Chunk:
    """Some rows of a :class:`_Prepared`, with their JSON built on demand."""

    def __init__(self, prepared: _Prepared, rows: pa.Array) -> None:
        self.prepared = prepared
        self.rows = rows
        self.size = len(rows)
        self.ids = prepared.ids.take(rows)

    def _empty(self, attr: _Attribute) -> pa.Array:
        return pa.array(attr.empty[self.rows.to_numpy()])

    def values(self) -> pa.Array:
        """The attributes given, as a JSON object per row (a new customer's attributes)."""
        members = [member(a.name, a.json.take(self.rows)) for a in self.prepared.attributes]
        return json_objects(members, self.size, empty="{}")

    def patch(self) -> pa.Array:
        """A JSON merge patch per row: the values given, null for each attribute to remove."""
        members = [
            member(a.name, pc.if_else(self._empty(a), "null", a.json.take(self.rows)))
            for a in self.prepared.attributes
        ]
        return json_objects(members, self.size, empty="{}")

    def cleared(self) -> pa.Array:
        """A PostgreSQL ``text[]`` literal per row of the attributes to remove, or null."""
        members = [
            pc.if_else(self._empty(a), "," + _pg_array_item(a.name), pa.scalar(None, pa.string()))
            for a in self.prepared.attributes
        ]
        if not members:
            return pa.nulls(self.size, pa.string())
        body = pc.binary_join_element_wise(
            *members, "", null_handling="replace", null_replacement=""
        )
        literal = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 1), "}", "")
        return pc.if_else(pc.equal(body, ""), pa.scalar(None, pa.string()), literal)

    def fresh(self, now: datetime, where: pa.Array | None = None) -> pa.Table:
        """Rows for the customer table (optionally only ``where``), stamped ``now``."""
        table = pa.table({"customer_id": self.ids, "attributes": self.values()})
        if where is not None:
            table = table.filter(where)
        stamp = constant_timestamp(now, table.num_rows)
        return table.append_column("created_at", stamp).append_column("updated_at", stamp)


def _pg_array_item(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _update_sqlite(conn: sa.Connection, chunk: _Chunk, old: pa.Array, now: datetime) -> int:
    stamp = now.isoformat(sep=" ", timespec="microseconds")
    ids, patch = chunk.ids.filter(old).to_pylist(), chunk.patch().filter(old).to_pylist()
    cur = bulk.driver_connection(conn).cursor()
    cur.executemany(
        "UPDATE customer SET attributes = json_patch(attributes, ?1), updated_at = ?2 "
        "WHERE customer_id = ?3 AND json_patch(attributes, ?1) IS NOT json(attributes)",
        [(p, stamp, i) for p, i in zip(patch, ids, strict=True)],
    )
    return int(cur.rowcount)


def _update_postgres(conn: sa.Connection, chunk: _Chunk, old: pa.Array, now: datetime) -> int:
    rows = pa.table(
        {"customer_id": chunk.ids, "attrs": chunk.values(), "clear": chunk.cleared()}
    ).filter(old)
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (customer_id text NOT NULL, "
        "attrs jsonb NOT NULL, clear text[]) ON COMMIT DROP"
    )
    conn.exec_driver_sql(f"TRUNCATE {STAGE}")
    bulk.copy_arrow(conn, STAGE, rows)
    merged = "((c.attributes - COALESCE(s.clear, '{}'::text[])) || s.attrs)"
    result = conn.exec_driver_sql(
        f"UPDATE customer AS c SET attributes = {merged}, updated_at = %(now)s "
        f"FROM {STAGE} AS s WHERE c.customer_id = s.customer_id "
        f"AND {merged} IS DISTINCT FROM c.attributes",
        {"now": now},
    )
    return int(result.rowcount)
