"""Fuzzing the plan loader: any text, or the example plan with random edits, is a plan or one
clean PlanError (per problem, one line naming where), never another exception; and the whole
check (rules included) behaves the same."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.plan import check_plan, parse_plan_text
from policies import POLICIES

EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "plan.yaml").read_text()
YAML_BITS = list(":-[]{},'\"#&*!|>%@` \n\t") + ["true", "null", "1e9", "-1", ".inf", "~", "<<"]


@st.composite
def edited_example(draw: st.DrawFn) -> str:
    """The example plan with a few characters or tokens inserted, deleted or replaced."""
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(YAML_BITS) | st.text(max_size=3))
        end = min(len(text), at + draw(st.integers(1, 12)))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[end:]
        else:
            text = text[:at] + piece + text[end:]
    return text


def _documents() -> st.SearchStrategy[str]:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    trees = st.recursive(
        leaves,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
        ),
        max_leaves=12,
    )
    return trees.map(lambda tree: yaml.safe_dump(tree, allow_unicode=True))


def _load_and_check(text: str) -> None:
    try:
        plan, source = parse_plan_text(text, name="fuzz.yaml")
        check_plan(plan, source=source, policy_names=POLICIES)
    except InputError as error:  # PlanError and RuleError: the messages a user reads
        message = str(error)
        assert message.strip(), "an empty error message"
        for line in message.splitlines():
            assert line.startswith("fuzz.yaml"), message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_example())
def test_an_edited_plan_loads_or_says_what_is_wrong(text: str) -> None:
    _load_and_check(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | _documents())
def test_any_text_loads_or_says_what_is_wrong(text: str) -> None:
    _load_and_check(text)
