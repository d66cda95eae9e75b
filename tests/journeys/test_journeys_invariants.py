"""Journey invariants over random journeys, events and caps, on the pure core (Hypothesis):
steps go out in order, each within its day and deferral, never twice in one entry, never after
the exit; the journey's control customers get only control decisions; re-entry follows its rule;
and slicing the batch changes nothing."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine.hashing import customer_keys, in_global_control
from orchestrator.engine.history import history_from_rows
from orchestrator.engine.journeys import ACTIVE, EXITED, JourneyInput, JourneyState
from orchestrator.engine.partition import PolicySpec, RunSpec, decide_partition, materialize
from orchestrator.plan import Plan
from orchestrator.storage.run_repo import RawBatch

START = date(2026, 11, 2)
N = 60
DAYS = 16
FIELDS = ("status", "entered", "step", "group", "entries")


@st.composite
def journey_plans(draw: st.DrawFn) -> Plan:
    n_steps = draw(st.integers(1, 3))
    days = sorted(
        draw(st.lists(st.integers(0, 6), min_size=n_steps, max_size=n_steps, unique=True))
    )
    journey = {
        "id": "j",
        "entry": {"event": "signup"},
        "exit": {"event": "purchase"},
        "reentry": draw(st.sampled_from(["never", {"after_days": 4}])),
        "control_fraction": draw(st.sampled_from([0.0, 0.3])),
        "cap_exempt": draw(st.booleans()),
        "defer_days": draw(st.integers(0, 2)),
        "priority": 2 if draw(st.booleans()) else None,
        "steps": [
            {
                "day": d,
                "campaign": "welcome",
                "treatment": draw(st.sampled_from([None, "a"])),
                "when_blocked": draw(st.sampled_from(["defer", "skip"])),
            }
            for d in days
        ],
    }
    return Plan.model_validate(
        {
            "settings": {"global_control_fraction": 0.1},
            "caps": [{"scope": "global", "max": draw(st.integers(1, 2)), "per_days": 3}],
            "campaigns": [
                {
                    "id": "welcome",
                    "channel": "email",
                    "target": "false",
                    "measurement_days": draw(st.integers(1, 3)),
                    "treatments": [{"id": "a"}, {"id": "b"}],
                },
                {
                    "id": "promo",
                    "channel": "email",
                    "target": "true",
                    "priority": 1 if draw(st.booleans()) else None,
                    "measurement_days": 2,
                    "treatments": [{"id": "x"}],
                },
            ],
            "journeys": [journey],
        }
    )


def _take(s: JourneyState, lo: int, hi: int) -> JourneyState:
    return JourneyState(*(getattr(s, f)[lo:hi].copy() for f in FIELDS))


def _join(parts: list[JourneyState]) -> JourneyState:
    return JourneyState(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


def play(plan: Plan, signups: np.ndarray, purchases: np.ndarray, cut: int):
    """The core day by day on two slices of the customers; the decision rows and the state
    after each day."""
    ids = [f"u{i:03d}" for i in range(N)]
    log: list[tuple] = []  # DECISION_COLUMNS rows
    state = JourneyState.empty(N)
    after: list[JourneyState] = []
    last_signup = np.full(N, -1, dtype=np.int64)
    last_purchase = np.full(N, -1, dtype=np.int64)
    spec_plan = plan.model_dump(mode="json")
    for t in range(DAYS):
        day = START + timedelta(days=t)
        if t:
            last_signup[signups[t - 1]] = day.toordinal() - 1
            last_purchase[purchases[t - 1]] = day.toordinal() - 1
        spec = RunSpec(day, 3, spec_plan, {}, (), PolicySpec("uniform", {}))
        prepared = materialize(spec)
        parts, today = [], []
        for lo, hi in ((0, cut), (cut, N)):
            if lo == hi:
                continue
            mine = set(ids[lo:hi])
            history = history_from_rows(
                [(r[1], r[0], r[2], r[4], r[5], r[11]) for r in log if r[1] in mine],
                ids[lo:hi],
                day=day,
                campaign_vocab=["welcome", "promo"],
                channel_vocab=["email"],
                measured={"welcome": True, "promo": True},
            )
            inp = JourneyInput(
                [_take(state, lo, hi)], [last_signup[lo:hi].copy()], [last_purchase[lo:hi].copy()]
            )
            result = decide_partition(prepared, RawBatch(ids[lo:hi], {}, {}), history, journeys=inp)
            assert result.decisions.journey_states is not None
            parts.append(result.decisions.journey_states[0])
            today += result.rows
        state = _join(parts)
        after.append(state)
        log += today
    return sorted(log), after


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=journey_plans(), seed=st.integers(0, 10_000), cut=st.integers(0, N))
def test_journey_invariants(plan: Plan, seed: int, cut: int) -> None:
    rng = np.random.default_rng(seed)
    signups = rng.random((DAYS, N)) < 0.08
    purchases = rng.random((DAYS, N)) < 0.05
    log, after = play(plan, signups, purchases, cut)
    assert log == play(plan, signups, purchases, N)[0]  # the slicing does not matter
    journey = plan.journeys[0]
    promo = plan.campaigns[1]  # always eligible: with a better priority it takes every day
    outranked = (
        journey.priority is not None and promo.priority is not None
    ) and promo.priority < journey.priority
    if not outranked:  # (when outranked, steps still go out on days promo is blocked)
        assert any(r[8] == "journey" for r in log)
    offsets = [s.day for s in journey.steps]
    defer = [journey.defer_days if s.when_blocked == "defer" else 0 for s in journey.steps]
    sent: dict[tuple[int, int], list[int]] = {}  # (customer, entered) -> steps
    for r in (r for r in log if r[8] == "journey"):
        i, t = int(r[1][1:]), (date.fromisoformat(r[0]) - START).days
        st_after = after[t]
        entered, k = int(st_after.entered[i]), int(r[14]) - 1
        waited = date.fromisoformat(r[0]).toordinal() - entered - offsets[k]
        assert 0 <= waited <= defer[k], (r, entered)  # on its day, or within its deferral
        assert st_after.status[i] != EXITED  # never after the exit
        assert (r[5] == "control") == (st_after.group[i] == 2)  # the journey's own split
        sent.setdefault((i, entered), []).append(k)
        assert signups[:t, i].any()  # only customers who signed up
    for steps in sent.values():
        assert steps == sorted(set(steps))  # in order, never twice in one entry
    keys = customer_keys([f"u{i:03d}" for i in range(N)], plan.settings.salt)
    held = set(np.flatnonzero(in_global_control(keys, 0.1)).tolist())
    assert not held & {i for i, _ in sent}  # the global control group gets no step
    entries = after[-1].entries
    if journey.reentry == "never":
        assert entries.max(initial=0) <= 1
    # An exit seen while in the journey ends it that day.
    for t in range(1, DAYS):
        was = after[t - 1].status == ACTIVE
        left = was & purchases[t - 1] & (after[t].entered == after[t - 1].entered)
        assert (after[t].status[left] != ACTIVE).all()
