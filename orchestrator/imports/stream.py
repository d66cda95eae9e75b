"""Read a data file in chunks of rows, so memory stays flat whatever the file's length.

Each chunk is a :class:`~orchestrator.imports.source.Source` of its own rows (converted and
checked like a whole file) that knows where its rows are in the file: ``first_row`` (the index of
its first row among the file's readable rows) and, lazily, their lines. Malformed rows (a CSV row
with the wrong number of fields, a JSON line that is not an object) come with the chunk they were
found in, in file order with its rows.

- **CSV** is parsed by Arrow's streaming reader (all cells as text). Arrow cannot say on which
  line a record starts (quoted cells may hold newlines), so when a message or a reject file
  needs lines, one ``csv`` module scanner walks the file alongside the chunks, from where it
  stopped; a file with nothing wrong is never scanned. Arrow skips malformed rows and counts
  them; the scanner finds them (it sees the same records).
- **Parquet** is read by row groups' batches; rows are numbered from 1.
- **JSON lines** are read in blocks of whole lines, each parsed by Arrow (line by line where
  Arrow cannot: a bad line, types that differ between lines); a block's columns are those its
  lines have.
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from orchestrator.errors import ImportFileError
from orchestrator.imports.source import (
    BLOCK,
    Malformed,
    Source,
    bad_json,
    check_names,
    clean_names,
    csv_header,
    detect_format,
    first_line,
    json_column,
    malformed_csv,
    open_binary,
    open_text,
    utf8_problem,
)


@dataclass
class Chunk(Source):
    """Rows ``first_row ..`` of a file (indices among its readable rows), as a Source."""

    first_row: int = 0

    def lines(self) -> np.ndarray:
        if self._lines is None and self.find_lines is None:
            first = (2 if self.fmt == "csv" else 1) + self.first_row
            self._lines = np.arange(first, first + self.table.num_rows, dtype=np.int64)
        return super().lines()


@dataclass
class SourceStream:
    """A file to read in chunks: its ``columns`` (of the first chunk: a CSV header, a Parquet
    schema, a JSON-lines file's first block), ``estimated_rows`` (exact for Parquet, else from
    the lines of the file), and ``chunks(rows)``, which may be called again to read it anew."""

    label: str
    path: Path
    fmt: str
    columns: list[str]
    estimated_rows: int
    _chunks: Callable[[int], Iterator[Chunk]]

    @property
    def unit(self) -> str:
        return "row" if self.fmt == "parquet" else "line"

    def chunks(self, rows: int) -> Iterator[Chunk]:
        """Chunks of at most ``rows`` rows (a chunk may hold only malformed rows), in order."""
        return self._chunks(rows)

    def first(self) -> Chunk:
        """The first chunk (the whole file's shape, for checks before any work)."""
        for chunk in self.chunks(1000):
            return chunk
        raise AssertionError("a stream yields at least one chunk")


def open_source(path: str | Path, fmt: str | None = None) -> SourceStream:
    """A :class:`SourceStream` of ``path``; raises :class:`ImportFileError` if it cannot be
    opened as its format (later problems are raised while reading)."""
    label = str(path)
    p = Path(path)
    if not p.exists():
        raise ImportFileError(f"{label}: file not found")
    if not p.is_file():
        raise ImportFileError(f"{label}: not a file")
    kind = detect_format(p, fmt, label)
    if kind == "csv":
        return _csv_stream(p, label)
    if kind == "parquet":
        return _parquet_stream(p, label)
    return _jsonl_stream(p, label)


def _count_lines(path: Path) -> int:
    """Newlines in the (decompressed) file, plus one for a last line without one."""
    count, last = 0, b"\n"
    with open_binary(path) as f:
        while block := f.read(BLOCK):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _sliced(table: pa.Table, rows: int, first_row: int) -> Iterator[tuple[int, pa.Table]]:
    for start in range(0, table.num_rows, rows):
        yield first_row + start, table.slice(start, rows)


# --- CSV ------------------------------------------------------------------------------------


def _csv_stream(path: Path, label: str) -> SourceStream:
    header = csv_header(path, label)
    check_names(header, label)
    return SourceStream(
        label=label,
        path=path,
        fmt="csv",
        columns=[name.strip() for name in header],
        estimated_rows=max(_count_lines(path) - 1, 0),
        _chunks=lambda rows: _csv_chunks(path, label, header, rows),
    )


class _CsvScanner:
    """Walks the file's records with the ``csv`` module, in step with the chunks: the line of
    each good record (``index`` among the good ones) and the malformed records on the way."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path, self.header, self.ncols = path, header, len(header)
        self._restart()

    def _restart(self) -> None:
        self._file_cm = open_text(self.path)
        self._file = self._file_cm.__enter__()
        self.closed = False
        self._reader = csv.reader(self._file)
        self._ended = 0
        self._header_seen = False
        self.next_good = 0  # index of the next good record
        self.malformed: list[Malformed] = []

    def close(self) -> None:
        self._file_cm.__exit__(None, None, None)
        self.closed = True

    def lines(self, start: int, stop: int) -> np.ndarray:
        """Lines of good records ``start .. stop - 1`` (malformed ones passed are kept)."""
        if self.closed:  # asked after the chunks were all read (a check after the last write)
            again = _CsvScanner(self.path, self.header)
            try:
                return again.lines(start, stop)
            finally:
                again.close()
        if start < self.next_good:  # asked again for rows already passed: walk anew
            self.close()
            self._restart()
        out = np.zeros(stop - start, dtype=np.int64)
        while self.next_good < stop:
            found = self._step()
            if found is None:
                break
            if found > 0 and self.next_good > start:
                out[self.next_good - 1 - start] = found
        return out

    def drain(self) -> None:
        while self._step() is not None:
            pass

    def _step(self) -> int | None:
        """Read one record; the line of the good record just read (``next_good`` moved), -1 for
        a malformed or blank one, None at the end."""
        try:
            fields = next(self._reader)
        except StopIteration:
            return None
        except UnicodeDecodeError as exc:
            raise ImportFileError(utf8_problem(self.path, str(self.path))) from exc
        start, self._ended = self._ended + 1, self._reader.line_num
        if not fields:
            return -1
        if not self._header_seen:
            self._header_seen = True
            return -1
        if len(fields) == self.ncols:
            self.next_good += 1
            return start
        self.malformed.append(malformed_csv(start, fields, self.header))
        return -1


class PacedFile(io.RawIOBase):
    """A binary file that Arrow's streaming CSV reader may read at most ``ahead`` blocks
    beyond the batches taken from it.

    Left alone, the reader's I/O thread reads about 32 blocks ahead of the batches asked for,
    whatever the source: 512 MiB at 16 MiB blocks, so a 380 MB file sat whole in memory.
    Here its ``read`` waits until the consumer calls :meth:`took_block`. :meth:`stop` ends the
    file early (reads return nothing) and lets the reader's pending reads finish, so no Arrow
    thread is still inside Python when the file closes or the interpreter exits.
    """

    def __init__(self, raw: io.BufferedIOBase, block: int, ahead: int) -> None:
        super().__init__()
        self._raw, self._block, self._ahead = raw, block, ahead
        self.given = self._taken = 0
        self._stopped = False
        self.waiting = False  # the reader is held back (read from another thread by tests)
        self._turn = threading.Condition()
        self.reader: pa.RecordBatchReader | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._turn:
            while not self._stopped and self.given >= (self._taken + self._ahead) * self._block:
                self.waiting = True
                self._turn.wait()
            self.waiting = False
            if self._stopped:
                return b""
        data = self._raw.read(size)
        with self._turn:
            self.given += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def took_block(self) -> None:
        with self._turn:
            self._taken += 1
            self._turn.notify_all()

    def stop(self) -> None:
        with self._turn:
            self._stopped = True
            self._turn.notify_all()
        if self.reader is not None:  # drain: the reader sees the end and its reads complete
            try:
                for _ in self.reader:
                    pass
            except (pa.ArrowInvalid, OSError):
                # Stopped early, the file ends inside a row and the reader says so; the chunks
                # already taken are whole, and an error that stopped the import is raised anyway.
                pass
            self.reader = None


@contextmanager
def _paced(raw: io.BufferedIOBase, ahead: int = 3) -> Iterator[PacedFile]:
    paced = PacedFile(raw, BLOCK, ahead)
    try:
        yield paced
    finally:
        paced.stop()


def _csv_chunks(path: Path, label: str, header: list[str], rows: int) -> Iterator[Chunk]:
    skipped = 0

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        nonlocal skipped
        skipped += 1
        return "skip"

    scanner = _CsvScanner(path, header)
    found = 0  # malformed records handed out so far
    first_row = 0
    names = [name.strip() for name in header]
    try:
        with open_binary(path) as raw, _paced(raw) as f:
            reader = pa_csv.open_csv(
                f,
                read_options=pa_csv.ReadOptions(block_size=BLOCK, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=False,
                ),
            )
            f.reader = reader
            produced = False
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                f.took_block()
                table = pa.Table.from_batches([batch])
                # A header parsed differently from ours would leave typed columns: text anyway.
                table = pa.table([col.cast(pa.string()) for col in table.columns], names=names)
                for start, part in _sliced(table, rows, first_row):
                    chunk = Chunk(label=label, path=path, fmt="csv", table=part, first_row=start)
                    stop = start + part.num_rows
                    if skipped > found:  # malformed records around here: find them now
                        chunk._lines = scanner.lines(start, stop)
                        chunk.malformed, scanner.malformed = scanner.malformed, []
                        found += len(chunk.malformed)
                    else:
                        chunk.find_lines = _lazy_lines(scanner, start, stop)
                    produced = True
                    yield chunk
                first_row += table.num_rows
            if skipped > found or not produced:
                scanner.drain()
                tail = Chunk(
                    label=label,
                    path=path,
                    fmt="csv",
                    table=pa.table({name: pa.array([], pa.string()) for name in names}),
                    first_row=first_row,
                )
                tail.malformed, scanner.malformed = scanner.malformed, []
                yield tail
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        if "UTF8" in str(exc) or "UTF-8" in str(exc):
            raise ImportFileError(utf8_problem(path, label)) from exc
        raise ImportFileError(f"{label}: cannot read as CSV ({first_line(exc)})") from exc
    finally:
        scanner.close()


def _lazy_lines(scanner: _CsvScanner, start: int, stop: int) -> Callable[[], np.ndarray]:
    return lambda: scanner.lines(start, stop)


# --- Parquet --------------------------------------------------------------------------------


def _parquet_stream(path: Path, label: str) -> SourceStream:
    try:
        meta = pq.ParquetFile(path)
        names = list(meta.schema_arrow.names)
        total = meta.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{label}: cannot read as Parquet ({first_line(exc)})") from exc
    check_names(names, label)
    return SourceStream(
        label=label,
        path=path,
        fmt="parquet",
        columns=[str(n).strip() for n in names],
        estimated_rows=total,
        _chunks=lambda rows: _parquet_chunks(path, label, rows),
    )


def _parquet_chunks(path: Path, label: str, rows: int) -> Iterator[Chunk]:
    first_row = 0
    produced = False
    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
        for batch in file.iter_batches(batch_size=rows):
            table = clean_names(pa.Table.from_batches([batch]), label)
            yield Chunk(label=label, path=path, fmt="parquet", table=table, first_row=first_row)
            first_row += table.num_rows
            produced = True
    except (pa.ArrowException, OSError) as exc:
        raise ImportFileError(f"{label}: cannot read as Parquet ({first_line(exc)})") from exc
    if not produced:
        empty = clean_names(schema.empty_table(), label)
        yield Chunk(label=label, path=path, fmt="parquet", table=empty, first_row=0)


# --- JSON lines -----------------------------------------------------------------------------


def _jsonl_stream(path: Path, label: str) -> SourceStream:
    stream = SourceStream(
        label=label,
        path=path,
        fmt="jsonl",
        columns=[],
        estimated_rows=_count_lines(path),
        _chunks=lambda rows: _jsonl_chunks(path, label, rows),
    )
    stream.columns = list(stream.first().table.column_names)
    return stream


def _jsonl_chunks(path: Path, label: str, rows: int) -> Iterator[Chunk]:
    first_row = 0
    base = 0  # lines before the block
    produced = False
    try:
        with open_binary(path) as f:
            while True:
                lines = _read_lines(f, rows)
                if not lines:
                    break
                table, numbers, malformed = _jsonl_block(lines, base, label)
                yield Chunk(
                    label=label,
                    path=path,
                    fmt="jsonl",
                    table=table,
                    malformed=malformed,
                    _lines=numbers,
                    first_row=first_row,
                )
                produced = True
                first_row += table.num_rows
                base += len(lines)
    except (OSError, EOFError) as exc:
        raise ImportFileError(f"{label}: cannot read as JSON lines ({exc})") from exc
    if not produced:
        yield Chunk(label=label, path=path, fmt="jsonl", table=pa.table({}), first_row=0)


def _read_lines(f: IO[bytes] | io.BufferedIOBase, rows: int) -> list[bytes]:
    """At most ``rows`` lines (and about ``BLOCK`` bytes)."""
    out: list[bytes] = []
    size = 0
    while len(out) < rows and size < BLOCK:
        line = f.readline()
        if not line:
            break
        out.append(line)
        size += len(line)
    return out


def _jsonl_block(
    lines: list[bytes], base: int, label: str
) -> tuple[pa.Table, np.ndarray, list[Malformed]]:
    """A block's rows, the line of each, its malformed lines."""
    numbers = np.asarray(
        [base + i for i, raw in enumerate(lines, start=1) if raw.strip()], dtype=np.int64
    )
    data = b"".join(lines)
    try:
        table = pa_json.read_json(io.BytesIO(data))
        stamped = [f for f in table.schema if pa.types.is_timestamp(f.type)]
        if stamped:  # Arrow drops offsets when it guesses timestamps: read them as text
            schema = pa.schema([(f.name, pa.string()) for f in stamped])
            table = pa_json.read_json(
                io.BytesIO(data), parse_options=pa_json.ParseOptions(explicit_schema=schema)
            )
        if table.num_rows == len(numbers):
            return clean_names(table, label), numbers, []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    return _jsonl_block_slowly(lines, base, label)


def _jsonl_block_slowly(
    lines: list[bytes], base: int, label: str
) -> tuple[pa.Table, np.ndarray, list[Malformed]]:
    rows: list[dict[str, object]] = []
    numbers: list[int] = []
    malformed: list[Malformed] = []
    for n, raw in enumerate(lines, start=base + 1):
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
        numbers.append(n)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    table = pa.table({name: json_column([row.get(name) for row in rows]) for name in names})
    return clean_names(table, label), np.asarray(numbers, dtype=np.int64), malformed
