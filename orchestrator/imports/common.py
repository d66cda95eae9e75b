"""Pieces shared by the customer and event imports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.errors import ImportFileError
from orchestrator.imports.convert import (
    Converted,
    UnsupportedType,
    check_supported,
    empty_cells,
    mask,
    plain,
    shown,
    to_text,
)
from orchestrator.imports.problems import Checks, Problems
from orchestrator.imports.report import Progress
from orchestrator.imports.source import Source, default_rejects_path


def require_columns(source: Source, names: Sequence[str]) -> None:
    missing = [name for name in names if name not in source.table.column_names]
    if missing and source.fmt == "jsonl" and source.malformed:
        bad = source.malformed[0]  # the columns may be on the lines that could not be read
        raise ImportFileError(f"{source.label} line {bad.line}: {bad.reason}")
    if missing:
        have = ", ".join(source.table.column_names) or "none"
        raise ImportFileError(
            f"{source.label}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (columns found: {have})"
        )


def column(source: Source, name: str) -> pa.Array:
    """A column ready for conversion; an unsupported type is an error naming it."""
    arr = plain(source.table.column(name))
    try:
        check_supported(arr.type)
    except UnsupportedType as exc:
        raise ImportFileError(
            f"{source.label}: column {name!r} has unsupported type {exc} "
            "(expected text, numbers, booleans, dates or timestamps)"
        ) from exc
    return arr


def text_field(
    source: Source,
    problems: Checks,
    name: str,
    *,
    max_length: int,
    required: bool,
    trim: bool = True,
) -> Converted:
    """A text column (ids, names): trimmed, checked for emptiness and length."""
    original = column(source, name)
    text = to_text(original)
    if trim:
        text = pc.utf8_trim_whitespace(text)
    empty = empty_cells(text)
    if required:
        problems.add(name, empty, lambda row: "is empty")
    too_long = ~empty & mask(pc.greater(pc.utf8_length(text), max_length))
    problems.add(
        name,
        too_long,
        lambda row: f"{shown(original[row].as_py())} is longer than {max_length} characters",
    )
    values = pc.if_else(pa.array(empty), pa.nulls(len(text), pa.string()), text)
    return Converted(values, empty, too_long, original, "text")


def first_occurrences(keys: pa.Array) -> np.ndarray:
    """Index of the first row holding each row's key, shape (n,)."""
    codes = pc.fill_null(keys, "").dictionary_encode().indices
    codes = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
    _, first = np.unique(codes, return_index=True)
    return np.asarray(first[codes], dtype=np.int64)


def constant_timestamp(value: datetime, n: int) -> pa.Array:
    return pa.array(np.full(n, np.datetime64(value, "us")), pa.timestamp("us"))


def progress_of(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    progress(0, total)
    return lambda done: progress(done, total)


def write_rejects(
    source: Source, problems: Problems, *, skip_invalid: bool, rejects_path: str | Path | None
) -> tuple[int, str | None]:
    """Write the reject file when rows were rejected; return (count, path or None)."""
    rejected = problems.count()
    if not skip_invalid or rejected == 0:
        return 0, None
    path = Path(rejects_path) if rejects_path is not None else default_rejects_path(source.path)
    problems.write_rejects(path)
    return rejected, str(path)
