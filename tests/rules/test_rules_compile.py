"""Semantics of compiled rules: three-valued logic, nulls, strings, dates, missing data."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import numpy as np
import pytest

from orchestrator.errors import InputError, RuleError
from orchestrator.rules import Rule, column_from_values, compile_rule, evaluate_row, parse
from orchestrator.rules.columns import BoolColumn, Column, NumberColumn, StringColumn

SCHEMA = {
    "p": "bool",
    "q": "bool",
    "x": "number",
    "y": "number",
    "s": "string",
    "t": "string",
    "d": "date",
    "e": "date",
}


def run(text: str, data: dict[str, list[Any]]) -> list[bool]:
    """Evaluate ``text`` vectorized and row by row, check they agree, return the result."""
    n = len(next(iter(data.values())))
    columns: dict[str, Column] = {
        name: column_from_values(SCHEMA[name], values) for name, values in data.items()
    }
    vectorized = Rule.compile(text, SCHEMA).evaluate(columns, n)
    assert vectorized.dtype == np.bool_ and vectorized.shape == (n,)
    node = parse(text)
    rows = [{name: values[i] for name, values in data.items()} for i in range(n)]
    assert vectorized.tolist() == [evaluate_row(node, row) for row in rows]
    return vectorized.tolist()


T, F, U = True, False, None
PAIRS = list(itertools.product([T, F, U], repeat=2))


def _kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def test_kleene_truth_tables() -> None:
    data = {"p": [a for a, _ in PAIRS], "q": [b for _, b in PAIRS]}
    ands = [_kleene_and(a, b) for a, b in PAIRS]
    ors = [_kleene_or(a, b) for a, b in PAIRS]
    assert run("p and q", data) == [v is True for v in ands]
    assert run("p or q", data) == [v is True for v in ors]
    # Negating shows which results were unknown rather than false.
    assert run("not (p and q)", data) == [v is False for v in ands]
    assert run("not (p or q)", data) == [v is False for v in ors]
    assert run("not p", data) == [a is False for a, _ in PAIRS]
    assert run("not not p", data) == [a is True for a, _ in PAIRS]


def test_unknown_opt_in_is_not_targeted_either_way() -> None:
    data = {"p": [True, False, None]}
    assert run("p", data) == [True, False, False]
    assert run("not p", data) == [False, True, False]
    assert run("p == true", data) == [True, False, False]
    assert run("p != true", data) == [False, True, False]
    assert run("p is null", data) == [False, False, True]
    assert run("p is not null", data) == [True, True, False]
    assert run("p in [true]", data) == [True, False, False]
    assert run("p in [true, false]", data) == [True, True, False]
    assert run("p not in [false]", data) == [True, False, False]
    assert run("p in []", data) == [False, False, False]


def test_comparisons_and_arithmetic_with_null_are_unknown() -> None:
    data = {"x": [1, None, 3], "y": [None, 2, 3]}
    assert run("x + y > 0", data) == [False, False, True]
    assert run("not (x + y > 0)", data) == [False, False, False]
    assert run("x + y is null", data) == [True, True, False]
    assert run("x == y or true", data) == [True, True, True]
    assert run("x != y", data) == [False, False, False]
    assert run("-x < 0", data) == [True, False, True]


def test_division_by_zero_is_null() -> None:
    data: dict[str, list[Any]] = {"x": [1, 0, -2, 4, None], "y": [0, 0, -0.0, 2, 0]}
    assert run("x / y is null", data) == [True, True, True, False, True]
    assert run("x / y > 0 or x / y <= 0", data) == [False, False, False, True, False]
    assert run("x / y == 2 and x / 0 is null", data) == [False, False, False, True, False]


def test_overflow_is_infinity_not_null() -> None:
    data = {"x": [1e308, 1e308], "y": [10, -1e308]}
    assert run("x * y > 1e308", data) == [True, False]
    assert run("x * y - x * y is null", data) == [True, True]  # inf - inf is NaN: null


def test_number_lists() -> None:
    data = {"x": [1, 2, -3, None, 2.5]}
    assert run("x in [1, -3, 2.5]", data) == [True, False, True, False, True]
    assert run("x not in [1, -3, 2.5]", data) == [False, True, False, False, False]
    assert run("x in []", data) == [False, False, False, False, False]
    assert run("x not in []", data) == [True, True, True, False, True]


def test_strings_use_codes_and_absent_literals_never_match() -> None:
    data = {"s": ["ES", "FR", None, "IT"]}
    assert run("s == 'ES'", data) == [True, False, False, False]
    assert run("s != 'ES'", data) == [False, True, False, True]
    assert run("s == 'PT'", data) == [False, False, False, False]
    assert run("s != 'PT'", data) == [True, True, False, True]
    assert run("'PT' != s", data) == [True, True, False, True]
    assert run("s in ['IT', 'PT', 'ES']", data) == [True, False, False, True]
    assert run("s not in ['IT', 'PT']", data) == [True, True, False, False]
    assert run("s < 'F' or 'H' < s", data) == [True, False, False, True]
    assert run("s >= 'FR'", data) == [False, True, False, True]
    assert run("'a' < 'b' and s is not null", data) == [True, True, False, True]


def test_string_columns_compare_across_different_categories() -> None:
    data = {"s": ["b", "a", None, "c", "z"], "t": ["b", "c", "a", None, "y"]}
    assert run("s == t", data) == [True, False, False, False, False]
    assert run("s != t", data) == [False, True, False, False, True]
    assert run("s < t", data) == [False, True, False, False, False]
    assert run("s >= t", data) == [True, False, False, False, True]


def test_string_columns_with_unsorted_categories() -> None:
    columns: dict[str, Column] = {
        "s": StringColumn(np.array([0, 1, 2, -1]), ("zeta", "alpha", "mid")),
        "t": StringColumn(np.array([1, 0, 0, 0]), ("mid", "alpha")),
    }
    rule = Rule.compile("s > 'beta'", SCHEMA)
    assert rule.evaluate(columns, 4).tolist() == [True, False, True, False]
    # s is [zeta, alpha, mid, null], t is [alpha, mid, mid, mid]
    assert Rule.compile("s < t", SCHEMA).evaluate(columns, 4).tolist() == [F, T, F, F]
    assert Rule.compile("s >= t", SCHEMA).evaluate(columns, 4).tolist() == [T, F, T, F]


def test_dates_compare_with_iso_literals_and_each_other() -> None:
    data = {
        "d": [datetime.date(2026, 1, 1), datetime.date(2025, 12, 31), None, "2026-03-01"],
        "e": [datetime.date(2026, 1, 1), None, datetime.date(2026, 1, 1), "2026-02-01"],
    }
    assert run("d >= '2026-01-01'", data) == [True, False, False, True]
    assert run("'2026-01-01' > d", data) == [False, True, False, False]
    assert run("d == e", data) == [True, False, False, False]
    assert run("d > e", data) == [False, False, False, True]
    assert run("d in ['2025-12-31', '2026-03-01']", data) == [False, True, False, True]
    assert run("d not in ['2025-12-31']", data) == [True, False, False, True]
    assert run("d is null or e is null", data) == [False, True, True, False]


def test_constant_rules_broadcast_to_the_batch() -> None:
    data = {"x": [1, None, 3]}
    assert run("true", data) == [True, True, True]
    assert run("1 > 2 or x > 2", data) == [False, False, True]
    assert run("null is null", data) == [True, True, True]
    assert run("1 / 0 is not null", data) == [False, False, False]
    assert run("-2 in [-2] and 'a' in ['a', 'b'] and '2026-01-01' < '2026-01-02'", data) == [
        True,
        True,
        True,
    ]


def test_empty_batch() -> None:
    assert run("x > 1 and s == 'a'", {"x": [], "s": []}) == []


def test_result_is_a_fresh_array() -> None:
    column = BoolColumn(np.array([True, False]), np.array([True, True]))
    rule = Rule.compile("p", SCHEMA)
    out = rule.evaluate({"p": column}, 2)
    out[:] = False
    assert column.values.tolist() == [True, False]
    assert rule.evaluate({"p": column}, 2).tolist() == [True, False]


def test_a_compiled_rule_runs_on_many_batches() -> None:
    rule = Rule.compile("x > 1", SCHEMA)
    assert rule.evaluate({"x": NumberColumn(np.array([0.0, 2.0]))}, 2).tolist() == [False, True]
    assert rule.evaluate({"x": NumberColumn(np.array([5.0]))}, 1).tolist() == [True]


def test_missing_field_is_an_input_error() -> None:
    rule = Rule.compile("x > 1 and s == 'a'", SCHEMA)
    with pytest.raises(InputError) as caught:
        rule.evaluate({"x": column_from_values("number", [1])}, 1)
    assert str(caught.value) == "rule needs field 's', which the customer data does not have"
    with pytest.raises(InputError) as caught:
        evaluate_row(parse("x > 1 and s == 'a'"), {"x": 1})
    assert str(caught.value) == "rule needs field 's', which the customer data does not have"


def test_wrong_column_type_or_length_is_an_input_error() -> None:
    rule = Rule.compile("x > 1", SCHEMA)
    with pytest.raises(InputError, match="field 'x' should hold number values"):
        rule.evaluate({"x": column_from_values("string", ["1"])}, 1)
    with pytest.raises(InputError, match="field 'x' has 2 values for a batch of 3 customers"):
        rule.evaluate({"x": column_from_values("number", [1, 2])}, 3)


def test_compile_rule_type_checks_first() -> None:
    with pytest.raises(RuleError, match="cannot compare"):
        compile_rule(parse("x == 'a'"), SCHEMA, rule="x == 'a'")
    compiled = compile_rule(parse("x > 1 and p"), SCHEMA)
    assert compiled.fields == {"x", "p"}


def test_evaluate_row_reads_numpy_and_datetime_values() -> None:
    node = parse("x > 1 and d == '2026-01-01' and p")
    row = {"x": np.float32(2), "d": datetime.datetime(2026, 1, 1, 12), "p": np.True_}
    assert evaluate_row(node, row) is True
    assert evaluate_row(node, {**row, "x": float("nan")}) is False
    assert evaluate_row(node, {**row, "d": np.datetime64("2026-01-01")}) is True
    assert evaluate_row(node, {**row, "d": np.datetime64("NaT")}) is False


def test_rule_object() -> None:
    rule = Rule.compile("x>1 and(s=='a' or p)", SCHEMA)
    assert rule.text == "x>1 and(s=='a' or p)"
    assert rule.canonical == 'x > 1 and (s == "a" or p)'
    assert rule.fields == frozenset({"x", "s", "p"})
    assert rule.node == parse(rule.canonical)


def test_rule_compile_reports_parse_and_type_errors_with_the_text() -> None:
    with pytest.raises(RuleError) as caught:
        Rule.compile("x >", SCHEMA)
    assert caught.value.rule == "x >" and caught.value.position == 3
    with pytest.raises(RuleError) as caught:
        Rule.compile("x", SCHEMA)
    assert caught.value.reason == "a rule must be a true/false condition, got number"
