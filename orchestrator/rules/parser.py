"""Read a target rule into its syntax tree: a tokenizer and a recursive-descent parser.

Grammar, loosest binding first (every level is left-associative unless noted)::

    rule     := or_expr END
    or_expr  := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | cmp_expr
    cmp_expr := add_expr [ CMP add_expr | ["not"] "in" list | "is" ["not"] "null" ]  (no chains)
    add_expr := mul_expr (("+" | "-") mul_expr)*
    mul_expr := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | STRING | "true" | "false" | "null" | NAME | "(" or_expr ")"
    list     := "[" [add_expr ("," add_expr)* [","]] "]"

User text is only ever read here, never evaluated.

>>> parse("monetary >= 50 and not email_opt_out")  # doctest: +NORMALIZE_WHITESPACE
And(left=Compare(op='>=', left=FieldRef(name='monetary', pos=0),
                 right=NumberLit(value=50, pos=12), pos=9),
    right=Not(operand=FieldRef(name='email_opt_out', pos=23), pos=19), pos=15)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from orchestrator.errors import RuleError
from orchestrator.rules.ast import (
    COMPARE_OPS,
    And,
    Arith,
    ArithOp,
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

KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})

TokenKind: TypeAlias = Literal["number", "string", "name", "keyword", "op", "end"]

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_HINTS = {
    "=": " (use '==' to compare)",
    "&": " (use 'and')",
    "|": " (use 'or')",
    "!": " (use 'not' or '!=')",
}


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: its kind, source text, parsed value and 0-based offset."""

    kind: TokenKind
    text: str
    pos: int
    value: int | float | str | None = None


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token at ``len(text)``.

    >>> [t.text for t in tokenize("a>=1.5 and b in ['x']")]
    ['a', '>=', '1.5', 'and', 'b', 'in', '[', "'x'", ']', '']
    """
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        space = _SPACE.match(text, i)
        if space:
            i = space.end()
            continue
        char = text[i]
        if char in "\"'":
            token = _read_string(text, i)
        elif number := _NUMBER.match(text, i):
            token = Token("number", number.group(), i, _number_value(number.group(), text, i))
        elif name := NAME_PATTERN.match(text, i):
            word = name.group()
            token = Token("keyword" if word in KEYWORDS else "name", word, i, word)
        else:
            op = next((op for op in _OPS if text.startswith(op, i)), None)
            if op is None:
                hint = _HINTS.get(char, "")
                raise RuleError(f"unexpected character {char!r}{hint}", rule=text, position=i)
            token = Token("op", op, i, op)
        tokens.append(token)
        i += len(token.text)
    tokens.append(Token("end", "", len(text)))
    return tokens


def _number_value(literal: str, text: str, pos: int) -> int | float:
    try:
        value: int | float = float(literal) if any(c in literal for c in ".eE") else int(literal)
        finite = math.isfinite(float(value))
    except (OverflowError, ValueError):  # ValueError: more digits than int() will read
        finite = False
    if not finite:
        raise RuleError(f"number {literal} is out of range", rule=text, position=pos)
    return value


def _read_string(text: str, start: int) -> Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return Token("string", text[start : i + 1], start, "".join(chars))
        if char == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in _ESCAPES:
                raise RuleError(f"unknown escape '\\{escaped}' in string", rule=text, position=i)
            chars.append(_ESCAPES[escaped])
            i += 2
            continue
        chars.append(char)
        i += 1
    raise RuleError("unterminated string", rule=text, position=start)


MAX_DEPTH = 60  # nesting levels of a rule; and/or chains of any length are not nested
MAX_RULE_CHARS = 20_000


LONG_CHAIN = 32


def _balanced(kind: Any, items: list[Node], ops: list[int]) -> Node:
    """``a or b or c ...``: folded left (``(a or b) or c``), or, past ``LONG_CHAIN`` terms, as
    a balanced tree (and/or are associative, null logic included), so a chain of hundreds of
    terms stays a few levels deep for the checker and the compiler."""
    if len(items) <= LONG_CHAIN:
        node = items[0]
        for pos, item in zip(ops, items[1:], strict=True):
            node = kind(node, item, pos=pos)
        return node
    return _halves(kind, items, ops)


def _halves(kind: Any, items: list[Node], ops: list[int]) -> Node:
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    return kind(
        _halves(kind, items[:mid], ops[: mid - 1]),
        _halves(kind, items[mid:], ops[mid:]),
        pos=ops[mid - 1],
    )


def parse(text: str) -> Node:
    """Parse one target rule; raise ``RuleError`` with the position of the first problem.

    >>> parse("a < b < c")
    Traceback (most recent call last):
    ...
    orchestrator.errors.RuleError: comparisons cannot be chained; join them with 'and' \
