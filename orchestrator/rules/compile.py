"""Compile a checked rule into a vectorized evaluation over a batch of customers.

Logic is SQL-like and three-valued: a comparison or arithmetic involving null is *unknown*,
``not unknown`` is unknown, ``false and unknown`` is false, ``true or unknown`` is true, division
by zero is null, ``x in [...]`` with null ``x`` is unknown, and ``is null`` / ``is not null`` are
always known. A customer is selected only where the rule is known to be true.

Conditions evaluate to a pair of masks ``(true, known)`` with ``true`` implying ``known``; numbers
to float64 arrays (NaN is null), strings to category codes, dates to datetime64[D]. Literals stay
numpy scalars and broadcast, so no stage loops over rows in Python.

``evaluate_row`` is the plain-Python reference the vectorized evaluation is tested against.

>>> from orchestrator.rules.columns import column_from_values
>>> from orchestrator.rules.parser import parse
>>> schema = {"email_opt_in": "bool", "monetary": "number"}
>>> rule = compile_rule(parse("email_opt_in or monetary / 0 > 1"), schema)
>>> cols = {
...     "email_opt_in": column_from_values("bool", [True, None, False]),
...     "monetary": column_from_values("number", [1.0, 2.0, 3.0]),
... }
>>> rule(cols, 3).tolist()
[True, False, False]
"""

from __future__ import annotations

import datetime
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar, assert_never, cast

import numpy as np
from numpy.typing import NDArray

from orchestrator.errors import InputError
from orchestrator.rules.ast import (
    And,
    Arith,
    BoolLit,
    Compare,
    CompareOp,
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
)
from orchestrator.rules.check import ExprType, check, fields_used, parse_iso_date
from orchestrator.rules.columns import (
    BoolColumn,
    Column,
    Columns,
    DateColumn,
    NumberColumn,
    StringColumn,
)

Mask: TypeAlias = NDArray[np.bool_] | np.bool_  # a scalar holds for every row
Tri: TypeAlias = tuple[Mask, Mask]  # (true, known) of a condition; true implies known
Num: TypeAlias = NDArray[np.float64] | np.float64  # NaN is null
Str: TypeAlias = StringColumn | str
Date: TypeAlias = NDArray[np.datetime64] | np.datetime64  # NaT is null

ColumnT = TypeVar("ColumnT", NumberColumn, BoolColumn, StringColumn, DateColumn)

_TRUE = np.True_
_FALSE = np.False_

