"""Type-check a parsed rule against the fields a plan may use.

A schema maps each field name to one of ``"bool"``, ``"number"``, ``"string"``, ``"date"``. A rule
type-checks when every field exists, every operator gets operands of the types it accepts and the
whole rule is a true/false condition. Problems raise ``RuleError`` pointing at the offending node.

>>> from orchestrator.rules.parser import parse
>>> schema = {"lifecycle_stage": "string", "monetary": "number"}
>>> check(parse("lifecyle_stage == 'active'"), schema, rule="lifecyle_stage == 'active'")
Traceback (most recent call last):
...
orchestrator.errors.RuleError: unknown field 'lifecyle_stage' (did you mean 'lifecycle_stage'?) \
at position 0 in rule "lifecyle_stage == 'active'"
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Mapping
from typing import Literal, TypeAlias, assert_never, cast

from orchestrator.errors import InputError, RuleError
from orchestrator.features import FIELD_TYPES
from orchestrator.rules.ast import (
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
from orchestrator.rules.printer import to_text

# The type of an expression: a field type, or "null" for the bare ``null`` literal.
ExprType: TypeAlias = Literal["bool", "number", "string", "date", "null"]

TYPE_WORDS: dict[str, str] = {
    "bool": "true/false",
    "number": "number",
    "string": "string",
    "date": "date",
    "null": "null",
}

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_iso_date(text: str) -> datetime.date | None:
    """Return the date written ``YYYY-MM-DD`` in ``text``, or None when it is not one.

    >>> parse_iso_date("2026-02-28"), parse_iso_date("2026-02-30"), parse_iso_date("20260228")
    (datetime.date(2026, 2, 28), None, None)
    """
    if not _ISO_DATE.fullmatch(text):
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def fields_used(node: Node) -> set[str]:
    """Return the names of the fields ``node`` reads.

    >>> sorted(fields_used(And(FieldRef("b"), Not(FieldRef("a")))))
    ['a', 'b']
    """
    return {n.name for n in walk(node) if isinstance(n, FieldRef)}


def check(node: Node, schema: Mapping[str, str], *, rule: str) -> None:
    """Raise ``RuleError`` unless ``node`` is a well-typed true/false condition over ``schema``.

    ``rule`` is the source text, quoted in the error message.

    >>> from orchestrator.rules.parser import parse
    >>> check(parse("monetary + 1"), {"monetary": "number"}, rule="monetary + 1")
    Traceback (most recent call last):
    ...
    orchestrator.errors.RuleError: a rule must be a true/false condition, got number \
