"""Typed column arrays for one batch of ``n`` customers: what a compiled rule evaluates over.

One class per field type, each holding 1-D arrays of length ``n`` with its own null marker:

- ``NumberColumn(values)``: float64, NaN is null.
- ``BoolColumn(values, known)``: bool, null where ``known`` is False (``values`` there is ignored).
- ``StringColumn(codes, categories)``: int32 codes into ``categories``, -1 is null.
- ``DateColumn(values)``: datetime64[D], NaT is null.

>>> column_from_values("string", ["ES", None, "FR", "ES"])
StringColumn(codes=array([ 0, -1,  1,  0], dtype=int32), categories=('ES', 'FR'))
>>> column_from_values("date", ["2026-01-31", None]).values
array(['2026-01-31',        'NaT'], dtype='datetime64[D]')
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from orchestrator.errors import InputError
from orchestrator.rules.check import FIELD_TYPES, parse_iso_date


def _one_dimensional(name: str, array: NDArray[Any]) -> None:
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")


@dataclass(frozen=True, slots=True, eq=False)
class NumberColumn:
    """Numbers as float64, shape ``(n,)``; NaN marks null."""

    values: NDArray[np.float64]
    dtype: ClassVar[str] = "number"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float64))
        _one_dimensional("values", self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True, eq=False)
class BoolColumn:
    """True/false values, shape ``(n,)``, with ``known`` False where the value is null."""

    values: NDArray[np.bool_]
    known: NDArray[np.bool_]
    dtype: ClassVar[str] = "bool"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.bool_))
        object.__setattr__(self, "known", np.asarray(self.known, dtype=np.bool_))
        _one_dimensional("values", self.values)
        if self.known.shape != self.values.shape:
            raise ValueError(
                f"known has shape {self.known.shape}, values has shape {self.values.shape}"
            )

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True, eq=False)
class StringColumn:
    """Strings as int32 codes into ``categories``, shape ``(n,)``; -1 marks null.

    Categories need not be sorted, but each must appear once.
    """

    codes: NDArray[np.int32]
    categories: tuple[str, ...]
    dtype: ClassVar[str] = "string"

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", np.asarray(self.codes, dtype=np.int32))
        object.__setattr__(self, "categories", tuple(self.categories))
        _one_dimensional("codes", self.codes)
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories must be distinct")
        if len(self.codes) and (self.codes.min() < -1 or self.codes.max() >= len(self.categories)):
            raise ValueError(f"codes must lie in [-1, {len(self.categories)})")

    def __len__(self) -> int:
        return len(self.codes)

    def code_of(self, value: str) -> int:
        """Return the code of ``value``, or -1 when no row holds it.

        >>> StringColumn(np.array([1, 0]), ("a", "b")).code_of("b")
        1
        """
        try:
            return self.categories.index(value)
        except ValueError:
            return -1


@dataclass(frozen=True, slots=True, eq=False)
class DateColumn:
    """Calendar dates as datetime64[D], shape ``(n,)``; NaT marks null."""

    values: NDArray[np.datetime64]
    dtype: ClassVar[str] = "date"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", np.asarray(self.values, dtype="datetime64[D]"))
        _one_dimensional("values", self.values)

    def __len__(self) -> int:
        return len(self.values)


Column: TypeAlias = NumberColumn | BoolColumn | StringColumn | DateColumn
Columns: TypeAlias = Mapping[str, Column]


def display_value(column: Column, i: int) -> str:
    """Row ``i`` of a column as a rule would write it (``null`` where unknown).

    >>> display_value(NumberColumn(np.array([3.0, np.nan])), 0), display_value(
    ...     StringColumn(np.array([-1, 0]), ("gold",)), 1)
    ('3', '"gold"')
    """
    if isinstance(column, NumberColumn):
        v = float(column.values[i])
        return "null" if np.isnan(v) else f"{v:.6g}"
    if isinstance(column, BoolColumn):
        return ("true" if column.values[i] else "false") if column.known[i] else "null"
    if isinstance(column, StringColumn):
        code = int(column.codes[i])
        return "null" if code < 0 else f'"{column.categories[code]}"'
    day = column.values[i]
    return "null" if np.isnat(day) else f'"{day}"'


COLUMN_CLASSES: dict[str, type[Column]] = {
    "number": NumberColumn,
    "bool": BoolColumn,
    "string": StringColumn,
    "date": DateColumn,
}

_ACCEPTED: dict[str, tuple[type, ...]] = {
    "number": (int, float, np.integer, np.floating),
    "bool": (bool, np.bool_),
    "string": (str,),
    "date": (datetime.date, np.datetime64, str),
}


def column_from_values(dtype: str, values: Sequence[Any]) -> Column:
    """Build a column of field type ``dtype`` from Python values (or an Arrow array of them),
    ``None`` meaning null.

    Numbers come from int/float, bools from bool, strings from str, dates from
    ``datetime.date`` (a ``datetime`` keeps its date) or ``YYYY-MM-DD`` strings.

    >>> column_from_values("number", [3, None, 0.5]).values
    array([3. , nan, 0.5])
    >>> column_from_values("number", ["3"])
    Traceback (most recent call last):
    ...
    orchestrator.errors.InputError: a number column cannot hold str values such as '3'
    """
    if dtype not in FIELD_TYPES:
        raise InputError(f"unknown field type {dtype!r}; expected one of {', '.join(FIELD_TYPES)}")
    if isinstance(values, pa.Array):  # read as Arrow already (the run's batch reader)
        fast = _from_arrow(dtype, values, values)
        if fast is not None:
            return fast
        values = values.to_pylist()
    else:
        fast = _arrow_column(dtype, values)
        if fast is not None:
            return fast
    kinds = {type(v) for v in values}
    _check_types(dtype, values, kinds)
    if dtype == "number":
        return _numbers(values)
    if dtype == "bool":
        known = np.fromiter((v is not None for v in values), dtype=np.bool_, count=len(values))
        truth = np.fromiter((v is not None and bool(v) for v in values), np.bool_, len(values))
        return BoolColumn(truth, known)
    if dtype == "string":
        return _strings(values)
    return _dates(values)


_ARROW_KINDS = {
    "number": (pa.types.is_integer, pa.types.is_floating),
    "bool": (pa.types.is_boolean,),
    "string": (pa.types.is_string,),
    "date": (pa.types.is_string,),
}


def _arrow_column(dtype: str, values: Sequence[Any]) -> Column | None:
    """The column built in C when Arrow infers a type the field accepts; None sends the
    values down the row-wise path (other Python types, mixtures, and their error messages)."""
    try:
        arr = pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeError):
        return None
    # Arrow reads [0.5, True] as two doubles; a number column holds no bools
    if dtype == "number" and any(map(isinstance, values, repeat(bool))):
        return None
    return _from_arrow(dtype, arr, values)


def _from_arrow(dtype: str, arr: pa.Array, values: Sequence[Any]) -> Column | None:
    """The column of the Arrow ``arr`` (the Python ``values``, for the row-wise fallback of
    dates), or None when its type is not one the field accepts."""
    kind = arr.type
    if pa.types.is_null(kind) or arr.null_count == len(arr):  # every value is None
        return _nulls(dtype, len(arr))
    if not any(test(kind) for test in _ARROW_KINDS[dtype]):
        return None
    if dtype == "number":
        out = (
            pc.cast(arr, pa.float64(), safe=False).fill_null(np.nan).to_numpy(zero_copy_only=False)
        )
        return NumberColumn(np.asarray(out, dtype=np.float64))
    if dtype == "bool":
        known = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        truth = np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        return BoolColumn(truth, known)
    if dtype == "string":
        encoded = pc.dictionary_encode(arr)
        raw = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        return _sorted_codes(raw, encoded.dictionary.to_pylist())
    return _iso_dates(values, arr)


def _nulls(dtype: str, n: int) -> Column:
    if dtype == "number":
        return NumberColumn(np.full(n, np.nan))
    if dtype == "bool":
        return BoolColumn(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    if dtype == "string":
        return StringColumn(np.full(n, -1, dtype=np.int32), ())
    return DateColumn(np.full(n, _NAT, dtype=np.int64).view("datetime64[D]"))


def _check_types(dtype: str, values: Sequence[Any], kinds: set[type]) -> None:
    accepted = _ACCEPTED[dtype]
    for kind in kinds:
        bad = kind is not type(None) and (
            not issubclass(kind, accepted)
            or (dtype == "number" and issubclass(kind, bool | np.bool_))
        )
        if bad:
            example = next(v for v in values if type(v) is kind)
            raise InputError(
                f"a {dtype} column cannot hold {kind.__name__} values such as {example!r}"
            )


def _numbers(values: Sequence[Any]) -> NumberColumn:
    try:
        return NumberColumn(np.array(values, dtype=np.float64))
    except OverflowError:
        raise InputError("a number column holds a value too large for a float") from None


def _strings(values: Sequence[Any]) -> StringColumn:
    # A dict keeps Python's exact strings (numpy's fixed-width str drops trailing NULs).
    index: dict[str, int] = {}
    setdefault = index.setdefault
    raw = np.fromiter(
        (-1 if v is None else setdefault(v, len(index)) for v in values),
        dtype=np.int32,
        count=len(values),
    )
    return _sorted_codes(raw, list(index))


def _sorted_codes(raw: NDArray[np.int32], labels: list[str]) -> StringColumn:
    """Codes into sorted categories, from codes into ``labels`` (each once; -1: null)."""
    order = sorted(range(len(labels)), key=labels.__getitem__)
    remap = np.empty(len(labels) + 1, dtype=np.int32)
    remap[order] = np.arange(len(labels), dtype=np.int32)
    remap[-1] = -1  # null codes (-1) index the last slot and stay -1
    return StringColumn(remap[raw], tuple(labels[i] for i in order))


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NAT = np.iinfo(np.int64).min  # how datetime64 stores NaT


def _day_number(value: Any) -> int:
    """Days since 1970-01-01, or the NaT marker for None."""
    if value is None:
        return _NAT
    if isinstance(value, datetime.date):  # a datetime keeps its date
        return value.toordinal() - _EPOCH_ORDINAL
    if isinstance(value, str):
        day = parse_iso_date(value)
        if day is None:  # numpy would also read "2026", "NaT" or "today" as dates
            raise InputError(f"{value!r} is not a date; write dates as YYYY-MM-DD")
        return day.toordinal() - _EPOCH_ORDINAL
    return int(np.datetime64(value, "D").astype(np.int64))


_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _iso_dates(values: Sequence[Any], arr: pa.Array) -> DateColumn:
    """``YYYY-MM-DD`` strings (or None, as the Arrow ``arr``) parsed in C; anything else takes
    the row-wise path, which names the bad value."""
    if pc.all(pc.match_substring_regex(arr, _ISO_DATE)).as_py() is False:
        return _dates(values)
    try:
        parsed = pc.strptime(arr, format="%Y-%m-%d", unit="s")
    except pa.ArrowInvalid:
        return _dates(values)
    # strptime moves 2026-02-30 into March: the day must be the one written; no year 0
    written = pc.cast(pc.utf8_slice_codeunits(arr, 8, 10), pa.int64())
    if pc.all(pc.equal(pc.day(parsed), written)).as_py() is False:
        return _dates(values)
    if pc.any(pc.less(pc.year(parsed), 1)).as_py():
        return _dates(values)
    days = pc.cast(pc.cast(parsed, pa.date32()), pa.int32()).fill_null(0)
    out = days.to_numpy(zero_copy_only=False).astype(np.int64)
    out[np.asarray(arr.is_null())] = _NAT
    return DateColumn(out.view("datetime64[D]"))


def _dates(values: Sequence[Any]) -> DateColumn:
    if isinstance(values, pa.Array):
        values = values.to_pylist()
    # Day numbers through fromiter are several times faster than np.array(dtype=datetime64).
    days = np.fromiter((_day_number(v) for v in values), dtype=np.int64, count=len(values))
    return DateColumn(days.view("datetime64[D]"))
