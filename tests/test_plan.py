"""The plan file: parsing, field and whole-plan checks with file:line locations, YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import PlanError
from orchestrator.plan import (
    CampaignSpec,
    CapSpec,
    ExclusionSpec,
    Plan,
    TreatmentSpec,
    check_plan,
    load_plan_file,
    parse_plan_text,
    plan_to_yaml,
)
from orchestrator.plan_diff import diff_plans
from policies import POLICIES

SMALL = Path(__file__).parent / "data" / "plan_small.yaml"
TEXT = SMALL.read_text()


def _problem(text: str) -> str:
    plan, source = parse_plan_text(text, name="plan.yaml")
    with pytest.raises(PlanError) as exc:
        check_plan(plan, source, policy_names=POLICIES)
    return str(exc.value)


def _field_problem(text: str) -> str:
    with pytest.raises(PlanError) as exc:
        parse_plan_text(text, name="plan.yaml")
    return str(exc.value)


def test_the_small_plan_is_valid() -> None:
    plan, source = load_plan_file(SMALL)
    check_plan(plan, source, policy_names=POLICIES)
    assert [c.id for c in plan.campaigns] == ["birthday", "discount", "winback"]
    assert plan.campaign("discount").treatments[1].payload == {"template": "spring-10"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "control_fraction: 0.15",
            "control_fraction: 1.5",
            "plan.yaml:42: campaigns[2] (winback)"
            ".control_fraction: Input should be less than 1 (got 1.5)",
        ),
        (
            "{scope: global, max: 3",
            "{scope: global, max: -1",
            "plan.yaml:13: caps[0].max: Input should be greater than or equal to 1 (got -1)",
        ),
        ("start: 2026-03-01", "start: 2026-02-30", "plan.yaml:28: campaigns[1] (discount).start"),
        ("end: 2026-05-31", "end: 2026-01-31", "end 2026-01-31 is before start 2026-03-01"),
        (
            "    measurement_days: 14",
            "    measurment_days: 14",
            "campaigns[2] (winback).measurment_days: unknown field",
        ),
        ("timezone: Europe/Madrid", "timezone: Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
        ("{id: win15, cost: 0.05", "{id: win15, cost: -0.05", "treatments[0] (win15).cost"),
        (
            "name: We miss you",
            "name: We miss you\n    name: again",
            "plan.yaml:39: not valid YAML: duplicate key 'name'",
        ),
        ("campaigns:", "campaigns: [", "plan.yaml:"),
        ("channel: sms\n    target", "channel: SMS!\n    target", "campaigns[2] (winback).channel"),
        (
            "  - {scope: channel, channel: email, max: 2, per_days: 7}",
            "  - {scope: channel, max: 2, per_days: 7}",
            "caps[1]: a channel cap needs `channel`",
        ),
    ],
)
def test_field_problems_name_file_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in TEXT
    assert expected in _field_problem(TEXT.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  - id: winback",
            "  - id: discount",
            "campaigns[2] (discount).id: campaign id 'discount' is used twice",
        ),
        (
            "{if_received: winback, exclude: discount",
            "{if_received: winback, exclude: winback",
            "exclusions[0]: campaign 'winback' cannot exclude itself",
        ),
        (
            "{if_received: winback",
            "{if_received: winbak",
            "no campaign with id 'winbak' in the plan (did you mean 'winback'?)",
        ),
        (
            '    target: \'lifecycle_stage == "lapsed"',
            '    target: \'lifecyle_stage == "lapsed"',
            "plan.yaml:40: campaigns[2] (winback).target: unknown field 'lifecyle_stage' (did you "
            "mean 'lifecycle_stage'?) at position 0",
        ),
        ("p_alive > 0.2", 'p_alive > "high"', "cannot compare number field 'p_alive' with string"),
        (
            "    measurement_days: 14",
            "    priority: 1\n    measurement_days: 14",
            "priority 1 is already given to 'birthday'",
        ),
        ("policy: {name: uniform}", "policy: {name: magic}", "unknown policy 'magic'; choose one"),
        (
            "  country: string",
            "  country: string\n  monetary: number",
            "'monetary' is a built-in field",
        ),
        (
            "  - {scope: global, max: 3, per_days: 7}",
            "  - {scope: global, max: 3, per_days: 7}\n  - {scope: global, max: 5, per_days: 7}",
            "a global cap over 7 days is already set",
        ),
    ],
)
def test_whole_plan_problems(old: str, new: str, expected: str) -> None:
    assert old in TEXT
    assert expected in _problem(TEXT.replace(old, new, 1))


def test_every_problem_is_listed_and_the_message_is_one_line() -> None:
    text = TEXT.replace("exclude: discount", "exclude: nope").replace(
        "policy: {name: uniform}", "policy: {name: magic}"
    )
    plan, source = parse_plan_text(text, name="plan.yaml")
    with pytest.raises(PlanError) as exc:
        check_plan(plan, source, policy_names=POLICIES)
    assert len(exc.value.problems) == 2  # type: ignore[attr-defined]
    assert "\n" not in str(exc.value) and "1 more problem" in str(exc.value)


def test_declared_attribute_must_agree_with_imported_data() -> None:
    plan, source = parse_plan_text(TEXT, name="plan.yaml")
    with pytest.raises(PlanError, match="declared string but the imported data holds number"):
        check_plan(plan, source, known_attributes={"country": "number"}, policy_names=POLICIES)


def test_missing_file_and_non_mapping() -> None:
    with pytest.raises(PlanError, match="no such file"):
        load_plan_file("/nonexistent/plan.yaml")
    with pytest.raises(PlanError, match="a plan is a mapping"):
        parse_plan_text("- 1\n- 2\n")


def test_yaml_round_trip_of_the_small_plan() -> None:
    plan, _ = load_plan_file(SMALL)
    again, _ = parse_plan_text(plan_to_yaml(plan))
    assert again == plan
    assert diff_plans(plan, again) == []


slug = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
treatment = st.builds(
    TreatmentSpec,
    id=slug,
    cost=st.floats(0, 10, allow_nan=False),
    features=st.dictionaries(slug, st.floats(-1, 1, allow_nan=False) | slug, max_size=3),
)
campaign = st.builds(
    CampaignSpec,
    id=slug,
    name=st.text(min_size=1, max_size=20),
    channel=st.sampled_from(["email", "sms", "push"]),
    status=st.sampled_from(["active", "paused"]),
    priority=st.none() | st.integers(1, 50),
    measurement_days=st.integers(1, 60),
    cooldown_days=st.integers(0, 60),
    control_fraction=st.floats(0, 0.9, allow_nan=False),
    treatments=st.lists(treatment, min_size=1, max_size=3, unique_by=lambda t: t.id),
)
plans = st.builds(
    Plan,
    campaigns=st.lists(campaign, max_size=5, unique_by=lambda c: c.id),
    caps=st.lists(
        st.builds(
            CapSpec, scope=st.just("global"), max=st.integers(1, 9), per_days=st.integers(1, 30)
        ),
        max_size=3,
        unique_by=lambda c: c.key,
    ),
    exclusions=st.lists(
        st.builds(ExclusionSpec, if_received=slug, exclude=slug, days=st.integers(1, 90)),
        max_size=2,
        unique_by=lambda x: (x.if_received, x.exclude),
    ),
)


def _canonical(plan: Plan) -> Plan:
    """Order of campaigns, caps and exclusions carries no meaning."""
    return plan.model_copy(
        update={
            "campaigns": sorted(plan.campaigns, key=lambda c: c.id),
            "caps": sorted(plan.caps, key=lambda c: c.key),
            "exclusions": sorted(plan.exclusions, key=lambda x: (x.if_received, x.exclude)),
        }
    )


@settings(max_examples=60, deadline=None)
@given(plans)
def test_any_plan_survives_yaml_round_trip(plan: Plan) -> None:
    again, _ = parse_plan_text(plan_to_yaml(plan))
    assert again == plan


@settings(max_examples=60, deadline=None)
@given(plans, plans)
def test_diff_is_empty_exactly_when_plans_are_equal(a: Plan, b: Plan) -> None:
    assert (diff_plans(a, b) == []) == (_canonical(a) == _canonical(b))
    assert diff_plans(a, a) == []


def test_a_yaml_alias_bomb_is_refused_quickly_and_in_bounded_memory() -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(PlanError, match="expands to more than 200,000 values through YAML"):
        parse_plan_text("\n".join(levels), name="bomb.yaml")


def test_an_empty_or_oversized_plan_is_refused(tmp_path) -> None:
    for text in ("", "# nothing\n", "{}\n"):
        with pytest.raises(PlanError, match="the plan is empty"):
            parse_plan_text(text, name="empty.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 6_000_000 + "\n")
    with pytest.raises(PlanError, match="a plan is limited to 5 MB"):
        load_plan_file(big)


def test_an_infinite_or_nan_number_in_the_plan_is_refused() -> None:
    text = """