at position 9 in rule 'monetary + 1'
    """
    kind = infer_type(node, schema, rule=rule)
    if kind != "bool":
        raise RuleError(
            f"a rule must be a true/false condition, got {TYPE_WORDS[kind]}",
            rule=rule,
            position=node.pos,
        )


def infer_type(node: Node, schema: Mapping[str, str], *, rule: str = "") -> ExprType:
    """Return the type of expression ``node``, raising ``RuleError`` where it does not check.

    >>> infer_type(Arith("*", FieldRef("monetary"), NumberLit(2)), {"monetary": "number"})
    'number'
    """
    return _Checker(schema, rule).infer(node)


class _Checker:
    """Infers expression types bottom-up; every method raises at the first problem."""

    def __init__(self, schema: Mapping[str, str], rule: str) -> None:
        self.schema = schema
        self.rule = rule

    def error(self, message: str, node: Node) -> RuleError:
        return RuleError(message, rule=self.rule, position=node.pos)

    def infer(self, node: Node) -> ExprType:
        match node:
            case BoolLit():
                return "bool"
            case NumberLit():
                return "number"
            case StringLit():
                return "string"
            case NullLit():
                return "null"
            case FieldRef(name=name):
                return self.field_type(node, name)
            case ListLit():
                raise self.error("a list can only follow 'in' or 'not in'", node)
            case Neg(operand=operand):
                self.require_number("-", operand)
                return "number"
            case Arith(op=op, left=left, right=right):
                self.require_number(op, left)
                self.require_number(op, right)
                return "number"
            case Not(operand=operand):
                self.require_bool("'not' needs a true/false condition", operand)
                return "bool"
            case And(left=left, right=right) | Or(left=left, right=right):
                keyword = "and" if isinstance(node, And) else "or"
                self.require_bool(f"'{keyword}' needs true/false conditions", left)
                self.require_bool(f"'{keyword}' needs true/false conditions", right)
                return "bool"
            case IsNull(operand=operand):
                self.infer(operand)
                return "bool"
            case Compare():
                self.check_compare(node)
                return "bool"
            case InList():
                self.check_in(node)
                return "bool"
            case _:
                assert_never(node)

    def field_type(self, node: FieldRef, name: str) -> ExprType:
        if name not in self.schema:
            close = difflib.get_close_matches(name, list(self.schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(f"unknown field {name!r}{hint}", node)
        kind = self.schema[name]
        if kind not in FIELD_TYPES:
            raise InputError(
                f"field {name!r} has type {kind!r}; a field type is one of "
                + ", ".join(FIELD_TYPES)
            )
        return cast(ExprType, kind)

    def require_number(self, op: str, operand: Node) -> None:
        kind = self.infer(operand)
        if kind != "number":
            raise self.error(
                f"cannot apply '{op}' to {describe(operand, kind)}; arithmetic needs numbers",
                operand,
            )

    def require_bool(self, message: str, operand: Node) -> None:
        kind = self.infer(operand)
        if kind != "bool":
            raise self.error(f"{message}, got {describe(operand, kind)}", operand)

    def as_date(self, node: Node, kind: ExprType, other: ExprType) -> ExprType:
        """Read a string literal next to a date as a date; leave anything else as it is."""
        if other == "date" and kind == "string" and isinstance(node, StringLit):
            if parse_iso_date(node.value) is None:
                raise self.error(f"{node.value!r} is not a date; write dates as YYYY-MM-DD", node)
            return "date"
        return kind

    def check_compare(self, node: Compare) -> None:
        left_kind = self.infer(node.left)
        right_kind = self.infer(node.right)
        if "null" in (left_kind, right_kind):
            raise self.error("cannot compare with null; use 'is null' or 'is not null'", node)
        left_kind = self.as_date(node.left, left_kind, right_kind)
        right_kind = self.as_date(node.right, right_kind, left_kind)
        if left_kind != right_kind:
            raise self.error(
                f"cannot compare {describe(node.left, left_kind)}"
                f" with {describe(node.right, right_kind)}",
                node,
            )
        if left_kind == "bool" and node.op not in ("==", "!="):
            raise self.error(
                f"cannot order true/false values with '{node.op}'; use '==' or '!='", node
            )

    def check_in(self, node: InList) -> None:
        kind = self.infer(node.operand)
        if kind == "null":
            raise self.error("cannot look for null in a list; use 'is null'", node)
        items = node.options.items
        item_kinds = [self.list_item_type(item) for item in items]
        for item, item_kind in zip(items[1:], item_kinds[1:], strict=True):
            if item_kind != item_kinds[0]:
                raise self.error(
                    f"a list cannot mix {TYPE_WORDS[item_kinds[0]]}"
                    f" and {TYPE_WORDS[item_kind]} values",
                    item,
                )
        for item, item_kind in zip(items, item_kinds, strict=True):
            item_kind = self.as_date(item, item_kind, kind)
            if item_kind != kind:
                raise self.error(
                    f"cannot compare {describe(node.operand, kind)}"
                    f" with {describe(item, item_kind)}",
                    item,
                )

    def list_item_type(self, item: Node) -> ExprType:
        if isinstance(item, NullLit):
            raise self.error("a list cannot contain null; use 'is null'", item)
        if not _is_constant(item):
            raise self.error('list items must be plain values such as 3, "ES" or true', item)
        return self.infer(item)


def _is_constant(node: Node) -> bool:
    if isinstance(node, Neg):
        return _is_constant(node.operand)
    return isinstance(node, BoolLit | NumberLit | StringLit)


def describe(node: Node, kind: ExprType) -> str:
    """Name an expression in an error message, such as ``string field 'country'``.

    >>> describe(FieldRef("country"), "string"), describe(NumberLit(3), "number")
    ("string field 'country'", 'number 3')
    """
    word = TYPE_WORDS[kind]
    match node:
        case FieldRef(name=name):
            return f"{word} field {name!r}"
        case StringLit(value=value):
            return f"string {value!r}"
        case BoolLit() | NullLit():
            return to_text(node)
        case NumberLit() | Neg(operand=NumberLit()):
            return f"number {to_text(node)}"
    try:
        return f"{word} expression '{to_text(node)}'"
    except ValueError:  # a hand-built tree with a field name that cannot be written
        return f"{word} expression"
