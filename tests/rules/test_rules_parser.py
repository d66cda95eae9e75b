"""Tokenizer, parser and printer of the target-rule language."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError, RuleError
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
from orchestrator.rules.parser import parse, tokenize
from orchestrator.rules.printer import to_text

a, b, c = FieldRef("a"), FieldRef("b"), FieldRef("c")


def test_rule_error_is_an_input_error() -> None:
    assert issubclass(RuleError, InputError)


# -- tokens and literals ---------------------------------------------------------------------


def test_tokens_carry_kind_text_value_and_position() -> None:
    tokens = tokenize("x >= 1e3 and 'it''s'")
    assert [(t.kind, t.text, t.pos) for t in tokens] == [
        ("name", "x", 0),
        ("op", ">=", 2),
        ("number", "1e3", 5),
        ("keyword", "and", 9),
        ("string", "'it'", 13),
        ("string", "'s'", 17),
        ("end", "", 20),
    ]
    assert tokens[2].value == 1000.0


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("0.5", 0.5), ("1e3", 1000.0), ("2.5E-2", 0.025), ("007", 7)],
)
def test_numbers(text: str, value: float) -> None:
    node = parse(text)
    assert node == NumberLit(value)
    assert isinstance(node, NumberLit)
    assert type(node.value) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"ES"', "ES"),
        ("'ES'", "ES"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        (r'"a\\b"', "a\\b"),
        (r'"tab\there\nnew\rline"', "tab\there\nnew\rline"),
        ('"single \' inside"', "single ' inside"),
        ("''", ""),
        ('"ünïcode ✓"', "ünïcode ✓"),
    ],
)
def test_strings_and_escapes(text: str, value: str) -> None:
    assert parse(text) == StringLit(value)


def test_keywords_and_names() -> None:
    assert parse("true") == BoolLit(True)
    assert parse("false") == BoolLit(False)
    assert parse("null") == NullLit()
    assert parse("_field_2") == FieldRef("_field_2")
    assert parse("True") == FieldRef("True")  # keywords are lowercase only


def test_positions_point_at_literals_and_operators() -> None:
    node = parse("monetary >= 50 and not email_opt_out")
    assert isinstance(node, And) and node.pos == 15
    cmp, neg = node.left, node.right
    assert isinstance(cmp, Compare) and cmp.pos == 9
    assert cmp.left.pos == 0 and cmp.right.pos == 12
    assert isinstance(neg, Not) and neg.pos == 19 and neg.operand.pos == 23
    in_node = parse("  x not in [1, -2]")
    assert isinstance(in_node, InList)
    assert (in_node.pos, in_node.operand.pos, in_node.options.pos) == (4, 2, 11)
    assert [item.pos for item in in_node.options.items] == [12, 15]


def test_equality_ignores_positions() -> None:
    assert parse("a and b") == parse("  a  and\n b ")
    assert hash(parse("a == 1")) == hash(parse("a==1"))


# -- structure and precedence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a or b and c", Or(a, And(b, c))),
        ("a and b or c", Or(And(a, b), c)),
        ("a or b or c", Or(Or(a, b), c)),
        ("not a and b", And(Not(a), b)),
        ("not not a", Not(Not(a))),
        ("not a == 1", Not(Compare("==", a, NumberLit(1)))),
        ("a + b * c", Arith("+", a, Arith("*", b, c))),
        ("a - b - c", Arith("-", Arith("-", a, b), c)),
        ("a / b * c", Arith("*", Arith("/", a, b), c)),
        ("-a * b", Arith("*", Neg(a), b)),
        ("a - -b", Arith("-", a, Neg(b))),
        ("--a", Neg(Neg(a))),
        ("-3", Neg(NumberLit(3))),
        ("(a + b) * c", Arith("*", Arith("+", a, b), c)),
        ("a + 1 > b * 2", Compare(">", Arith("+", a, NumberLit(1)), Arith("*", b, NumberLit(2)))),
        ("(a < b) == c", Compare("==", Compare("<", a, b), c)),
        ("a in [1, 2]", InList(a, ListLit((NumberLit(1), NumberLit(2))))),
        ("a in []", InList(a, ListLit(()))),
        ("a in ['x',]", InList(a, ListLit((StringLit("x"),)))),
        ("a not in [-1]", InList(a, ListLit((Neg(NumberLit(1)),)), negated=True)),
        ("not a in ['x']", Not(InList(a, ListLit((StringLit("x"),))))),
        ("a is null", IsNull(a)),
        ("a is not null", IsNull(a, negated=True)),
        ("a + 1 is null and b", And(IsNull(Arith("+", a, NumberLit(1))), b)),
        ("((a))", a),
    ],
)
def test_precedence_and_associativity(text: str, tree: Node) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_every_comparison_operator(op: str) -> None:
    assert parse(f"a {op} b") == Compare(op, a, b)  # type: ignore[arg-type]


def test_examples_from_the_brief_parse() -> None:
    parse('lifecycle_stage in ["active", "at_risk"] and monetary >= 50 and not email_opt_out')
    parse("days_to_birthday == 0 and email_opt_in")
    parse(
        "signup_date >= \"2026-01-01\" and (frequency > 2 or country != 'ES')"
        " and churn_risk is not null"
    )


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("monetary >= $5", "unexpected character '$'", 12),
        ("a = 1", "unexpected character '=' (use '==' to compare)", 2),
        ("a && b", "unexpected character '&' (use 'and')", 2),
        ("a in [1, 2", "expected ']'", 10),
        ("a in [1 2]", "expected ']'", 8),
        ("a in [1,", "unexpected end of rule", 8),
        ("monetary >=", "unexpected end of rule", 11),
        ("(a or b", "expected ')'", 7),
        ("a and (b or c))", "unexpected ')'", 14),
        ("a b", "unexpected 'b'", 2),
        ("a AND b", "unexpected 'AND' (keywords are lowercase: 'and')", 2),
        ("", "empty rule", 0),
        ("   ", "empty rule", 0),
        ("a in 'x'", "expected '[' after 'in'", 5),
        ("a not in x", "expected '[' after 'not in'", 9),
        ("a not 3", "expected 'in' after 'not'", 6),
        ("a is 3", "expected 'null' after 'is'", 5),
        ("a is not 3", "expected 'null' after 'is not'", 9),
        ("a < b < c", "comparisons cannot be chained; join them with 'and'", 6),
        ("a == b in [1]", "comparisons cannot be chained; join them with 'and'", 7),
        ("a is null is null", "comparisons cannot be chained; join them with 'and'", 10),
        ("a == 'open", "unterminated string", 5),
        ('a == "x\\q"', "unknown escape '\\q' in string", 7),
        ("a > 1e999", "number 1e999 is out of range", 4),
        ("a > 1.", "unexpected character '.'", 5),
        ("a == not b", "unexpected 'not'", 5),
        ("[1, 2]", "unexpected '['", 0),
        ("a in [1] + 2", "unexpected '+'", 9),
    ],
)
def test_parse_errors_name_the_problem_and_its_position(
    text: str, message: str, position: int
) -> None:
    with pytest.raises(RuleError) as caught:
        parse(text)
    assert caught.value.reason == message
    assert caught.value.position == position
    assert caught.value.rule == text
    quoted = f" in rule {text!r}" if text else ""
    assert str(caught.value) == f"{message} at position {position}{quoted}"


def test_huge_integer_is_out_of_range_not_a_crash() -> None:
    with pytest.raises(RuleError, match="out of range"):
        parse("a > " + "9" * 5000)


# -- printer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a   or(b and c)", "a or b and c"),
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b or c)", "a or (b or c)"),
        ("(a or b) or c", "a or b or c"),
        ("not (a and b)", "not (a and b)"),
        ("(not a) == b", "(not a) == b"),
        ("(a == b) == c", "(a == b) == c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("-(a + b)", "-(a + b)"),
        ("- -a", "--a"),
        ("a in ['x', \"y\"]", 'a in ["x", "y"]'),
        ("a not in [ -1 , 2.50 ]", "a not in [-1, 2.5]"),
        ("(a + 1) is not null", "a + 1 is not null"),
        ("(a is null) == true", "(a is null) == true"),
        ("a == 'it\\'s \"quoted\"'", 'a == "it\'s \\"quoted\\""'),
        ("a == 1e3", "a == 1000.0"),
        ("a == 1e-7", "a == 1e-07"),
        ("a == null", "a == null"),
    ],
)
def test_printer_writes_canonical_text(text: str, canonical: str) -> None:
    tree = parse(text)
    assert to_text(tree) == canonical
    assert parse(canonical) == tree


def test_printer_escapes_control_characters_and_round_trips() -> None:
    tree = StringLit('line\nbreak\ttab\rret \\ "q" \x00 \x7f')
    assert parse(to_text(tree)) == tree


def test_printer_refuses_names_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        to_text(FieldRef("and"))
    with pytest.raises(ValueError, match="cannot be written"):
        to_text(FieldRef("first name"))


@pytest.mark.parametrize("value", [-1, -0.0, float("inf"), float("nan"), 10**400])
def test_number_literals_are_finite_and_not_negative(value: float) -> None:
    with pytest.raises(ValueError):
        NumberLit(value)


def test_number_literal_refuses_bools() -> None:
    with pytest.raises(TypeError):
        NumberLit(True)


def test_a_long_or_chain_works_and_deep_nesting_is_refused_cleanly() -> None:
    """500 `or` terms evaluate; 200 nested parentheses, `not`s or minus signs give one clean
    error naming the limit, never a RecursionError."""
    import numpy as np

    from orchestrator.rules import Rule
    from orchestrator.rules.columns import column_from_values

    chain = " or ".join(f"a == {i}" for i in range(500))
    rule = Rule.compile(chain, {"a": "number"})
    values = rule.evaluate({"a": column_from_values("number", [3.0, 700.0, None])}, 3)
    assert np.asarray(values).tolist() == [True, False, False]
    for deep in ("(" * 200 + "a > 1" + ")" * 200, "not " * 200 + "a > 1", "-" * 300 + "a > 1"):
        with pytest.raises(RuleError, match="nests more than 60 levels"):
            Rule.compile(deep, {"a": "number"})
    with pytest.raises(RuleError, match="rules are limited to 20,000"):
        Rule.compile("a > 1 or " * 3000 + "a > 2", {"a": "number"})
