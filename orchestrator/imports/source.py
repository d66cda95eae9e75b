"""Read a data file (CSV, Parquet, JSON lines) into one Arrow table that remembers its lines.

CSV cells are all read as strings (converted and validated later, column by column, so a bad cell
can be pointed at). Rows that cannot be parsed at all (a CSV row with the wrong number of fields,
a JSON line that is not an object) are kept aside as :class:`Malformed` rather than failing the
read, so the caller decides between aborting and rejecting them.

Line numbers are what a text editor shows (a CSV header is line 1); Parquet rows are numbered
from 1. They are worked out lazily, only when a message or a reject file needs them.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from orchestrator.errors import ImportFileError

FORMATS = ("csv", "parquet", "jsonl")
SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson.gz": "jsonl",
}
BLOCK = 16 << 20


@dataclass(frozen=True)
class Malformed:
    """A row that could not be split into columns."""

    line: int
    values: dict[str, str]
    reason: str


@dataclass
class Source:
    """The rows of one file, in file order, and a way back to their lines."""

    label: str
    path: Path
    fmt: str
    table: pa.Table
    malformed: list[Malformed] = field(default_factory=list)
    find_lines: Callable[[], np.ndarray] | None = None
    _lines: np.ndarray | None = None

    @property
    def unit(self) -> str:
        return "row" if self.fmt == "parquet" else "line"

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)

    def lines(self) -> np.ndarray:
        """Line (or row) number of each table row, shape (n,)."""
        if self._lines is None:
            if self.find_lines is None:
                first = 2 if self.fmt == "csv" else 1
                self._lines = np.arange(first, first + self.table.num_rows, dtype=np.int64)
            else:
                self._lines = self.find_lines()
        return self._lines

    def where(self, row: int) -> str:
        return f"{self.label} {self.unit} {int(self.lines()[row])}"


def detect_format(path: Path, fmt: str | None, label: str) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ImportFileError(
                f"{label}: unknown format {fmt!r} (choose one of {', '.join(FORMATS)})"
            )
        return fmt
    name = path.name.lower()
    for suffix, kind in sorted(SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise ImportFileError(
        f"{label}: unknown format (name the file .csv, .csv.gz, .parquet, .jsonl or .ndjson, "
        "or give the format)"
    )


def default_rejects_path(path: Path) -> Path:
    """``<stem>.rejects.csv`` next to the input.

    >>> default_rejects_path(Path("in/events.csv.gz")).as_posix()
    'in/events.rejects.csv'
    """
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem
    return path.with_name(f"{name}.rejects.csv")


def read_source(path: str | Path, fmt: str | None = None) -> Source:
    """Read ``path``; raise :class:`ImportFileError` if it cannot be read as a whole."""
    label = str(path)
    p = Path(path)
    if not p.exists():
        raise ImportFileError(f"{label}: file not found")
    if not p.is_file():
        raise ImportFileError(f"{label}: not a file")
    kind = detect_format(p, fmt, label)
    if kind == "csv":
        source = _read_csv(p, label)
    elif kind == "parquet":
        source = _read_parquet(p, label)
    else:
        source = _read_jsonl(p, label)
    source.table = clean_names(source.table, label).combine_chunks()
    return source


def clean_names(table: pa.Table, label: str) -> pa.Table:
    return table.rename_columns(check_names(table.column_names, label))


def check_names(given: list[str], label: str) -> list[str]:
    """Column names stripped; a column without a name or one named twice is an error."""
    names = [str(name).strip() for name in given]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise ImportFileError(f"{label}: column {i + 1} has no name")
        if name in seen:
            raise ImportFileError(f"{label}: column {name!r} appears twice")
        seen.add(name)
    return names


def is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    if is_gzip(path):
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as f:
            yield f
    else:
        with open(path, encoding="utf-8-sig", newline="") as f:
            yield f


@contextmanager
def open_binary(path: Path) -> Iterator[io.BufferedIOBase]:
    if is_gzip(path):
        with gzip.open(path, "rb") as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


# --- CSV ------------------------------------------------------------------------------------


def _read_csv(path: Path, label: str) -> Source:
    header = csv_header(path, label)
    skipped = 0

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        # Arrow cannot tell the line of a bad row when reading in threads: count them here,
        # find them with the csv module afterwards.
        nonlocal skipped
        skipped += 1
        return "skip"

    try:
        with pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None) as f:
            table = pa_csv.read_csv(
                f,
                read_options=pa_csv.ReadOptions(block_size=BLOCK),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=False,
                ),
            )
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        if "UTF8" in str(exc) or "UTF-8" in str(exc):
            raise ImportFileError(utf8_problem(path, label)) from exc
        raise ImportFileError(f"{label}: cannot read as CSV ({first_line(exc)})") from exc
    # A header parsed differently from ours would leave typed columns: keep them as text anyway.
    table = pa.table([col.cast(pa.string()) for col in table.columns], names=table.column_names)
    source = Source(label=label, path=path, fmt="csv", table=table)
    ncols = len(header)
    if skipped:
        good, bad = _scan_csv(path, ncols)
        source._lines = good if len(good) == table.num_rows else None
        source.malformed = [malformed_csv(line, fields, header) for line, fields in bad]
    else:
        source.find_lines = lambda: _scan_csv(path, ncols)[0]
    return source


def csv_header(path: Path, label: str) -> list[str]:
    try:
        with open_text(path) as f:
            for fields in csv.reader(f):
                if fields:
                    return fields
    except UnicodeDecodeError as exc:
        raise ImportFileError(utf8_problem(path, label)) from exc
    except (OSError, EOFError, csv.Error) as exc:
        raise ImportFileError(f"{label}: cannot read as CSV ({exc})") from exc
    raise ImportFileError(f"{label}: empty file (expected a header line)")


def _scan_csv(path: Path, ncols: int) -> tuple[np.ndarray, list[tuple[int, list[str]]]]:
    """Find the first line of each well-formed record, and the malformed records."""
    good: list[int] = []
    bad: list[tuple[int, list[str]]] = []
    with open_text(path) as f:
        reader = csv.reader(f)
        ended = 0
        header_seen = False
        for fields in reader:
            start, ended = ended + 1, reader.line_num
            if not fields:
                continue
            if not header_seen:
                header_seen = True
            elif len(fields) == ncols:
                good.append(start)
            else:
                bad.append((start, fields))
    return np.asarray(good, dtype=np.int64), bad


def malformed_csv(line: int, fields: list[str], header: list[str]) -> Malformed:
    names = [name.strip() for name in header]
    values = dict(zip(names, fields, strict=False))
    reason = f"expected {len(header)} fields, got {len(fields)}"
    if len(fields) > len(header):
        reason += f" (extra: {', '.join(repr(v) for v in fields[len(header) :])})"
    return Malformed(line=line, values=values, reason=reason)


def utf8_problem(path: Path, label: str) -> str:
    with open_binary(path) as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"{label} line {n}: not UTF-8 text (save the file as UTF-8)"
    return f"{label}: not UTF-8 text (save the file as UTF-8)"


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- Parquet --------------------------------------------------------------------------------


def _read_parquet(path: Path, label: str) -> Source:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{label}: cannot read as Parquet ({first_line(exc)})") from exc
    return Source(label=label, path=path, fmt="parquet", table=table)


# --- JSON lines -----------------------------------------------------------------------------


def _read_jsonl(path: Path, label: str) -> Source:
    try:
        table = pa_json.read_json(path, read_options=pa_json.ReadOptions(block_size=BLOCK))
        # Arrow guesses timestamps from ISO strings and drops their offsets: read them as text.
        stamped = [f for f in table.schema if pa.types.is_timestamp(f.type)]
        if stamped:
            schema = pa.schema([(f.name, pa.string()) for f in stamped])
            table = pa_json.read_json(
                path,
                read_options=pa_json.ReadOptions(block_size=BLOCK),
                parse_options=pa_json.ParseOptions(explicit_schema=schema),
            )
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError):
        return _read_jsonl_slowly(path, label)
    return Source(
        label=label, path=path, fmt="jsonl", table=table, find_lines=lambda: _jsonl_lines(path)
    )


def _jsonl_lines(path: Path) -> np.ndarray:
    with open_binary(path) as f:
        return np.asarray([n for n, raw in enumerate(f, start=1) if raw.strip()], dtype=np.int64)


def _read_jsonl_slowly(path: Path, label: str) -> Source:
    """Parse line by line: finds the bad lines, and reads columns whose JSON types vary."""
    rows: list[dict[str, object]] = []
    lines: list[int] = []
    malformed: list[Malformed] = []
    try:
        with open_binary(path) as f:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    malformed.append(Malformed(n, {}, bad_json(f"not valid JSON ({exc})", raw)))
                    continue
                if not isinstance(obj, dict):
                    malformed.append(Malformed(n, {}, bad_json("expected a JSON object", raw)))
                    continue
                rows.append(obj)
                lines.append(n)
    except (OSError, EOFError) as exc:
        raise ImportFileError(f"{label}: cannot read as JSON lines ({exc})") from exc
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    table = pa.table({name: json_column([row.get(name) for row in rows]) for name in names})
    source = Source(label=label, path=path, fmt="jsonl", table=table, malformed=malformed)
    source._lines = np.asarray(lines, dtype=np.int64)
    return source


def bad_json(reason: str, raw: bytes) -> str:
    return f"{reason}: {raw.decode('utf-8', 'replace').strip()}"


def json_column(values: list[object]) -> pa.Array:
    """One Arrow column from JSON values; mixed scalar kinds become text (checked later)."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values))
    if kinds <= {int, float}:
        try:
            return pa.array(values, pa.int64() if kinds == {int} else pa.float64())
        except (pa.ArrowInvalid, OverflowError):
            return pa.array(values, pa.float64())
    if kinds & {dict, list}:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Nested values of several shapes: keep the column nested, so it is refused by name.
            return pa.nulls(len(values), pa.list_(pa.string()))
    if len(kinds) == 1:
        return pa.array(values)
    texts = [v if isinstance(v, str) or v is None else orjson.dumps(v).decode() for v in values]
    return pa.array(texts, pa.string())