_COMPARE: dict[CompareOp, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED: dict[CompareOp, CompareOp] = {
    "==": "==",
    "!=": "!=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}


class _Batch:
    """The columns of one batch, fetched by name and checked against the schema once each."""

    def __init__(self, columns: Columns, n: int) -> None:
        self.columns = columns
        self.n = n
        self.seen: set[str] = set()

    def get(self, name: str, cls: type[ColumnT]) -> ColumnT:
        try:
            column: Column = self.columns[name]
        except KeyError:
            raise InputError(
                f"rule needs field {name!r}, which the customer data does not have"
            ) from None
        if name not in self.seen:
            if not isinstance(column, cls):
                raise InputError(
                    f"field {name!r} should hold {cls.dtype} values,"
                    f" but the customer data has a {column.dtype} column"
                )
            if len(column) != self.n:
                raise InputError(
                    f"field {name!r} has {len(column)} values for a batch of {self.n} customers"
                )
            self.seen.add(name)
        return cast(ColumnT, column)


class CompiledRule:
    """A checked rule ready to evaluate over batches; call it with ``(columns, n)``."""

    def __init__(self, node: Node, evaluate: Callable[[_Batch], Tri]) -> None:
        self.node = node
        self.fields = frozenset(fields_used(node))
        self._evaluate = evaluate

    def __call__(self, columns: Columns, n: int) -> NDArray[np.bool_]:
        """Return a bool array of shape ``(n,)``, True where the rule is known to be true."""
        with np.errstate(all="ignore"):  # overflow gives inf, 0/0 gives NaN (null): both meant
            true, _known = self._evaluate(_Batch(columns, n))
        out = np.empty(n, dtype=np.bool_)
        out[...] = true
        return out


def compile_rule(node: Node, schema: Mapping[str, str], *, rule: str = "") -> CompiledRule:
    """Type-check ``node`` against ``schema`` and compile it; ``rule`` is quoted in errors."""
    check(node, schema, rule=rule)
    return CompiledRule(node, _Compiler(schema).condition(node))


def _static_type(node: Node, schema: Mapping[str, str]) -> ExprType:
    match node:
        case FieldRef(name=name):
            return cast(ExprType, schema[name])
        case NumberLit() | Arith() | Neg():
            return "number"
        case StringLit():
            return "string"
        case NullLit():
            return "null"
        case _:
            return "bool"


def _known_number(x: Num) -> Mask:
    return ~np.isnan(x)


def _known_date(x: Date) -> Mask:
    return ~np.isnat(x)


def _as_date(value: str) -> np.datetime64:
    return np.datetime64(parse_iso_date(value), "D")


class _Compiler:
    """Turns each node into a closure over a ``_Batch``; one method per result type."""

    def __init__(self, schema: Mapping[str, str]) -> None:
        self.schema = schema

    def type_of(self, node: Node) -> ExprType:
        return _static_type(node, self.schema)

    # -- conditions ------------------------------------------------------------------------

    def condition(self, node: Node) -> Callable[[_Batch], Tri]:
        match node:
            case BoolLit(value=value):
                constant: Tri = (np.bool_(value), _TRUE)
                return lambda batch: constant
            case FieldRef(name=name):

                def bool_field(batch: _Batch) -> Tri:
                    column = batch.get(name, BoolColumn)
                    return column.values & column.known, column.known

                return bool_field
            case Not(operand=operand):
                inner = self.condition(operand)

                def negate(batch: _Batch) -> Tri:
                    true, known = inner(batch)
                    return known & ~true, known

                return negate
            case And(left=left, right=right):
                return self.conjunction(self.condition(left), self.condition(right))
            case Or(left=left, right=right):
                return self.disjunction(self.condition(left), self.condition(right))
            case IsNull(operand=operand, negated=negated):
                known_of = self.known(operand)

                def is_null(batch: _Batch) -> Tri:
                    known = known_of(batch)
                    return (known if negated else ~known), _TRUE

                return is_null
            case Compare():
                return self.compare(node)
            case InList():
                return self.in_list(node)
            case NumberLit() | StringLit() | NullLit() | ListLit() | Arith() | Neg():
                raise TypeError(f"{type(node).__name__} is not a condition")
            case _:
                assert_never(node)

    @staticmethod
    def conjunction(
        left: Callable[[_Batch], Tri], right: Callable[[_Batch], Tri]
    ) -> Callable[[_Batch], Tri]:
        def both(batch: _Batch) -> Tri:
            true_a, known_a = left(batch)
            true_b, known_b = right(batch)
            # Known when both sides are known or either is known false.
            known = (known_a & known_b) | (known_a & ~true_a) | (known_b & ~true_b)
            return true_a & true_b, known

        return both

    @staticmethod
    def disjunction(
        left: Callable[[_Batch], Tri], right: Callable[[_Batch], Tri]
    ) -> Callable[[_Batch], Tri]:
        def either(batch: _Batch) -> Tri:
            true_a, known_a = left(batch)
            true_b, known_b = right(batch)
            true = true_a | true_b
            # Known when both sides are known or either is known true.
            return true, (known_a & known_b) | true

        return either

    def known(self, node: Node) -> Callable[[_Batch], Mask]:
        """Compile the mask of rows where ``node`` is not null."""
        kind = self.type_of(node)
        if kind == "number":
            number = self.number(node)
            return lambda batch: _known_number(number(batch))
        if kind == "date":
            date = self.date(node)
            return lambda batch: _known_date(date(batch))
        if kind == "string":
            string = self.string(node)

            def known_string(batch: _Batch) -> Mask:
                value = string(batch)
                return value.codes >= 0 if isinstance(value, StringColumn) else _TRUE

            return known_string
        if kind == "null":
            return lambda batch: _FALSE
        condition = self.condition(node)
        return lambda batch: condition(batch)[1]

    def compare(self, node: Compare) -> Callable[[_Batch], Tri]:
        op = node.op
        left_type, right_type = self.type_of(node.left), self.type_of(node.right)
        if "date" in (left_type, right_type):
            return self.compare_dates(op, self.date(node.left), self.date(node.right))
        if left_type == "number":
            return self.compare_numbers(op, self.number(node.left), self.number(node.right))
        if left_type == "string":
            return self.compare_strings(op, self.string(node.left), self.string(node.right))
        return self.compare_conditions(op, self.condition(node.left), self.condition(node.right))

    @staticmethod
    def compare_numbers(
        op: CompareOp, left: Callable[[_Batch], Num], right: Callable[[_Batch], Num]
    ) -> Callable[[_Batch], Tri]:
        compare = _COMPARE[op]

        def numbers(batch: _Batch) -> Tri:
            a, b = left(batch), right(batch)
            known = _known_number(a) & _known_number(b)
            return compare(a, b) & known, known

        return numbers

    @staticmethod
    def compare_dates(
        op: CompareOp, left: Callable[[_Batch], Date], right: Callable[[_Batch], Date]
    ) -> Callable[[_Batch], Tri]:
        compare = _COMPARE[op]

        def dates(batch: _Batch) -> Tri:
            a, b = left(batch), right(batch)
            known = _known_date(a) & _known_date(b)
            return compare(a, b) & known, known

        return dates

    @staticmethod
    def compare_conditions(
        op: CompareOp, left: Callable[[_Batch], Tri], right: Callable[[_Batch], Tri]
    ) -> Callable[[_Batch], Tri]:
        compare = _COMPARE[op]  # the checker allows only == and != here

        def conditions(batch: _Batch) -> Tri:
            (true_a, known_a), (true_b, known_b) = left(batch), right(batch)
            known = known_a & known_b
            return compare(true_a, true_b) & known, known

        return conditions

    @staticmethod
    def compare_strings(
        op: CompareOp, left: Callable[[_Batch], Str], right: Callable[[_Batch], Str]
    ) -> Callable[[_Batch], Tri]:
        def strings(batch: _Batch) -> Tri:
            a, b = left(batch), right(batch)
            if isinstance(a, str) and isinstance(b, str):
                return np.bool_(_COMPARE[op](a, b)), _TRUE
            if isinstance(a, str):
                return _column_vs_literal(_FLIPPED[op], cast(StringColumn, b), a)
            if isinstance(b, str):
                return _column_vs_literal(op, a, b)
            return _column_vs_column(op, a, b)

        return strings

    def in_list(self, node: InList) -> Callable[[_Batch], Tri]:
        kind = self.type_of(node.operand)
        items = [_constant(item) for item in node.options.items]
        membership: Callable[[_Batch], Tri]
        if kind == "number":
            wanted = np.array(items, dtype=np.float64)
            number = self.number(node.operand)

            def number_in(batch: _Batch) -> Tri:
                value = number(batch)
                known = _known_number(value)
                return np.isin(value, wanted) & known, known

            membership = number_in
        elif kind == "date":
            days = np.array([_as_date(cast(str, item)) for item in items], dtype="datetime64[D]")
            date = self.date(node.operand)

            def date_in(batch: _Batch) -> Tri:
                value = date(batch)
                known = _known_date(value)
                return np.isin(value, days) & known, known

            membership = date_in
        elif kind == "string":
            string = self.string(node.operand)
            strings = cast(list[str], items)

            def string_in(batch: _Batch) -> Tri:
                value = string(batch)
                if isinstance(value, str):
                    return np.bool_(value in strings), _TRUE
                lookup = np.zeros(len(value.categories) + 1, dtype=np.bool_)  # last slot: null
                codes = [value.code_of(s) for s in strings]
                lookup[[code for code in codes if code >= 0]] = True
                return lookup[value.codes], value.codes >= 0

            membership = string_in
        else:
            condition = self.condition(node.operand)
            has_true, has_false = True in items, False in items

            def bool_in(batch: _Batch) -> Tri:
                true, known = condition(batch)
                hit = (true if has_true else _FALSE) | ((known & ~true) if has_false else _FALSE)
                return hit, known

            membership = bool_in
        if not node.negated:
            return membership

        def not_in(batch: _Batch) -> Tri:
            true, known = membership(batch)
            return known & ~true, known

        return not_in

    # -- values ----------------------------------------------------------------------------

    def number(self, node: Node) -> Callable[[_Batch], Num]:
        match node:
            case NumberLit(value=value):
                constant = np.float64(value)
                return lambda batch: constant
            case FieldRef(name=name):
                return lambda batch: batch.get(name, NumberColumn).values
            case Neg(operand=operand):
                inner = self.number(operand)
                return lambda batch: -inner(batch)
            case Arith(op=op, left=left, right=right):
                a, b = self.number(left), self.number(right)
                if op == "+":
                    return lambda batch: a(batch) + b(batch)
                if op == "-":
                    return lambda batch: a(batch) - b(batch)
                if op == "*":
                    return lambda batch: a(batch) * b(batch)

                def divide(batch: _Batch) -> Num:
                    numerator, denominator = a(batch), b(batch)
                    return np.where(denominator == 0, np.nan, numerator / denominator)

                return divide
        raise TypeError(f"{type(node).__name__} is not a number")

    def string(self, node: Node) -> Callable[[_Batch], Str]:
        match node:
            case StringLit(value=value):
                return lambda batch: value
            case FieldRef(name=name):
                return lambda batch: batch.get(name, StringColumn)
        raise TypeError(f"{type(node).__name__} is not a string")

    def date(self, node: Node) -> Callable[[_Batch], Date]:
        match node:
            case StringLit(value=value):
                constant = _as_date(value)
                return lambda batch: constant
            case FieldRef(name=name):
                return lambda batch: batch.get(name, DateColumn).values
        raise TypeError(f"{type(node).__name__} is not a date")


def _constant(node: Node) -> bool | float | str:
    """Return the value of a list item, which the checker guarantees is a literal."""
    match node:
        case Neg(operand=operand):
            return -cast(float, _constant(operand))
        case NumberLit(value=value):
            return float(value)
        case BoolLit(value=value) | StringLit(value=value):
            return value
    raise TypeError(f"{type(node).__name__} is not a list item")


def _column_vs_literal(op: CompareOp, column: StringColumn, literal: str) -> Tri:
    known = column.codes >= 0
    if op in ("==", "!="):
        code = column.code_of(literal)
        equal = column.codes == code if code >= 0 else _FALSE
        return (equal if op == "==" else known & ~equal), known
    compare = _COMPARE[op]
    # One Python comparison per category, never per row; the last slot serves null codes.
    lookup = np.fromiter(
        (compare(c, literal) for c in column.categories), np.bool_, len(column.categories)
    )
    return np.append(lookup, False)[column.codes], known


def _column_vs_column(op: CompareOp, a: StringColumn, b: StringColumn) -> Tri:
    # Recode both onto their sorted union so that code order is string order.
    union = sorted(set(a.categories) | set(b.categories))
    position = {category: i for i, category in enumerate(union)}

    def recode(column: StringColumn) -> NDArray[np.int32]:
        table = np.array([position[c] for c in column.categories] + [-1], dtype=np.int32)
        return table[column.codes]

    codes_a, codes_b = recode(a), recode(b)
    known = (codes_a >= 0) & (codes_b >= 0)
    return _COMPARE[op](codes_a, codes_b) & known, known


# -- reference evaluation, one row at a time ---------------------------------------------------


def evaluate_row(node: Node, row: Mapping[str, Any]) -> bool:
    """Evaluate ``node`` for one customer from plain Python values (None is null).

    The slow, obvious reference for the vectorized evaluation: True only when the rule is
    known to be true.

    >>> from orchestrator.rules.parser import parse
    >>> evaluate_row(parse("not email_opt_in"), {"email_opt_in": None})
    False
    >>> evaluate_row(parse("a / 0 is null"), {"a": 3})
    True
    """
    return _row_value(node, row) is True


def _row_value(node: Node, row: Mapping[str, Any]) -> Any:
    """Return the value of ``node`` for ``row``; None is null (or unknown, for conditions)."""
    match node:
        case BoolLit(value=value) | StringLit(value=value):
            return value
        case NumberLit(value=value):
            return float(value)
        case NullLit():
            return None
        case FieldRef(name=name):
            if name not in row:
                raise InputError(
                    f"rule needs field {name!r}, which the customer data does not have"
                )
            return _normalize(row[name])
        case ListLit(items=items):
            return [_row_value(item, row) for item in items]
        case Neg(operand=operand):
            value = _row_value(operand, row)
            return None if value is None else -value
        case Arith(op=op, left=left, right=right):
            return _row_arith(op, _row_value(left, row), _row_value(right, row))
        case Not(operand=operand):
            value = _row_value(operand, row)
            return None if value is None else not value
        case And(left=left, right=right):
            a, b = _row_value(left, row), _row_value(right, row)
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        case Or(left=left, right=right):
            a, b = _row_value(left, row), _row_value(right, row)
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        case IsNull(operand=operand, negated=negated):
            return (_row_value(operand, row) is None) != negated
        case Compare(op=op, left=left, right=right):
            a, b = _row_value(left, row), _row_value(right, row)
            if a is None or b is None:
                return None
            a, b = _row_date(a, b), _row_date(b, a)
            return _COMPARE[op](a, b)
        case InList(operand=operand, options=options, negated=negated):
            value = _row_value(operand, row)
            if value is None:
                return None
            found = any(value == _row_date(item, value) for item in _row_value(options, row))
            return found != negated
        case _:
            assert_never(node)


def _normalize(value: Any) -> Any:
    """Bring a row value to the Python type the rule reads it as."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[D]").item()  # a datetime.date, or None for NaT
    return value


def _row_date(value: Any, other: Any) -> Any:
    """Read an ISO string as a date when it meets a date."""
    if isinstance(value, str) and isinstance(other, datetime.date):
        return parse_iso_date(value)
    return value


def _row_arith(op: str, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if op == "+":
        result = a + b
    elif op == "-":
        result = a - b
    elif op == "*":
        result = a * b
    elif b == 0:
        return None
    else:
        result = a / b
    return None if math.isnan(result) else result
