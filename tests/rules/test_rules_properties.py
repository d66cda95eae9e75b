"""Hypothesis properties: printing round-trips, and vectorized evaluation matches the reference."""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import RuleError
from orchestrator.rules.ast import (
    ARITH_OPS,
    COMPARE_OPS,
    And,
    Arith,
    BoolLit,
    Compare,
    FieldRef,
    InList,
    IsNull,
    ListLit,
    Neg,
    Node,
    Not,
    NullLit,
    NumberLit,
    Or,
    StringLit,
    walk,
)
from orchestrator.rules.check import check, infer_type
from orchestrator.rules.columns import Column, StringColumn, column_from_values
from orchestrator.rules.compile import compile_rule, evaluate_row
from orchestrator.rules.parser import parse
from orchestrator.rules.printer import to_text

SCHEMA = {
    "b1": "bool",
    "b2": "bool",
    "n1": "number",
    "n2": "number",
    "s1": "string",
    "s2": "string",
    "d1": "date",
    "d2": "date",
}


def _fields(kind: str) -> st.SearchStrategy[Node]:
    return st.sampled_from([FieldRef(name) for name, k in SCHEMA.items() if k == kind])


# -- any tree, typed or not --------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=0, max_value=10**20),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(abs),
)
any_leaf: st.SearchStrategy[Node] = st.one_of(
    st.builds(BoolLit, st.booleans()),
    st.builds(NumberLit, numbers),
    st.builds(StringLit, st.text(max_size=8)),
    st.just(NullLit()),
    st.sampled_from([FieldRef(name) for name in [*SCHEMA, "x", "_y2", "Zeta"]]),
)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(Compare, st.sampled_from(COMPARE_OPS), children, children),
        st.builds(
            InList,
            children,
            st.builds(ListLit, st.lists(children, max_size=3).map(tuple)),
            st.booleans(),
        ),
        st.builds(IsNull, children, st.booleans()),
        st.builds(And, children, children),
        st.builds(Or, children, children),
        st.builds(Not, children),
        st.builds(Arith, st.sampled_from(ARITH_OPS), children, children),
        st.builds(Neg, children),
    )


any_tree = st.recursive(any_leaf, _extend, max_leaves=25)


@given(any_tree)
def test_printed_text_parses_back_to_an_equal_tree(tree: Node) -> None:
    text = to_text(tree)
    assert parse(text) == tree
    assert to_text(parse(text)) == text


@given(any_tree)
def test_checking_any_tree_passes_or_raises_a_rule_error_inside_the_text(tree: Node) -> None:
    text = to_text(tree)
    try:
        check(parse(text), SCHEMA, rule=text)
    except RuleError as error:
        assert error.position is not None and 0 <= error.position <= len(text)


_PIECES = [
    "a", "n1", "s1", "and", "or", "not", "in", "is", "null", "true", "false", "==", "!=", "<",
    ">=", "+", "-", "*", "/", "(", ")", "[", "]", ",", "3", "0.5", "1e3", "'x'", '"y', "\\", "$",
]  # fmt: skip


@given(st.one_of(st.text(max_size=30), st.lists(st.sampled_from(_PIECES)).map(" ".join)))
def test_parsing_any_text_returns_a_tree_or_a_rule_error(text: str) -> None:
    try:
        tree = parse(text)
    except RuleError as error:
        assert error.position is not None and 0 <= error.position <= len(text)
        assert error.rule == text
    else:
        assert parse(to_text(tree)) == tree


# -- well-typed rules and random batches -------------------------------------------------------

STRING_VALUES = ["a", "b", "ab", "", "B", "a\x00"]
STRING_LITERALS = [*STRING_VALUES, "zz"]  # "zz" is in no column
DATE_VALUES = [datetime.date(2025, 12, 31), datetime.date(2026, 1, 1), datetime.date(2026, 3, 1)]
DATE_LITERALS = [d.isoformat() for d in DATE_VALUES] + ["1999-01-01", "2030-06-15"]
NUMBER_LITERALS = [0, 1, 2, 3, 0.5, 100, 1e308]
NUMBER_VALUES: list[Any] = [0.0, -0.0, 1.0, -1.0, 2, 3, 0.5, 1e308, -1e308, math.inf, math.nan]


def _number_expr(depth: int) -> st.SearchStrategy[Node]:
    leaf = st.one_of(_fields("number"), st.sampled_from([NumberLit(v) for v in NUMBER_LITERALS]))
    if depth == 0:
        return leaf
    sub = _number_expr(depth - 1)
    return st.one_of(
        leaf, st.builds(Neg, sub), st.builds(Arith, st.sampled_from(ARITH_OPS), sub, sub)
    )


