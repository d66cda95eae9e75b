"""Vectorized conversion of Arrow columns to the engine's value types, locating the bad cells.

Every converter takes one column of ``n`` cells and returns a :class:`Converted`: the values
(null where the cell is empty or bad) and two boolean masks of shape ``(n,)``. Nothing here loops
over rows in Python except to JSON-escape the rare strings that need it.

Attribute types (``customer_attribute.dtype``): ``bool``, ``number``, ``string``, ``date``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

DTYPES = ("bool", "number", "string", "date")
NUMBER_RE = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
TIMESTAMP_RE = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r" ?(?P<tz>Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
TRUE_WORDS = ["true", "yes"]
FALSE_WORDS = ["false", "no"]
_MAX_EXACT = 2.0**53
_WHAT = {"bool": "a boolean", "number": "a number", "string": "text", "date": "a date"}


class UnsupportedType(TypeError):
    """A column whose Arrow type has no place in the engine (lists, structs, binary...)."""


@dataclass
class Converted:
    """One converted column: ``values`` is null wherever ``empty`` or ``bad`` is set."""

    values: pa.Array
    empty: np.ndarray
    bad: np.ndarray
    original: pa.Array
    what: str

    def detail(self, row: int) -> str:
        return f"{shown(self.original[row].as_py())} is not {self.what}"


def shown(value: object) -> str:
    """A cell for a message: text quoted, anything else as it prints (``2024-01-01 10:30:00``)."""
    return repr(value) if isinstance(value, str) else str(value)


# --- helpers ---------------------------------------------------------------------------------


def mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls counted as False."""
    filled = pc.fill_null(values, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array, dictionaries decoded, large strings made ordinary."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def check_supported(kind: pa.DataType) -> None:
    """Raise :class:`UnsupportedType` unless a column of ``kind`` can be converted."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    ok = (
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or is_text(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )
    if not ok:
        raise UnsupportedType(str(kind))


def empty_cells(arr: pa.Array) -> np.ndarray:
    """Cells that hold nothing: null, blank text, or a float NaN (pandas' missing value)."""
    out = ~mask(pc.is_valid(arr))
    if pa.types.is_string(arr.type):
        out |= mask(pc.equal(pc.utf8_trim_whitespace(arr), ""))
    elif pa.types.is_floating(arr.type):
        out |= mask(pc.is_nan(arr))
    return out


def _with_nulls(values: pa.Array, keep: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(keep), values, pa.nulls(len(values), values.type))


def utc_naive(arr: pa.Array) -> pa.Array:
    """Timestamps of any unit and zone as naive UTC microseconds."""
    micros = pc.cast(arr, pa.timestamp("us", arr.type.tz), safe=False)
    return pc.cast(pc.cast(micros, pa.int64()), pa.timestamp("us"))


def number_text(values: pa.Array) -> pa.Array:
    """Numbers as JSON/hash text: integral values without a fraction (``3`` not ``3.0``)."""
    if pa.types.is_integer(values.type):
        return pc.cast(values, pa.string())
    floats = pc.cast(values, pa.float64())
    integral = pc.and_(
        pc.equal(pc.floor(floats), floats), pc.less(pc.abs(floats), pa.scalar(_MAX_EXACT))
    )
    as_int = pc.cast(pc.cast(pc.if_else(integral, floats, 0.0), pa.int64()), pa.string())
    return pc.if_else(integral, as_int, pc.cast(floats, pa.string()))


def iso_text(stamps: pa.Array) -> pa.Array:
    """Naive timestamps as ISO 8601 text, microseconds only when there are some."""
    # A cast, not strftime: Arrow's strftime is some 20 times slower.
    text = pc.replace_substring(pc.cast(stamps, pa.string()), " ", "T", max_replacements=1)
    return pc.replace_substring(text, ".000000", "")


def to_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any supported column as text (the form a CSV would have held)."""
    arr = plain(column)
    kind = arr.type
    check_supported(kind)
    if pa.types.is_string(kind):
        return arr
    if pa.types.is_null(kind):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _with_nulls(number_text(arr), ~empty_cells(arr))
    if pa.types.is_date(kind):
        return pc.cast(pc.cast(arr, pa.date32()), pa.string())
    if pa.types.is_timestamp(kind):
        return iso_text(utc_naive(arr))
    return pc.cast(arr, pa.string())


# --- text parsers ---------------------------------------------------------------------------


def _convert_text(
    arr: pa.Array, values: pa.Array, ok: np.ndarray, original: pa.Array, what: str
) -> Converted:
    empty = empty_cells(arr)
    bad = ~empty & ~ok
    return Converted(_with_nulls(values, ~empty & ok), empty, bad, original, what)


def _orig(text: pa.Array, original: pa.Array | None) -> pa.Array:
    return text if original is None else original


def _real_dates(stamps: pa.Array, text: pa.Array, ok: np.ndarray) -> np.ndarray:
    """Narrow ``ok`` to dates that exist: strptime rolls 2024-02-30 over to March 1st."""
    text = pc.fill_null(text, "")
    for part, start, stop in ((pc.year, 0, 4), (pc.month, 5, 7), (pc.day, 8, 10)):
        digits = pc.if_else(pa.array(ok), pc.utf8_slice_codeunits(text, start, stop), "0")
        ok = ok & mask(pc.equal(part(stamps), pc.cast(digits, pa.int64())))
    return ok


def parse_bool(text: pa.Array, original: pa.Array | None = None) -> Converted:
    words = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    yes = mask(pc.is_in(words, pa.array(TRUE_WORDS)))
    no = mask(pc.is_in(words, pa.array(FALSE_WORDS)))
    values = pa.array(yes)
    return _convert_text(text, values, yes | no, _orig(text, original), _WHAT["bool"])


def parse_number(text: pa.Array, original: pa.Array | None = None) -> Converted:
    trimmed = pc.utf8_trim_whitespace(text)
    ok = mask(pc.match_substring_regex(trimmed, NUMBER_RE))
    values = pc.cast(_with_nulls(trimmed, ok), pa.float64())
    ok &= mask(pc.is_finite(values))
    return _convert_text(text, values, ok, _orig(text, original), _WHAT["number"])


def parse_date(text: pa.Array, original: pa.Array | None = None) -> Converted:
    trimmed = pc.utf8_trim_whitespace(text)
    try:  # the common case: every cell a valid date, parsed by one strict cast
        values = pc.cast(_with_nulls(trimmed, ~empty_cells(trimmed)), pa.date32())
        ok = np.ones(len(text), dtype=bool)
    except pa.ArrowInvalid:
        ok = mask(pc.match_substring_regex(trimmed, DATE_RE))
        stamps = pc.strptime(_with_nulls(trimmed, ok), "%Y-%m-%d", unit="s", error_is_null=True)
        ok = _real_dates(stamps, trimmed, ok)
        values = pc.cast(stamps, pa.date32())
    return _convert_text(text, values, ok, _orig(text, original), _WHAT["date"])


def parse_timestamp(text: pa.Array, original: pa.Array | None = None) -> Converted:
    """ISO dates or datetimes, with or without an offset, to naive UTC microseconds."""
    trimmed = pc.utf8_trim_whitespace(text)
    n = len(text)
    ok = np.zeros(n, dtype=bool)
    micros = np.zeros(n, dtype=np.int64)
    try:  # the common case: no offsets, no odd forms; Arrow parses it in one pass
        fast = pc.cast(_with_nulls(trimmed, ~empty_cells(trimmed)), pa.timestamp("us"))
        ok = mask(pc.is_valid(fast))
        micros = pc.fill_null(pc.cast(fast, pa.int64()), 0).to_numpy()
    except pa.ArrowInvalid:
        parts = pc.extract_regex(trimmed, TIMESTAMP_RE)
        ok = mask(pc.is_valid(parts))
        day_text = pc.struct_field(parts, "date")
        day = pc.strptime(day_text, "%Y-%m-%d", unit="us", error_is_null=True)
        ok = _real_dates(day, day_text, ok)

        def ints(values: pa.Array, width: int | None = None) -> np.ndarray:
            values = pc.fill_null(values, "")
            if width is not None:
                values = pc.utf8_slice_codeunits(
                    pc.utf8_rpad(values, width=9, padding="0"), 0, width
                )
            digits = pc.if_else(pc.equal(values, ""), "0", values)
            return np.asarray(pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False))

        hour, minute = ints(pc.struct_field(parts, "h")), ints(pc.struct_field(parts, "m"))
        second, frac = ints(pc.struct_field(parts, "s")), ints(pc.struct_field(parts, "f"), 6)
        zone = pc.replace_substring(pc.fill_null(pc.struct_field(parts, "tz"), ""), ":", "")
        zone = pc.if_else(pc.is_in(zone, pa.array(["Z", "z"])), "", zone)
        sign = np.where(mask(pc.starts_with(zone, "-")), -1, 1)
        zone_h = ints(pc.utf8_slice_codeunits(zone, 1, 3))
        zone_m = ints(pc.utf8_slice_codeunits(zone, 3, 5))
        ok &= (hour < 24) & (minute < 60) & (second < 60) & (zone_h < 24) & (zone_m < 60)
        days = np.asarray(pc.fill_null(pc.cast(day, pa.int64()), 0).to_numpy())
        micros = (
            days
            + ((hour * 60 + minute) * 60 + second) * 1_000_000
            + frac
            - sign * (zone_h * 60 + zone_m) * 60_000_000
        )
    values = pa.array(micros, pa.timestamp("us"))
    return _convert_text(text, values, ok, _orig(text, original), "a date or datetime")


# --- typed columns --------------------------------------------------------------------------


def _typed(arr: pa.Array, values: pa.Array, bad: np.ndarray, what: str) -> Converted:
    empty = empty_cells(arr)
    return Converted(_with_nulls(values, ~empty & ~bad), empty, bad & ~empty, arr, what)


def to_bool(column: pa.Array | pa.ChunkedArray) -> Converted:
    arr = plain(column)
    if pa.types.is_boolean(arr.type):
        return _typed(arr, arr, np.zeros(len(arr), dtype=bool), _WHAT["bool"])
    return parse_bool(to_text(arr), arr)


def to_number(column: pa.Array | pa.ChunkedArray) -> Converted:
    """Numbers; integer columns stay integers (exact beyond 2**53)."""
    arr = plain(column)
    kind = arr.type
    if pa.types.is_integer(kind):
        return _typed(arr, pc.cast(arr, pa.int64()), np.zeros(len(arr), dtype=bool), "a number")
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        floats = pc.cast(arr, pa.float64())
        # NaN and infinities are refused as they are in CSV text ("NaN" does not parse)
        bad = mask(pc.or_(pc.is_inf(floats), pc.is_nan(floats)))
        return _typed(arr, floats, bad, "a finite number")
    return parse_number(to_text(arr), arr)


def to_date(column: pa.Array | pa.ChunkedArray) -> Converted:
    arr = plain(column)
    if pa.types.is_date(arr.type):
        return _typed(arr, pc.cast(arr, pa.date32()), np.zeros(len(arr), dtype=bool), "a date")
    if pa.types.is_timestamp(arr.type):
        stamps = utc_naive(arr)
        midnight = mask(pc.equal(pc.cast(stamps, pa.date32()).cast(pa.timestamp("us")), stamps))
        return _typed(arr, pc.cast(stamps, pa.date32()), ~midnight, "a date")
    return parse_date(to_text(arr), arr)


def to_timestamp(column: pa.Array | pa.ChunkedArray) -> Converted:
    arr = plain(column)
    if pa.types.is_timestamp(arr.type):
        return _typed(arr, utc_naive(arr), np.zeros(len(arr), dtype=bool), "a datetime")
    if pa.types.is_date(arr.type):
        stamps = pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("us"))
        return _typed(arr, stamps, np.zeros(len(arr), dtype=bool), "a datetime")
    return parse_timestamp(to_text(arr), arr)


def to_string(column: pa.Array | pa.ChunkedArray) -> Converted:
    """Text; a NUL character is refused (PostgreSQL cannot store it, SQLite would)."""
    arr = plain(column)
    text = to_text(arr)
    return _typed(arr, text, mask(pc.match_substring(text, "\x00")), "text without NUL characters")


def convert(column: pa.Array | pa.ChunkedArray, dtype: str) -> Converted:
    """Convert a column to an attribute type (one of :data:`DTYPES`)."""
    return {"bool": to_bool, "number": to_number, "date": to_date, "string": to_string}[dtype](
        column
    )


# --- type inference -------------------------------------------------------------------------


def infer(column: pa.Array | pa.ChunkedArray, fmt: str) -> tuple[str | None, Converted | None]:
    """The attribute type of a new column and the column converted to it.

    ``(None, None)`` when the column holds no value at all. CSV text is tried as bool, then
    number, then date, then falls back to string. JSON has no date type, so JSON text that is all
    ISO dates is a date too. Parquet types are taken as they are.
    """
    arr = plain(column)
    check_supported(arr.type)
    if empty_cells(arr).all():
        return None, None
    kind = arr.type
    if pa.types.is_timestamp(kind):
        as_date = to_date(arr)
        return ("string", to_string(arr)) if as_date.bad.any() else ("date", as_date)
    if not pa.types.is_string(kind):
        dtype = native_dtype(kind)
        return dtype, convert(arr, dtype)
    if fmt == "parquet":
        return "string", to_string(arr)
    candidates = [("bool", parse_bool), ("number", parse_number), ("date", parse_date)]
    for dtype, parse in candidates if fmt == "csv" else candidates[2:]:
        if parse(arr.slice(0, 1000)).bad.any():  # most columns give themselves away early
            continue
        converted = parse(arr)
        if not converted.bad.any():
            return dtype, converted
    return "string", to_string(arr)


# --- JSON text ------------------------------------------------------------------------------


def _quoted(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', values, '"', "")


def json_string(values: pa.Array) -> pa.Array:
    """Text as JSON strings; only strings with quotes, backslashes or controls go through orjson."""
    values = plain(values)
    quoted = _quoted(values)
    special = mask(pc.match_substring_regex(values, r'[\x00-\x1f"\\]'))
    if not special.any():
        return quoted
    rows = np.flatnonzero(special)
    escaped = [orjson.dumps(v).decode() for v in values.take(pa.array(rows)).to_pylist()]
    return pc.replace_with_mask(quoted, pa.array(special), pa.array(escaped, pa.string()))


def json_value(values: pa.Array, dtype: str) -> pa.Array:
    """Converted values as JSON text (null stays null), for ``dtype`` or ``"timestamp"``."""
    if dtype == "bool":
        return pc.if_else(values, "true", "false")
    if dtype == "number":
        return number_text(values)
    if dtype == "date":
        return _quoted(pc.cast(values, pa.string()))
    if dtype == "timestamp":
        return _quoted(iso_text(values))
    return json_string(values)


def native_dtype(kind: pa.DataType) -> str:
    """How a typed column's values go into JSON as they are (for event extras)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return "string"


def member(name: str, values: pa.Array) -> pa.Array:
    """``,"name":value`` per row (null where ``values`` is null), to build objects from."""
    return pc.binary_join_element_wise("," + orjson.dumps(name).decode() + ":", values, "")


def json_objects(members: list[pa.Array], n: int, *, empty: str | None) -> pa.Array:
    """Per row, the JSON object of the non-null ``members`` (from :func:`member`).

    A row without members gets ``empty`` (``"{}"``, or None for SQL NULL).
    """
    if not members:
        return pa.array([empty] * n, pa.string()) if empty is not None else pa.nulls(n, pa.string())
    # Arrow 26's null_handling="skip" drops rows where all are null, so: replace, then trim
    # the leading comma.
    body = pc.binary_join_element_wise(*members, "", null_handling="replace", null_replacement="")
    objects = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 1), "}", "")
    if empty == "{}":
        return objects
    return pc.if_else(pc.equal(body, ""), pa.scalar(empty, pa.string()), objects)
