"""Row errors of one import: collected as masks, raised as the first one, or written as rejects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from orchestrator.errors import ImportFileError
from orchestrator.imports.convert import Converted, UnsupportedType, to_text
from orchestrator.imports.source import Source


@dataclass(frozen=True)
class _Check:
    """Rows ``offset + i`` fail on ``field`` where ``mask[i]``; ``detail(i)`` says why."""

    field: str
    mask: np.ndarray
    detail: Callable[[int], str]
    offset: int

    def fails(self, row: int) -> bool:
        i = row - self.offset
        return 0 <= i < len(self.mask) and bool(self.mask[i])


class Checks(Protocol):
    """Where converters report bad cells: a :class:`Problems` or a chunk of one."""

    def add(self, field: str, mask: np.ndarray, detail: Callable[[int], str]) -> None: ...

    def add_converted(self, field: str, converted: Converted) -> None: ...


class Shifted:
    """The :class:`Problems` of a whole file, seen from a chunk of it starting at ``offset``."""

    def __init__(self, problems: Problems, offset: int) -> None:
        self.problems = problems
        self.offset = offset

    def add(self, field: str, mask: np.ndarray, detail: Callable[[int], str]) -> None:
        self.problems.add(field, mask, detail, offset=self.offset)

    def add_converted(self, field: str, converted: Converted) -> None:
        self.add(field, converted.bad, converted.detail)


class Problems:
    """The bad rows of a :class:`Source`, each with every check it failed, in column order.

    Checks may cover the whole table or, for sources prepared in chunks, a slice of it starting
    at ``offset``; details are then called with indices relative to the slice.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self._checks: list[_Check] = []
        self._bad = np.zeros(source.table.num_rows, dtype=bool)

    def add(
        self, field: str, mask: np.ndarray, detail: Callable[[int], str], *, offset: int = 0
    ) -> None:
        """Record that rows where ``mask`` is set fail on ``field``, described by ``detail``."""
        if mask.any():
            self._checks.append(_Check(field, mask, detail, offset))
            self._bad[offset : offset + len(mask)] |= mask

    def add_converted(self, field: str, converted: Converted, *, offset: int = 0) -> None:
        self.add(field, converted.bad, converted.detail, offset=offset)

    def bad(self) -> np.ndarray:
        """Rows failing any check, shape (n,)."""
        return self._bad.copy()

    def count(self) -> int:
        return int(self._bad.sum()) + len(self.source.malformed)

    def raise_first(self, *, upto: int | None = None) -> None:
        """Raise the error of the earliest bad row in the file, if there is one.

        With ``upto``, only rows before that row (and malformed lines before it) are known to be
        checked: an error is raised only if one of them is bad.
        """
        source = self.source
        first: tuple[int, str] | None = None
        if self._checks:
            row = int(np.argmax(self._bad))
            first = (int(source.lines()[row]), f"{source.where(row)}, {self.reason(row)}")
        if source.malformed:  # kept in file order
            bad = source.malformed[0]
            checked = upto is None or upto >= source.table.num_rows
            if not checked and upto is not None:
                checked = bad.line < int(source.lines()[upto])
            if checked and (first is None or bad.line < first[0]):
                first = (bad.line, f"{source.label} {source.unit} {bad.line}: {bad.reason}")
        if first is not None:
            raise ImportFileError(first[1])

    def reason(self, row: int) -> str:
        """Every check the row fails, in the order they were made (column order): a user who
        fixes a rejected row should not find the next problem of the same row on the retry."""
        return "; ".join(
            f"field {c.field!r}: {c.detail(row - c.offset)}" for c in self._checks if c.fails(row)
        )

    def write_rejects(self, path: Path) -> int:
        """Write every bad row, with its original values, ``line`` and ``reason``; return count."""
        return write_reject_tables([self.rejects()], path)

    def rejects(self) -> pa.Table:
        """Every bad row (malformed ones too) as text, with its ``line`` and ``reason``."""
        source = self.source
        rows = np.flatnonzero(self.bad())
        taken = source.table.take(pa.array(rows, pa.int64()))
        names = list(source.table.column_names)
        line_col, reason_col = _free_name("line", names), _free_name("reason", names)
        columns: dict[str, list[str | None] | pa.Array] = {}
        for name in names:
            columns[name] = _display(taken.column(name))
        columns[line_col] = pa.array(source.lines()[rows], pa.int64())
        columns[reason_col] = pa.array([self.reason(int(r)) for r in rows], pa.string())
        table = pa.table(columns)
        if source.malformed:
            extra = pa.table(
                {
                    **{
                        name: pa.array([m.values.get(name) for m in source.malformed], pa.string())
                        for name in names
                    },
                    line_col: pa.array([m.line for m in source.malformed], pa.int64()),
                    reason_col: pa.array([m.reason for m in source.malformed], pa.string()),
                }
            )
            table = pa.concat_tables([table, extra]).sort_by(line_col)
        return table


def write_reject_tables(tables: list[pa.Table], path: Path) -> int:
    """Write the rejects of one file's parts (each from :meth:`Problems.rejects`: its columns,
    then line and reason) as one CSV in line order; a column only some parts have is empty in
    the others. Returns the count."""
    names: dict[str, None] = {}
    for t in tables:
        names.update(dict.fromkeys(t.column_names[:-2]))
    line_col, reason_col = _free_name("line", list(names)), _free_name("reason", list(names))
    parts = []
    for t in tables:
        have = t.column_names[:-2]
        columns = {
            name: t.column(name) if name in have else pa.nulls(t.num_rows, pa.string())
            for name in names
        }
        columns[line_col] = t.column(t.num_columns - 2)
        columns[reason_col] = t.column(t.num_columns - 1)
        parts.append(pa.table(columns))
    table = pa.concat_tables(parts).sort_by(line_col)
    path.parent.mkdir(parents=True, exist_ok=True)
    pa_csv.write_csv(table, str(path))
    return table.num_rows


def _free_name(name: str, taken: list[str]) -> str:
    while name in taken:
        name = "_" + name
    return name


def _display(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    try:
        return to_text(column)
    except (UnsupportedType, pa.ArrowException):
        values = column.to_pylist()
        return pa.array([None if v is None else str(v) for v in values], pa.string())
