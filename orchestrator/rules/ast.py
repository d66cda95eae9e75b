"""Syntax tree of a target rule: small frozen dataclasses, one per construct.

Every node carries ``pos``, the 0-based character offset in the rule text it was parsed from, so
errors can point at the offending place. Operators (``and``, ``==``, ``+``, ``in``, ``is``, ``not``,
unary ``-``) carry the offset of their operator token, which identifies a node uniquely even in
``a + b + c``; literals, field references and lists carry the offset of their first character.
``pos`` takes no part in equality, so ``parse(to_text(tree)) == tree`` holds for any tree.

>>> Compare("==", FieldRef("country", pos=0), StringLit("ES", pos=11), pos=8) == Compare(
...     "==", FieldRef("country"), StringLit("ES")
... )
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

CompareOp: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">="]
ArithOp: TypeAlias = Literal["+", "-", "*", "/"]

COMPARE_OPS: tuple[CompareOp, ...] = ("==", "!=", "<", "<=", ">", ">=")
ARITH_OPS: tuple[ArithOp, ...] = ("+", "-", "*", "/")


@dataclass(frozen=True, slots=True)
class BoolLit:
    """``true`` or ``false``."""

    value: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class NumberLit:
    """A non-negative finite number; ``-3`` is ``Neg(NumberLit(3))``, as the parser reads it."""

    value: int | float
    pos: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"a number literal needs an int or a float, got {value!r}")
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        # Anything else would print as text that parses back to a different tree.
        if not math.isfinite(as_float) or math.copysign(1.0, as_float) < 0:
            raise ValueError(f"a number literal must be finite and not negative, got {value!r}")


@dataclass(frozen=True, slots=True)
class StringLit:
    """A quoted string; compared with a date field it must read ``YYYY-MM-DD``."""

    value: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class NullLit:
    """``null``; only meaningful as the operand of ``is null`` / ``is not null``."""

    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A customer field by name, such as ``monetary``."""

    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ListLit:
    """The bracketed list on the right of ``in`` / ``not in``."""

    items: tuple[Node, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` for one of ``== != < <= > >=``; comparisons do not chain."""

    op: CompareOp
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class InList:
    """``operand in [...]``, or ``operand not in [...]`` when ``negated``."""

    operand: Node
    options: ListLit
    negated: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class IsNull:
    """``operand is null``, or ``operand is not null`` when ``negated``; never unknown."""

    operand: Node
    negated: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    """``left and right``."""

    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Or:
    """``left or right``."""

    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Arith:
    """``left op right`` for one of ``+ - * /``."""

    op: ArithOp
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus: ``-operand``."""

    operand: Node
    pos: int = field(default=0, compare=False)


Node: TypeAlias = (
    BoolLit
    | NumberLit
    | StringLit
    | NullLit
    | FieldRef
    | ListLit
    | Compare
    | InList
    | IsNull
    | And
    | Or
    | Not
    | Arith
    | Neg
)


def children(node: Node) -> tuple[Node, ...]:
    """Return the direct sub-nodes of ``node``, left to right.

    >>> children(And(FieldRef("a"), Not(FieldRef("b"))))
    (FieldRef(name='a', pos=0), Not(operand=FieldRef(name='b', pos=0), pos=0))
    """
    match node:
        case Compare(left=left, right=right) | And(left, right) | Or(left, right):
            return (left, right)
        case Arith(left=left, right=right):
            return (left, right)
        case InList(operand=operand, options=options):
            return (operand, options)
        case IsNull(operand=operand) | Not(operand=operand) | Neg(operand=operand):
            return (operand,)
        case ListLit(items=items):
            return items
        case _:
            return ()


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and every node below it, depth first, left to right.

    >>> [type(n).__name__ for n in walk(Neg(NumberLit(3)))]
    ['Neg', 'NumberLit']
    """
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))