at position 6 in rule 'a < b < c'
    """
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"the rule is {len(text):,} characters long; rules are limited to {MAX_RULE_CHARS:,}",
            rule=text[:60] + "...",
            position=None,
        )
    return _Parser(text).parse_rule()


class _Parser:
    """Recursive descent over the token list; one method per grammar level."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    # -- token helpers ---------------------------------------------------------------------

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, kind: TokenKind, text: str | None = None) -> bool:
        token = self.current
        return token.kind == kind and (text is None or token.text == text)

    def accept(self, kind: TokenKind, text: str) -> Token | None:
        return self.advance() if self.at(kind, text) else None

    def expect(self, kind: TokenKind, text: str, context: str = "") -> Token:
        if self.at(kind, text):
            return self.advance()
        raise self.error(f"expected '{text}'{context}", self.current)

    def error(self, message: str, token: Token) -> RuleError:
        return RuleError(message, rule=self.text, position=token.pos)

    def unexpected(self, token: Token) -> RuleError:
        if token.kind == "end":
            return self.error("unexpected end of rule", token)
        hint = ""
        if token.kind == "name" and token.text.lower() in KEYWORDS:
            hint = f" (keywords are lowercase: '{token.text.lower()}')"
        return self.error(f"unexpected {token.text!r}{hint}", token)

    # -- grammar -------------------------------------------------------------------------

    def parse_rule(self) -> Node:
        if self.at("end"):
            raise RuleError("empty rule", rule=self.text, position=0)
        node = self.or_expr()
        if not self.at("end"):
            raise self.unexpected(self.current)
        return node

    def or_expr(self) -> Node:
        items, ops = [self.and_expr()], []
        while token := self.accept("keyword", "or"):
            ops.append(token.pos)
            items.append(self.and_expr())
        return _balanced(Or, items, ops)

    def and_expr(self) -> Node:
        items, ops = [self.not_expr()], []
        while token := self.accept("keyword", "and"):
            ops.append(token.pos)
            items.append(self.not_expr())
        return _balanced(And, items, ops)

    def nest(self, token: Token) -> None:
        """Count one more level of nesting (parentheses, not, unary minus); refuse too many."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                f"the rule nests more than {MAX_DEPTH} levels (parentheses, not, minus)", token
            )

    def not_expr(self) -> Node:
        if token := self.accept("keyword", "not"):
            self.nest(token)
            node = Not(self.not_expr(), pos=token.pos)
            self.depth -= 1
            return node
        return self.cmp_expr()

    def cmp_expr(self) -> Node:
        left = self.add_expr()
        token = self.current
        node: Node
        if token.kind == "op" and token.text in COMPARE_OPS:
            self.advance()
            node = Compare(cast(CompareOp, token.text), left, self.add_expr(), pos=token.pos)
        elif self.accept("keyword", "in"):
            node = InList(left, self.list_literal("in"), pos=token.pos)
        elif self.accept("keyword", "not"):
            self.expect("keyword", "in", " after 'not'")
            node = InList(left, self.list_literal("not in"), negated=True, pos=token.pos)
        elif self.accept("keyword", "is"):
            negated = self.accept("keyword", "not") is not None
            self.expect("keyword", "null", " after 'is not'" if negated else " after 'is'")
            node = IsNull(left, negated=negated, pos=token.pos)
        else:
            return left
        follow = self.current
        if (follow.kind == "op" and follow.text in COMPARE_OPS) or (
            follow.kind == "keyword" and follow.text in ("in", "is")
        ):
            raise self.error("comparisons cannot be chained; join them with 'and'", follow)
        return node

    def list_literal(self, after: str) -> ListLit:
        start = self.expect("op", "[", f" after '{after}'")
        items: list[Node] = []
        while not self.at("op", "]"):
            items.append(self.add_expr())
            if not self.accept("op", ","):
                break
        self.expect("op", "]")
        return ListLit(tuple(items), pos=start.pos)

    def add_expr(self) -> Node:
        node = self.mul_expr()
        while self.at("op", "+") or self.at("op", "-"):
            token = self.advance()
            node = Arith(cast(ArithOp, token.text), node, self.mul_expr(), pos=token.pos)
        return node

    def mul_expr(self) -> Node:
        node = self.unary()
        while self.at("op", "*") or self.at("op", "/"):
            token = self.advance()
            node = Arith(cast(ArithOp, token.text), node, self.unary(), pos=token.pos)
        return node

    def unary(self) -> Node:
        if token := self.accept("op", "-"):
            self.nest(token)
            node = Neg(self.unary(), pos=token.pos)
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        token = self.current
        if token.kind == "number":
            self.advance()
            return NumberLit(cast(int | float, token.value), pos=token.pos)
        if token.kind == "string":
            self.advance()
            return StringLit(cast(str, token.value), pos=token.pos)
        if token.kind == "name":
            self.advance()
            return FieldRef(token.text, pos=token.pos)
        if token.kind == "keyword" and token.text in ("true", "false"):
            self.advance()
            return BoolLit(token.text == "true", pos=token.pos)
        if token.kind == "keyword" and token.text == "null":
            self.advance()
            return NullLit(pos=token.pos)
        if self.accept("op", "("):
            self.nest(token)
            node = self.or_expr()
            self.expect("op", ")")
            self.depth -= 1
            return node
        raise self.unexpected(token)
