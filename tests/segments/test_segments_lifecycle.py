"""Lifecycle stages honour their thresholds: the vectorized core against the rules written out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.features import LIFECYCLE_STAGES
from orchestrator.segments.config import LifecycleConfig
from orchestrator.segments.lifecycle import lifecycle_stages
from orchestrator.segments.summary import summarize

AS_OF = 2_000


def reference_stage(days: list[int], as_of: int, c: LifecycleConfig) -> str:
    """The stage rules of docs/segments.md, one customer at a time."""
    if not days:
        return "prospect"
    days = sorted(set(days))
    if as_of - days[0] <= c.new_days:
        return "new"
    comebacks = [
        d for prev, d in zip(days, days[1:], strict=False) if d - prev > c.reactivation_gap_days
    ]
    if comebacks and as_of - comebacks[-1] <= c.reactivated_days:
        return "reactivated"
    recency = as_of - days[-1]
    if recency <= c.active_days:
        return "active"
    if recency <= c.lapsed_days:
        return "at_risk"
    return "lapsed"


def stages_of(customers: list[list[int]], config: LifecycleConfig) -> list[str]:
    owner = np.array([i for i, days in enumerate(customers) for _ in days], dtype=np.int64)
    day = np.array([d for days in customers for d in days], dtype=np.int64)
    history = summarize(
        owner,
        day,
        np.ones(len(day)),
        np.zeros(len(day), dtype=bool),
        n=len(customers),
        as_of=AS_OF,
        gap_days=config.reactivation_gap_days,
    )
    codes = lifecycle_stages(history.recency, history.tenure, history.comeback, config)
    return [LIFECYCLE_STAGES[c] for c in codes]


@st.composite
def configs(draw: st.DrawFn) -> LifecycleConfig:
    active = draw(st.integers(0, 200))
    return LifecycleConfig(
        new_days=draw(st.integers(0, 90)),
        active_days=active,
        lapsed_days=draw(st.integers(active, 400)),
        reactivation_gap_days=draw(st.integers(1, 300)),
        reactivated_days=draw(st.integers(0, 90)),
    )


purchase_days = st.lists(st.integers(AS_OF - 900, AS_OF), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(purchase_days, min_size=1, max_size=12), configs())
def test_stages_follow_the_documented_rules(
    customers: list[list[int]], config: LifecycleConfig
) -> None:
    assert stages_of(customers, config) == [reference_stage(d, AS_OF, config) for d in customers]


@settings(max_examples=300, deadline=None)
@given(configs(), st.data())
def test_stages_at_and_around_each_threshold(config: LifecycleConfig, data: st.DataObject) -> None:
    """Purchases exactly at, one day inside and one day outside every threshold."""
    edges = [
        config.new_days,
        config.active_days,
        config.lapsed_days,
        config.reactivated_days,
    ]
    since = data.draw(st.sampled_from([e + d for e in edges for d in (-1, 0, 1) if e + d >= 0]))
    gap = data.draw(
        st.sampled_from([config.reactivation_gap_days, config.reactivation_gap_days + 1])
    )
    last = AS_OF - since
    customers = [[last], [last - gap, last], [last - 2 * gap, last - gap, last]]
    want = [reference_stage(d, AS_OF, config) for d in customers]
    assert stages_of(customers, config) == want
    # And the reference itself reads the thresholds as inclusive.
    if since <= config.new_days:
        assert want[0] == "new"
    elif gap > config.reactivation_gap_days and since <= config.reactivated_days:
        assert want[1] == "reactivated"
    elif since <= config.active_days and gap + since > config.new_days:
        assert want[1] == "active"


def test_default_boundaries() -> None:
    c = LifecycleConfig()
    old = AS_OF - 400
    assert stages_of([[]], c) == ["prospect"]
    assert stages_of([[AS_OF - 30], [AS_OF - 31]], c) == ["new", "active"]
    assert stages_of([[old, AS_OF - 90], [old, AS_OF - 91]], c) == ["active", "at_risk"]
    assert stages_of([[old, AS_OF - 180], [old, AS_OF - 181]], c) == ["at_risk", "lapsed"]
    # A comeback after more than 180 days is 'reactivated' for 30 days, then 'active'.
    assert stages_of([[old, old + 181]], LifecycleConfig()) == ["lapsed"]
    came_back = [[AS_OF - 300, AS_OF - 30], [AS_OF - 300, AS_OF - 31], [AS_OF - 210, AS_OF - 30]]
    assert stages_of(came_back, c) == ["reactivated", "active", "active"]
    # Purchases after the comeback keep the customer 'reactivated' until the comeback is old.
    assert stages_of([[AS_OF - 300, AS_OF - 20, AS_OF - 5]], c) == ["reactivated"]


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValidationError, match="must not exceed"):
        LifecycleConfig(active_days=200, lapsed_days=100)
    with pytest.raises(ValidationError):
        LifecycleConfig(new_days=-1)