campaigns:
  - id: a
    channel: email
    treatments: [{id: t, cost: .inf}]
"""
    with pytest.raises(PlanError, match="cost"):
        parse_plan_text(text, name="inf.yaml")
    with pytest.raises(PlanError, match="global_control_fraction"):
        parse_plan_text(
            "settings: {global_control_fraction: .nan}\n" + text.replace(".inf", "1"),
            name="nan.yaml",
        )


def test_plan_text_fits_the_columns_that_store_it() -> None:
    """A value the plan accepts is one every backend can store (SQLite would keep a 40-character
    channel that PostgreSQL refuses with a DataError): the plan's lengths are the columns'."""
    from orchestrator.plan import CampaignSpec, CapSpec, ExclusionSpec, TreatmentSpec
    from orchestrator.storage.models import Campaign, Exclusion, FrequencyCap, Treatment

    pairs = [
        (CampaignSpec, Campaign, ["id", "name", "channel"]),
        (TreatmentSpec, Treatment, ["id"]),
        (CapSpec, FrequencyCap, ["channel"]),
        (ExclusionSpec, Exclusion, ["if_received", "exclude"]),
    ]
    for spec, table, fields in pairs:
        for name in fields:
            column = table.__table__.c[name].type.length  # type: ignore[attr-defined]
            info = spec.model_fields[name]
            limit = next(
                (m.max_length for m in info.metadata if getattr(m, "max_length", None)), None
            )
            pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
            if limit is None and pattern is not None:  # a SLUG: 64 characters at most
                limit = 64
            assert limit is not None and limit <= column, (spec.__name__, name, limit, column)