string_literal = st.sampled_from([StringLit(v) for v in STRING_LITERALS])
string_operand = st.one_of(_fields("string"), string_literal)
date_literal = st.sampled_from([StringLit(v) for v in DATE_LITERALS])
number_item: st.SearchStrategy[Node] = st.sampled_from(NUMBER_LITERALS).flatmap(
    lambda v: st.sampled_from([NumberLit(v), Neg(NumberLit(v))])
)


def _items(item: st.SearchStrategy[Node]) -> st.SearchStrategy[ListLit]:
    return st.builds(ListLit, st.lists(item, max_size=4).map(tuple))


def _condition(depth: int) -> st.SearchStrategy[Node]:
    number = _number_expr(min(depth, 2))
    compare_ops = st.sampled_from(COMPARE_OPS)
    simple = st.one_of(
        st.builds(BoolLit, st.booleans()),
        _fields("bool"),
        st.builds(Compare, compare_ops, number, number),
        st.builds(Compare, compare_ops, string_operand, string_operand),
        st.builds(Compare, compare_ops, _fields("date"), st.one_of(_fields("date"), date_literal)),
        st.builds(Compare, compare_ops, date_literal, _fields("date")),
        st.builds(InList, number, _items(number_item), st.booleans()),
        st.builds(InList, string_operand, _items(string_literal), st.booleans()),
        st.builds(InList, _fields("date"), _items(date_literal), st.booleans()),
        st.builds(
            IsNull,
            st.one_of(number, string_operand, _fields("date"), _fields("bool"), st.just(NullLit())),
            st.booleans(),
        ),
    )
    if depth == 0:
        return simple
    sub = _condition(depth - 1)
    return st.one_of(
        simple,
        st.builds(Not, sub),
        st.builds(And, sub, sub),
        st.builds(Or, sub, sub),
        st.builds(Compare, st.sampled_from(["==", "!="]), sub, sub),
        st.builds(InList, sub, _items(st.builds(BoolLit, st.booleans())), st.booleans()),
        st.builds(IsNull, sub, st.booleans()),
    )


# Small trees too: in a deep tree an `and` often hides what a sub-condition got wrong.
well_typed = st.one_of([_condition(depth) for depth in range(4)])

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.sampled_from([True, False, None]),
    "number": st.one_of(
        st.sampled_from([*NUMBER_VALUES, None]),
        st.floats(min_value=-1e6, max_value=1e6),
        st.integers(-5, 5),
    ),
    "string": st.sampled_from([*STRING_VALUES, None]),
    "date": st.one_of(
        st.sampled_from([*DATE_VALUES, None]),
        st.sampled_from(DATE_VALUES).map(datetime.date.isoformat),
    ),
}


def _shuffled(column: StringColumn, order: list[int]) -> StringColumn:
    """The same strings under a permuted (unsorted) category order."""
    categories = tuple(column.categories[i] for i in order)
    new_code = np.empty(len(order) + 1, dtype=np.int32)
    new_code[order] = np.arange(len(order))
    new_code[-1] = -1
    return StringColumn(new_code[column.codes], categories)


def _probes(tree: Node) -> list[Node]:
    """Rules that expose every sub-expression of ``tree``, not just what reaches the root.

    A condition is probed with its negation too, which together pin down true, false and
    unknown; a number, string or date is probed with ``is null``.
    """
    probes: list[Node] = []
    for node in walk(tree):
        if isinstance(node, NullLit | ListLit):
            continue
        if infer_type(node, SCHEMA) == "bool":
            probes += [node, Not(node)]
        else:
            probes.append(IsNull(node))
    return probes


@settings(max_examples=300, deadline=None)
@given(well_typed, st.data())
def test_vectorized_evaluation_matches_row_by_row_reference(
    tree: Node, data: st.DataObject
) -> None:
    n = data.draw(st.integers(min_value=0, max_value=50), label="n")
    values = {
        name: data.draw(st.lists(_VALUES[kind], min_size=n, max_size=n), label=name)
        for name, kind in SCHEMA.items()
    }
    columns: dict[str, Column] = {}
    for name, kind in SCHEMA.items():
        column = column_from_values(kind, values[name])
        if isinstance(column, StringColumn) and data.draw(st.booleans(), label=f"shuffle {name}"):
            order = data.draw(st.permutations(range(len(column.categories))))
            column = _shuffled(column, list(order))
        columns[name] = column
    rows = [{name: values[name][i] for name in SCHEMA} for i in range(n)]

    for rule in _probes(tree):
        compiled = compile_rule(rule, SCHEMA, rule=to_text(rule))  # also proves it type-checks
        vectorized = compiled(columns, n)
        assert vectorized.dtype == np.bool_ and vectorized.shape == (n,)
        expected = [evaluate_row(rule, row) for row in rows]
        assert vectorized.tolist() == expected, to_text(rule)
