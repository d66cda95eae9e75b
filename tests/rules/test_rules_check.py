"""Type-checking target rules against a field schema."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError, RuleError
from orchestrator.rules.ast import And, Compare, FieldRef, ListLit, NumberLit
from orchestrator.rules.check import check, fields_used, infer_type
from orchestrator.rules.parser import parse

SCHEMA = {
    "lifecycle_stage": "string",
    "country": "string",
    "monetary": "number",
    "frequency": "number",
    "churn_risk": "number",
    "days_to_birthday": "number",
    "email_opt_in": "bool",
    "email_opt_out": "bool",
    "signup_date": "date",
    "birth_date": "date",
}


def check_text(text: str) -> None:
    check(parse(text), SCHEMA, rule=text)


@pytest.mark.parametrize(
    "text",
    [
        'lifecycle_stage in ["active", "at_risk"] and monetary >= 50 and not email_opt_out',
        "days_to_birthday == 0 and email_opt_in",
        "signup_date >= \"2026-01-01\" and (frequency > 2 or country != 'ES')"
        " and churn_risk is not null",
        "monetary / (frequency + 1) * -2 < churn_risk - 0.5",
        "email_opt_in == (not email_opt_out) or email_opt_in != true",
        "(monetary > 1) == (frequency > 1)",
        "country < lifecycle_stage and 'a' <= 'b'",
        "signup_date < birth_date and '2026-01-01' > signup_date",
        "signup_date in ['2026-01-01', '2026-02-01'] and signup_date not in []",
        "monetary in [1, -2.5, 3] and email_opt_in in [true] and country not in ['ES', 'PT']",
        "null is null and monetary + 1 is not null and (monetary > 1) is null",
        "true",
        "email_opt_in",
    ],
)
def test_well_typed_rules_pass(text: str) -> None:
    check_text(text)


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        (
            "lifecyle_stage == 'active'",
            "unknown field 'lifecyle_stage' (did you mean 'lifecycle_stage'?)",
            0,
        ),
        ("email_opt_in and xyzzy", "unknown field 'xyzzy'", 17),
        ("country == 3", "cannot compare string field 'country' with number 3", 8),
        ("3 == country", "cannot compare number 3 with string field 'country'", 2),
        ("monetary >= '50'", "cannot compare number field 'monetary' with string '50'", 9),
        (
            "monetary == -1 or country == true",
            "cannot compare string field 'country' with true",
            26,
        ),
        (
            "monetary > signup_date",
            "cannot compare number field 'monetary' with date field 'signup_date'",
            9,
        ),
        (
            "country == signup_date",
            "cannot compare string field 'country' with date field 'signup_date'",
            8,
        ),
        (
            "monetary > (frequency > 1)",
            "cannot compare number field 'monetary' with true/false expression 'frequency > 1'",
            9,
        ),
        ("monetary == null", "cannot compare with null; use 'is null' or 'is not null'", 9),
        (
            "country + 1 > 2",
            "cannot apply '+' to string field 'country'; arithmetic needs numbers",
            0,
        ),
        (
            "monetary * email_opt_in",
            "cannot apply '*' to true/false field 'email_opt_in'; arithmetic needs numbers",
            11,
        ),
        (
            "-signup_date",
            "cannot apply '-' to date field 'signup_date'; arithmetic needs numbers",
            1,
        ),
        ("1 + null", "cannot apply '+' to null; arithmetic needs numbers", 4),
        (
            "email_opt_in < email_opt_out",
            "cannot order true/false values with '<'; use '==' or '!='",
            13,
        ),
        ("country in ['ES', 3]", "a list cannot mix string and number values", 18),
        ("monetary in [1, true]", "a list cannot mix number and true/false values", 16),
        ("monetary in [1, 2, 'x']", "a list cannot mix number and string values", 19),
        ("country in [1]", "cannot compare string field 'country' with number 1", 12),
        ("country in [monetary]", 'list items must be plain values such as 3, "ES" or true', 12),
        ("country in ['ES', null]", "a list cannot contain null; use 'is null'", 18),
        ("null in [1]", "cannot look for null in a list; use 'is null'", 5),
        (
            "signup_date >= '2026-13-01'",
            "'2026-13-01' is not a date; write dates as YYYY-MM-DD",
            15,
        ),
        ("'01/02/2026' < signup_date", "'01/02/2026' is not a date; write dates as YYYY-MM-DD", 0),
        (
            "signup_date in ['2026-01-01', '2026-1-2']",
            "'2026-1-2' is not a date; write dates as YYYY-MM-DD",
            30,
        ),
        ("monetary", "a rule must be a true/false condition, got number", 0),
        ("monetary + 1", "a rule must be a true/false condition, got number", 9),
        ("country", "a rule must be a true/false condition, got string", 0),
        ("signup_date", "a rule must be a true/false condition, got date", 0),
        ("null", "a rule must be a true/false condition, got null", 0),
        (
            "monetary and email_opt_in",
            "'and' needs true/false conditions, got number field 'monetary'",
            0,
        ),
        ("email_opt_in or 'yes'", "'or' needs true/false conditions, got string 'yes'", 16),
        ("not country", "'not' needs a true/false condition, got string field 'country'", 4),
    ],
)
def test_type_errors_name_the_problem_and_its_position(
    text: str, message: str, position: int
) -> None:
    with pytest.raises(RuleError) as caught:
        check_text(text)
    assert caught.value.reason == message
    assert caught.value.position == position
    assert caught.value.rule == text


def test_wrong_list_type_error_matches_operand() -> None:
    # A list that does not mix types but does not match the operand names the first item.
    with pytest.raises(RuleError) as caught:
        check_text("monetary in ['a', 'b']")
    assert caught.value.reason == "cannot compare number field 'monetary' with string 'a'"
    assert caught.value.position == 13


def test_a_list_outside_in_is_refused() -> None:
    node = Compare("==", FieldRef("monetary"), ListLit((NumberLit(1),), pos=12))
    with pytest.raises(RuleError, match="a list can only follow 'in' or 'not in'"):
        check(node, SCHEMA, rule="")


def test_unknown_field_type_in_schema_is_an_input_error() -> None:
    with pytest.raises(InputError, match="field 'x' has type 'integer'"):
        check(parse("x > 1"), {"x": "integer"}, rule="x > 1")


def test_infer_type() -> None:
    assert infer_type(parse("monetary * 2"), SCHEMA) == "number"
    assert infer_type(parse("country"), SCHEMA) == "string"
    assert infer_type(parse("monetary > 2"), SCHEMA) == "bool"
    assert infer_type(parse("null"), SCHEMA) == "null"


def test_fields_used() -> None:
    node = parse("a > 1 and (b in [1] or not c is null) and a + d / e < 3 and 'x' == 'y'")
    assert fields_used(node) == {"a", "b", "c", "d", "e"}
    assert fields_used(And(FieldRef("z"), FieldRef("z"))) == {"z"}
    assert fields_used(parse("true")) == set()
