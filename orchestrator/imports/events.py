"""Import events (transactions, visits...): append-only, idempotent on ``source_event_id``.

The key is the file's ``event_id`` when given, else ``"h:"`` and a hash of the row's normalized
content, so importing the same file twice adds nothing. Columns other than the known ones are
kept in ``event.extra`` (a JSON object, keys sorted; NULL when a row has none). Events of
customers not (yet) in the customer table are accepted.

``occurred_at`` takes ISO dates or datetimes, with or without an offset (stored as naive UTC).
An empty ``amount`` is 0 (visits, opens); empty optional cells are NULL.

The file is read, prepared and written chunk by chunk (each chunk is prepared while the previous
one is being written), all in one transaction: the first bad row (unless ``skip_invalid``) rolls
everything back. Memory is that of a chunk, not of the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.errors import ImportFileError
from orchestrator.imports.common import (
    column,
    constant_timestamp,
    require_columns,
    text_field,
)
from orchestrator.imports.convert import (
    Converted,
    json_objects,
    json_value,
    mask,
    member,
    native_dtype,
    number_text,
    plain,
    to_bool,
    to_date,
    to_number,
    to_string,
    to_timestamp,
)
from orchestrator.imports.problems import Checks, Problems, Shifted, write_reject_tables
from orchestrator.imports.report import ImportReport, Progress
from orchestrator.imports.source import Source, default_rejects_path
from orchestrator.imports.stream import Chunk, SourceStream, open_source
from orchestrator.storage import bulk
from orchestrator.storage.models import utcnow

REQUIRED = ("customer_id", "occurred_at", "type", "amount")
OPTIONAL = ("event_id", "discount", "category", "channel")
KEY = "source_event_id"
MAX_AMOUNT = 1e9  # money in one event: beyond is a mistake (1e308, a misplaced separator)
FUTURE_TOLERANCE = timedelta(days=1)  # an event later than now by more is a mistake (a bad year)
_SEP = "\x1f"  # ASCII unit separator: cannot be confused with content of the joined fields


def import_events(
    engine: sa.Engine,
    path: str | Path,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    update: bool = False,
    known_customers_only: bool = False,
) -> ImportReport:
    """Insert the new events of a CSV, Parquet or JSON-lines file in one transaction.

    The file is read in chunks (memory does not grow with its length): each is converted,
    checked and written while the next is read.

    An event whose ``event_id`` is stored already with other content is refused, naming its
    line, unless ``update``: then the stored event takes the file's content (``updated``).
    One ``event_id`` given to two different events of the file is refused either way.

    An event later than ``now`` (UTC, default the clock; a simulation passes its own day) by
    more than ``FUTURE_TOLERANCE`` is refused: a wrong year would otherwise move every
    customer's recency and every later segment refresh.

    Raises :class:`ImportFileError` on the first bad row unless ``skip_invalid``, in which case
    bad rows go to a reject file and the others are written. Events already stored (same key)
    and repeats within the file count as ``unchanged_or_duplicate``.

    New events of customers the customer table does not hold are counted (a warning: their
    purchases reach no segment, no reward, until the customers are imported); with
    ``known_customers_only`` they are refused and nothing is written.
    """
    started = time.perf_counter()
    stream = open_source(path, fmt)
    first = stream.first()
    require_columns(first, REQUIRED)
    for name in first.table.column_names:
        column(first, name)  # refuse unsupported column types before any work
    latest = (now or utcnow()) + FUTURE_TOLERANCE
    now = utcnow()
    estimate = stream.estimated_rows
    with engine.begin() as conn:
        bulk.begin_write(conn)
        before = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM event")).scalar_one()
        work = _EventImport(
            stream,
            now=now,
            latest=latest,
            skip_invalid=skip_invalid,
            update=update,
            known=_known_customers(conn, estimate),
        )
        if progress is not None:
            progress(0, estimate)
        deferred = bulk.worth_deferring(conn, "event", estimate)
        with bulk.sqlite_cache(conn), bulk.deferred_indexes(conn, "event", enabled=deferred):
            inserted = bulk.insert_arrow_chunks(
                conn,
                "event",
                work.prepared(stream.chunks(bulk.chunk_rows_for(estimate))),
                on_conflict_do_nothing=(KEY,),
                progress=(
                    None if progress is None else lambda done: progress(done, max(estimate, done))
                ),
                after=lambda data, count: work.written(conn, data, count),
            )
            warnings = work.known_without_ids(conn)
        unknown = _unknown_customers(conn, int(before)) if work.unknown_seen else (0, 0, None)
        if unknown[0]:
            what = (
                f"{unknown[0]:,} new event(s) of {unknown[1]:,} customer(s) not in the customer "
                f"table (first: {unknown[2]!r})"
            )
            if known_customers_only:
                raise ImportFileError(
                    f"{_where_customer(stream, unknown[2])}: {what}; import those customers "
                    "first (nothing was written)"
                )
            warnings.append(
                f"{what}: they count for no segment or reward until the customers are imported "
                "(--known-customers-only refuses such a file)"
            )
    if progress is not None:
        progress(work.rows_read, work.rows_read)
    written = None
    if skip_invalid and work.rejected:
        target = (
            Path(rejects_path) if rejects_path is not None else default_rejects_path(Path(path))
        )
        write_reject_tables(work.rejects, target)
        written = str(target)
    return ImportReport(
        path=str(path),
        rows_read=work.rows_read,
        inserted=inserted,
        updated=work.updated,
        unchanged_or_duplicate=work.rows_read - work.rejected - inserted - work.updated,
        rejected=work.rejected,
        rejects_path=written,
        seconds=time.perf_counter() - started,
        warnings=warnings,
        unknown_customer_events=unknown[0],
    )


def _where_customer(stream: SourceStream, customer_id: str | None) -> str:
    """The line of the file's first event of ``customer_id`` (the file's name if not found):
    the file is read again, which only a refused import does."""
    if customer_id is None:
        return stream.label
    for chunk in stream.chunks(bulk.CHUNK_ROWS):
        if "customer_id" not in chunk.table.column_names:
            continue
        ids = pc.utf8_trim_whitespace(pc.cast(chunk.table.column("customer_id"), pa.string()))
        row = pc.index(ids, customer_id).as_py()
        if row is not None and row >= 0:
            return chunk.where(int(row))
    return stream.label


EXACT_COUNT = sa.text(
    "SELECT COUNT(*), COUNT(DISTINCT e.customer_id), MIN(e.customer_id) FROM event e "
    "WHERE e.id > :after AND NOT EXISTS "
    "(SELECT 1 FROM customer c WHERE c.customer_id = e.customer_id)"
)
KNOWN_IDS_MAX = 5_000_000  # customer ids held to match a file's against (about 0.5 GB at most)


def _known_customers(conn: sa.Connection, estimate: int) -> set[str] | None:
    """Every customer id, when there are no more of them than events in
    the file (and not too many to hold): each chunk's ids are then matched against them, and
    the exact count of :func:`_unknown_customers` runs only if one is not found. None: the
    exact count runs."""
    n_customers = conn.execute(sa.text("SELECT COUNT(*) FROM customer")).scalar_one()
    if n_customers > min(max(estimate, 1), KNOWN_IDS_MAX):
        return None
    from orchestrator.reports.columnar import Col, is_postgres, read_columns

    ids = read_columns(
        conn,
        [Col("customer_id", "c.customer_id", "text")],
        from_sql="customer c",
        chunk_key="0" if is_postgres(conn) else "c.rowid",
    ).column("customer_id")
    return set(ids.to_pylist())  # a chunk's distinct ids are looked up: no hash table per chunk


def _unknown_customers(conn: sa.Connection, after_id: int) -> tuple[int, int, str | None]:
    """(events, customers, the first customer id) among the events written after ``after_id``
    whose customer is not in the customer table (an anti-join per new event: about 3.6 s a
    million on SQLite)."""
    row = conn.execute(EXACT_COUNT, {"after": after_id}).one()
    return int(row[0]), int(row[1]), row[2]


@dataclass
class _Written:
    """What the check after a chunk's write needs: the chunk, and its good rows with an
    ``event_id`` (their index in the chunk, the id, the content, the prepared values)."""

    chunk: Chunk
    rows: np.ndarray
    ids: pa.Array
    content: pa.Array
    values: pa.Table


class _EventImport:
    """One import's chunks: prepared (converted, checked) on the way in, checked against the
    stored events on the way out; the counts and rejects of the whole file."""

    SAMPLE = 10_000  # events with ids looked up by their content

    def __init__(
        self,
        stream: SourceStream,
        *,
        now: datetime,
        latest: datetime,
        skip_invalid: bool,
        update: bool,
        known: set[str] | None,
    ) -> None:
        self.stream, self.now, self.latest = stream, now, latest
        self.skip_invalid, self.update, self.known = skip_invalid, update, known
        self.rows_read = self.rejected = self.updated = 0
        self.rejects: list[pa.Table] = []
        self.unknown_seen = known is None  # some event's customer may be unknown
        self._pending: deque[_Written] = deque()
        self._sample: list[pa.Array] = []  # contents of the first events given with ids
        self._sampled = 0

    def prepared(self, chunks: Iterator[Chunk]) -> Iterator[tuple[pa.Table, int]]:
        """The good rows of each chunk, with the number of file rows it covers."""
        for chunk in chunks:
            for name in chunk.table.column_names:
                column(chunk, name)
            for name in REQUIRED:  # a JSON-lines block may lack a column the file has
                if name not in chunk.table.column_names:
                    chunk.table = chunk.table.append_column(
                        name, pa.nulls(chunk.table.num_rows, pa.string())
                    )
            problems = Problems(chunk)
            n = chunk.table.num_rows
            rows, given, content = _prepare(chunk, problems, 0, n, self.latest)
            if not self.skip_invalid:
                problems.raise_first()
            self.rows_read += chunk.rows_read
            bad = problems.count()
            if bad:
                self.rejected += bad
                if self.skip_invalid:
                    self.rejects.append(problems.rejects())
            good = ~problems.bad()
            keep = pa.array(good)
            if not good.all():
                rows, given, content = rows.filter(keep), given.filter(keep), content.filter(keep)
            self._remember(chunk, np.flatnonzero(good), given, content, rows)
            if not self.unknown_seen and self.known is not None and rows.num_rows:
                ids = pc.unique(rows.column("customer_id")).drop_null().to_pylist()
                self.unknown_seen = not self.known.issuperset(ids)
            rows = rows.append_column("imported_at", constant_timestamp(self.now, rows.num_rows))
            yield rows, chunk.rows_read

    def _remember(
        self, chunk: Chunk, rows: np.ndarray, given: pa.Array, content: pa.Array, values: pa.Table
    ) -> None:
        has = mask(pc.is_valid(given))
        keep = pa.array(has)
        written = _Written(
            chunk, rows[has], given.filter(keep), content.filter(keep), values.filter(keep)
        )
        self._pending.append(written)
        if self._sampled < self.SAMPLE and len(written.content):
            part = written.content.slice(0, self.SAMPLE - self._sampled)
            self._sample.append(part)
            self._sampled += len(part)

    def written(self, conn: sa.Connection, data: pa.Table, inserted: int) -> None:
        """After a chunk's write: when some of its rows were not inserted, its events with
        ids are compared with the stored ones."""
        done = self._pending.popleft()
        if inserted < data.num_rows and len(done.ids):
            self._one_content_per_id(done)
            self.updated += self._reconcile(conn, done)

    def _one_content_per_id(self, done: _Written) -> None:
        """Refuse an id given to two different events of the chunk."""
        table = pa.table({"id": done.ids, "content": done.content, "row": done.rows})
        kinds = table.group_by("id").aggregate([("content", "count_distinct")])
        clash = kinds.filter(pc.greater(kinds.column("content_count_distinct"), 1))
        if clash.num_rows == 0:
            return
        rows = table.filter(pc.is_in(table.column("id"), clash.column("id")))
        rows = rows.sort_by([("row", "ascending")])
        first_id = rows.column("id")[0].as_py()
        same = rows.filter(pc.equal(rows.column("id"), first_id))
        a, b = (int(r) for r in same.column("row").to_pylist()[:2])
        more = f" ({clash.num_rows - 1} more ids like it)" if clash.num_rows > 1 else ""
        raise ImportFileError(_two_events(done.chunk.where(a), done.chunk.where(b), first_id, more))

    def _reconcile(self, conn: sa.Connection, done: _Written) -> int:
        """Compare the chunk's events whose id is stored with the stored ones. One stored by
        this import (an earlier chunk) with other content: the id is given to two events.
        Stored before with other content: refused (naming the line) unless ``update``, which
        writes the file's content over it. Returns how many were updated."""
        values, rows = done.values, done.rows
        fields = [name for name in values.column_names if name != KEY]
        mine = {r[KEY]: (i, r) for i, r in enumerate(values.to_pylist())}
        event = sa.table("event", *(sa.column(c) for c in (KEY, *fields, "imported_at")))
        changed: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = []
        ids = list(mine)
        now = self.now
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            stored = conn.execute(sa.select(event).where(event.c[KEY].in_(part))).mappings()
            for found in stored:
                i, new = mine[found[KEY]]
                old = {f: _normal(f, found[f]) for f in fields}
                if all(old[f] == _normal(f, new[f]) for f in fields):
                    continue
                row = int(rows[i])
                if _stamp(found["imported_at"]) == now:
                    earlier = _first_line_of_id(self.stream, found[KEY], done.chunk, row)
                    raise ImportFileError(
                        _two_events(earlier, done.chunk.where(row), found[KEY], "")
                    )
                changed.append((row, found[KEY], old, new))
        if not changed:
            return 0
        if not self.update:
            changed.sort()
            row, key, old, new = changed[0]
            diff = ", ".join(
                f"{f} {old[f]!r} -> {_normal(f, new[f])!r}"
                for f in fields
                if old[f] != _normal(f, new[f])
            )
            more = f" ({len(changed) - 1} more like it)" if len(changed) > 1 else ""
            raise ImportFileError(
                f"{done.chunk.where(row)}: event_id {key!r} is stored already with other "
                f"content ({diff}){more}; import with --update to correct the stored events"
            )
        for _, key, _, new in changed:
            conn.execute(
                sa.update(event)
                .where(event.c[KEY] == key)
                # this import's time: readers that keep what they read see the change
                .values({**{f: new[f] for f in fields}, "imported_at": now})
            )
        return len(changed)

    def known_without_ids(self, conn: sa.Connection) -> list[str]:
        """A warning when events given with ids are already stored without one (under the
        hash of their content): the same purchases would then count twice."""
        if not self._sample:
            return []
        content = pa.concat_arrays(self._sample)
        hashed = _keys(pa.nulls(len(content), pa.string()), content).to_pylist()
        found = 0
        table = sa.table("event", sa.column(KEY))
        for start in range(0, len(hashed), 1000):
            part = hashed[start : start + 1000]
            found += conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c[KEY].in_(part))
            ).scalar_one()
        if not found:
            return []
        n = len(hashed)
        of = f"{n:,}" if n < self.SAMPLE else f"the first {n:,}"
        return [
            f"{found:,} of {of} events given with an event_id are already stored without one "
            "(imported earlier with no event_id column): they now count twice. Import a file "
            "either always or never with event ids (docs/architecture.md, decisions)"
        ]


