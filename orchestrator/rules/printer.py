"""Print a syntax tree as canonical rule text that parses back to an equal tree.

Parentheses appear only where precedence or left-associativity needs them; strings are always
double-quoted; floats print with ``repr`` so they read back exactly.

>>> from orchestrator.rules.parser import parse
>>> to_text(parse("(a == 1)  and ((b or not c))"))
'a == 1 and (b or not c)'
>>> to_text(parse("x - (y - z) * -w in ['es', \\"it\\"]"))
'x - (y - z) * -w in ["es", "it"]'
"""

from __future__ import annotations

from typing import assert_never

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
)
from orchestrator.rules.parser import KEYWORDS, NAME_PATTERN

# Binding strength, loosest first; a child weaker than its slot needs parentheses.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _ATOM = range(8)

_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"})


def to_text(node: Node) -> str:
    """Return the canonical text of ``node``.

    >>> to_text(Neg(NumberLit(0.5)))
    '-0.5'
    """
    return _text(node)[0]


def quote(value: str) -> str:
    """Quote a string the way rules write it.

    >>> quote('say "hi"')
    '"say \\\\"hi\\\\""'
    """
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def _wrap(node: Node, slot: int) -> str:
    text, strength = _text(node)
    return f"({text})" if strength < slot else text


def _text(node: Node) -> tuple[str, int]:
    """Return the text of ``node`` and how strongly it binds."""
    match node:
        case BoolLit(value=value):
            return ("true" if value else "false"), _ATOM
        case NumberLit(value=value):
            return (str(value) if isinstance(value, int) else repr(value)), _ATOM
        case StringLit(value=value):
            return quote(value), _ATOM
        case NullLit():
            return "null", _ATOM
        case FieldRef(name=name):
            if not NAME_PATTERN.fullmatch(name) or name in KEYWORDS:
                raise ValueError(f"{name!r} cannot be written as a field name")
            return name, _ATOM
        case ListLit(items=items):
            return "[" + ", ".join(_wrap(item, _ADD) for item in items) + "]", _ATOM
        case Or(left=left, right=right):
            return f"{_wrap(left, _OR)} or {_wrap(right, _AND)}", _OR
        case And(left=left, right=right):
            return f"{_wrap(left, _AND)} and {_wrap(right, _NOT)}", _AND
        case Not(operand=operand):
            return f"not {_wrap(operand, _NOT)}", _NOT
        case Compare(op=op, left=left, right=right):
            return f"{_wrap(left, _ADD)} {op} {_wrap(right, _ADD)}", _CMP
        case InList(operand=operand, options=options, negated=negated):
            keyword = "not in" if negated else "in"
            return f"{_wrap(operand, _ADD)} {keyword} {_text(options)[0]}", _CMP
        case IsNull(operand=operand, negated=negated):
            keyword = "is not null" if negated else "is null"
            return f"{_wrap(operand, _ADD)} {keyword}", _CMP
        case Arith(op=op, left=left, right=right):
            level = _ADD if op in ("+", "-") else _MUL
            return f"{_wrap(left, level)} {op} {_wrap(right, level + 1)}", level
        case Neg(operand=operand):
            return f"-{_wrap(operand, _NEG)}", _NEG
        case _:
            assert_never(node)
