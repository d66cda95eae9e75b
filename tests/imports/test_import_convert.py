"""The vectorized converters against plain Python, cell by cell."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.imports.convert import (
    infer,
    json_objects,
    json_string,
    member,
    number_text,
    parse_date,
    parse_number,
    parse_timestamp,
)

UTC = dt.UTC
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(st.lists(finite, max_size=20))
def test_parse_number_agrees_with_float(values: list[float]) -> None:
    texts = [repr(v) for v in values] + ["", " 12 ", "1e999", "abc", "1.2.3"]
    got = parse_number(pa.array(texts))
    assert got.values.to_pylist()[: len(values)] == values
    assert got.empty.tolist()[len(values) :] == [True, False, False, False, False]
    assert got.bad.tolist()[len(values) :] == [False, False, True, True, True]


@given(st.lists(finite, max_size=20))
def test_number_text_round_trips(values: list[float]) -> None:
    texts = number_text(pa.array(values, pa.float64())).to_pylist()
    assert [float(t) for t in texts] == values
    assert all(not t.endswith(".0") for t in texts)


moments = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: dt.timedelta(minutes=m))


@given(st.lists(st.tuples(moments, st.none() | offsets), min_size=1, max_size=20))
def test_parse_timestamp_agrees_with_datetime(items: list[tuple[dt.datetime, object]]) -> None:
    texts, expected = [], []
    for moment, offset in items:
        if offset is None:
            texts.append(moment.isoformat())
            expected.append(moment)
        else:
            assert isinstance(offset, dt.timedelta)
            aware = moment.replace(tzinfo=dt.timezone(offset))
            texts.append(aware.isoformat())
            expected.append(aware.astimezone(UTC).replace(tzinfo=None))
    got = parse_timestamp(pa.array(texts))
    assert not got.bad.any()
    assert got.values.to_pylist() == expected


def test_parse_date_rejects_days_that_do_not_exist() -> None:
    got = parse_date(pa.array(["2024-02-29", "2023-02-29", "2024-04-31", "2024-4-1", ""]))
    assert got.values.to_pylist() == [dt.date(2024, 2, 29), None, None, None, None]
    assert got.bad.tolist() == [False, True, True, True, False]


@given(st.lists(st.text(), max_size=10))
def test_json_string_is_valid_json(values: list[str]) -> None:
    texts = json_string(pa.array(values, pa.string())).to_pylist()
    assert [json.loads(t) for t in texts] == values


def test_json_objects_skip_null_members() -> None:
    a = member("a", pa.array(["1", None, None]))
    b = member('b"', pa.array(['"x"', "true", None]))
    assert json_objects([a, b], 3, empty=None).to_pylist() == [
        '{"a":1,"b\\"":"x"}',
        '{"b\\"":true}',
        None,
    ]
    assert json_objects([a, b], 3, empty="{}").to_pylist()[2] == "{}"


@pytest.mark.parametrize(
    ("fmt", "values", "dtype"),
    [
        ("csv", ["no", "YES", " true "], "bool"),
        ("csv", ["0", "1"], "number"),
        ("csv", ["2024-01-01", ""], "date"),
        ("csv", ["", "  "], None),
        ("jsonl", ["true", "false"], "string"),
        ("jsonl", ["2024-01-01"], "date"),
        ("parquet", ["2024-01-01"], "string"),
    ],
)
def test_infer_from_text(fmt: str, values: list[str], dtype: str | None) -> None:
    assert infer(pa.array(values), fmt)[0] == dtype


def test_infer_looks_past_the_first_thousand_rows() -> None:
    values = ["1"] * 1500 + ["x"]
    assert infer(pa.array(values), "csv")[0] == "string"
