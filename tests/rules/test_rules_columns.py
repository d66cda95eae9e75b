"""Typed column arrays and building them from Python values."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from orchestrator.errors import InputError
from orchestrator.rules.columns import (
    BoolColumn,
    DateColumn,
    NumberColumn,
    StringColumn,
    column_from_values,
)


def test_numbers_from_ints_floats_and_none() -> None:
    column = column_from_values("number", [1, 2.5, None, np.int64(4), np.float32(0.5), 2**70])
    assert isinstance(column, NumberColumn)
    assert column.values.dtype == np.float64
    np.testing.assert_array_equal(column.values, [1.0, 2.5, np.nan, 4.0, 0.5, 2.0**70])
    assert len(column) == 6


def test_bools_from_bools_and_none() -> None:
    column = column_from_values("bool", [True, None, False, np.bool_(True)])
    assert isinstance(column, BoolColumn)
    assert column.values.tolist() == [True, False, False, True]
    assert column.known.tolist() == [True, False, True, True]


def test_strings_get_sorted_categories_and_null_code() -> None:
    column = column_from_values("string", ["b", None, "a", "b", "a\x00", ""])
    assert isinstance(column, StringColumn)
    assert column.categories == ("", "a", "a\x00", "b")
    assert column.codes.dtype == np.int32
    assert column.codes.tolist() == [3, -1, 1, 3, 2, 0]
    assert column.code_of("a\x00") == 2 and column.code_of("zz") == -1


def test_dates_from_dates_datetimes_iso_strings_and_none() -> None:
    column = column_from_values(
        "date",
        [
            datetime.date(2026, 1, 2),
            None,
            "1969-12-31",
            datetime.datetime(2020, 5, 5, 23, 59),
            np.datetime64("2020-01-01T10:00"),
            np.datetime64("NaT"),
        ],
    )
    assert isinstance(column, DateColumn)
    assert column.values.dtype == np.dtype("datetime64[D]")
    expected = ["2026-01-02", "NaT", "1969-12-31", "2020-05-05", "2020-01-01", "NaT"]
    np.testing.assert_array_equal(column.values, np.array(expected, dtype="datetime64[D]"))


def test_empty_columns() -> None:
    for dtype in ("number", "bool", "string", "date"):
        assert len(column_from_values(dtype, [])) == 0


@pytest.mark.parametrize(
    ("dtype", "values", "message"),
    [
        ("number", ["3"], "a number column cannot hold str values such as '3'"),
        ("number", [1, True], "a number column cannot hold bool values such as True"),
        ("bool", [1], "a bool column cannot hold int values such as 1"),
        ("string", ["a", 1], "a string column cannot hold int values such as 1"),
        ("date", [20260101], "a date column cannot hold int values such as 20260101"),
        ("date", ["2026-02-30"], "'2026-02-30' is not a date; write dates as YYYY-MM-DD"),
        ("date", ["today"], "'today' is not a date; write dates as YYYY-MM-DD"),
        ("date", ["2026"], "'2026' is not a date; write dates as YYYY-MM-DD"),
        (
            "integer",
            [1],
            "unknown field type 'integer'; expected one of bool, number, string, date",
        ),
    ],
)
def test_bad_values_are_input_errors(dtype: str, values: list[object], message: str) -> None:
    with pytest.raises(InputError) as caught:
        column_from_values(dtype, values)
    assert str(caught.value) == message


def test_number_too_large_for_a_float() -> None:
    with pytest.raises(InputError, match="too large"):
        column_from_values("number", [10**400])


def test_constructors_coerce_dtypes_and_validate_shapes() -> None:
    assert NumberColumn(np.array([1, 2])).values.dtype == np.float64
    assert StringColumn(np.array([0, -1]), ["x"]).categories == ("x",)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        NumberColumn(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="known has shape"):
        BoolColumn(np.zeros(3, bool), np.zeros(2, bool))
    with pytest.raises(ValueError, match="codes must lie in"):
        StringColumn(np.array([0, 1]), ("x",))
    with pytest.raises(ValueError, match="codes must lie in"):
        StringColumn(np.array([-2]), ("x",))
    with pytest.raises(ValueError, match="distinct"):
        StringColumn(np.array([0]), ("x", "x"))