def _two_events(first: str, second: str, event_id: str, more: str) -> str:
    label, _, rest = second.partition(" line ")
    shown = f"line {rest}" if rest and first.startswith(label + " ") else second
    return (
        f"{first} and {shown}: event_id {event_id!r} is given to two different events{more}; "
        "give each event its own id"
    )


def _first_line_of_id(stream: SourceStream, event_id: str, chunk: Chunk, row: int) -> str:
    """Where the file first gives ``event_id`` (read again from the start: only a refused
    import does this)."""
    for part in stream.chunks(bulk.CHUNK_ROWS):
        if "event_id" not in part.table.column_names:
            break
        ids = pc.utf8_trim_whitespace(pc.cast(part.table.column("event_id"), pa.string()))
        found = pc.index(ids, event_id).as_py()
        if found is not None and found >= 0:
            return part.where(int(found))
    return chunk.where(row)


def _prepare(
    source: Source, problems: Problems, offset: int, length: int, latest: datetime | None = None
) -> tuple[pa.Table, pa.Array, pa.Array]:
    """Convert and check ``length`` rows from ``offset``; bad rows are flagged in ``problems``.
    Also the given event ids (null where none) and each row's content."""
    part = Source(
        label=source.label,
        path=source.path,
        fmt=source.fmt,
        table=source.table.slice(offset, length),
    )
    names = part.table.column_names
    local = Shifted(problems, offset)
    customer = text_field(part, local, "customer_id", max_length=128, required=True)
    occurred = to_timestamp(part.table.column("occurred_at"))
    local.add("occurred_at", occurred.empty, lambda row: "is empty")
    local.add_converted("occurred_at", occurred)
    if latest is not None:
        limit, times = latest, occurred.values
        ahead = mask(pc.greater(times, pa.scalar(limit, type=times.type)))
        local.add(
            "occurred_at",
            ahead,
            lambda row: (
                f"{times[row].as_py():%Y-%m-%d %H:%M} is in the future (events up to "
                f"{limit:%Y-%m-%d %H:%M} UTC are accepted: a day of tolerance for time zones)"
            ),
        )
    kind = text_field(part, local, "type", max_length=32, required=True)
    amount = to_number(part.table.column("amount"))
    local.add_converted("amount", amount)
    raw_amount = plain(part.table.column("amount"))
    if pa.types.is_floating(raw_amount.type):  # a NaN is not "no amount": say so, as CSV does
        local.add(
            "amount",
            mask(pc.is_nan(raw_amount)),
            lambda row: "is NaN: leave the cell empty (null) for no amount",
        )
    amounts = pc.fill_null(pc.cast(amount.values, pa.float64()), 0.0)
    huge = mask(pc.greater(pc.abs(amounts), MAX_AMOUNT))
    local.add(
        "amount",
        huge,
        lambda row: (
            f"{amounts[row].as_py():g} is beyond ±{MAX_AMOUNT:,.0f} (a unit or a "
            "decimal separator mistake?)"
        ),
    )
    if "discount" in names:
        discount_given = to_number(part.table.column("discount"))
        local.add_converted("discount", discount_given)
        discount = pc.cast(discount_given.values, pa.float64())
        negative = mask(pc.fill_null(pc.less(discount, 0.0), False))
        local.add(
            "discount",
            negative,
            lambda row: (
                f"{discount[row].as_py():g} is negative (a discount is what was taken "
                "off, 0 for none)"
            ),
        )
    else:
        discount = pa.nulls(length, pa.float64())
    category, channel = (
        text_field(part, local, name, max_length=64, required=False, trim=False).values
        if name in names
        else pa.nulls(length, pa.string())
        for name in ("category", "channel")
    )
    extras = sorted(name for name in names if name not in REQUIRED + OPTIONAL)
    members = [member(name, _extra(part, local, name)) for name in extras]
    extra = json_objects(members, length, empty=None)
    given = (
        text_field(part, local, "event_id", max_length=128, required=False).values
        if "event_id" in names
        else pa.nulls(length, pa.string())
    )
    content = pc.binary_join_element_wise(
        customer.values,
        pc.cast(occurred.values, pa.string()),
        kind.values,
        number_text(amounts),
        number_text(discount),
        category,
        channel,
        extra,
        _SEP,
        null_handling="replace",
        null_replacement="",
    )
    return (
        pa.table(
            {
                KEY: _keys(given, content),
                "customer_id": customer.values,
                "occurred_at": occurred.values,
                "type": kind.values,
                "amount": amounts,
                "discount": discount,
                "category": category,
                "channel": channel,
                "extra": extra,
            }
        ),
        given,
        content,
    )


def _extra(source: Source, problems: Checks, name: str) -> pa.Array:
    """An extra column as JSON values: text stays text, typed values keep their type."""
    arr = plain(source.table.column(name))
    dtype = native_dtype(arr.type)
    convert = {
        "bool": to_bool,
        "number": to_number,
        "date": to_date,
        "timestamp": to_timestamp,
    }.get(dtype, to_string)
    converted: Converted = convert(arr)
    problems.add_converted(name, converted)
    return json_value(converted.values, dtype)


def _normal(field: str, value: Any) -> Any:
    """A stored or prepared event value in one form: JSON text parsed, times without zone."""
    if field == "extra" and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, str) and field == "occurred_at":
        return datetime.fromisoformat(value)
    return value


def _stamp(value: Any) -> datetime | None:
    """A stored ``imported_at`` as a naive UTC datetime (SQLite gives text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _normal("imported_at", value) if value is not None else None


def _keys(given: pa.Array, content: pa.Array) -> pa.Array:
    """The given event ids, else ``"h:"`` + a 128-bit BLAKE2b of the row content.

    The content is, joined by U+001F: customer_id, occurred_at as ``YYYY-MM-DD HH:MM:SS.ffffff``
    UTC, type, amount and discount as numbers print (``10.5``, ``3``; empty for none), category,
    channel, and the ``extra`` JSON. Changing it re-imports every event already loaded.
    """
    missing = ~mask(pc.is_valid(given))
    if not missing.any():
        return given
    raw = content.filter(pa.array(missing)).cast(pa.binary())
    # Hash straight from Arrow's buffers: no per-row str objects or encoding.
    start = raw.offset
    offsets = np.frombuffer(raw.buffers()[1], dtype=np.int32)[start : start + len(raw) + 1]
    buffer = raw.buffers()[2]
    data = buffer.to_pybytes() if buffer is not None else b""
    bounds = offsets.tolist()
    blake2b = hashlib.blake2b
    hashed = [
        "h:" + blake2b(data[a:b], digest_size=16).hexdigest()
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    return pc.replace_with_mask(
        pc.fill_null(given, ""), pa.array(missing), pa.array(hashed, pa.string())
    )
