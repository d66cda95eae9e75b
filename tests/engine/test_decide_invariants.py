"""Invariants of the daily-run core over random plans and histories (Hypothesis).

A multi-day simulation feeds each day's decisions back as history, then an independent,
row-by-row check of the whole log verifies: chosen actions were eligible, caps were never
exceeded, priorities won, measurement windows never overlapped, the global control group was
never contacted, and the same seed gives the same decisions.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine.actions import build_actions
from orchestrator.engine.decide import GROUPS, BatchInput, RunSetup, decide_batch
from orchestrator.engine.hashing import Draws, customer_keys, in_global_control
from orchestrator.engine.history import history_from_rows
from orchestrator.plan import Plan
from orchestrator.rules import Rule, column_from_values
from policies import UniformPolicy

START = date(2026, 11, 1)
SCHEMA = {"score": "number"}


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 5))
    channels = ["email", "sms"]
    priorities = draw(st.permutations(range(1, n + 1)))
    campaigns = []
    for i in range(n):
        threshold = draw(st.sampled_from([None, 0.2, 0.5, 0.8]))
        campaigns.append(
            {
                "id": f"c{i}",
                "channel": draw(st.sampled_from(channels)),
                "target": "true" if threshold is None else f"score > {threshold}",
                "priority": priorities[i] if draw(st.booleans()) else None,
                "measured": draw(st.booleans()),
                "measurement_days": draw(st.integers(1, 6)),
                "cooldown_days": draw(st.integers(0, 5)),
                "control_fraction": draw(st.sampled_from([0.0, 0.1, 0.5])),
                "treatments": [{"id": f"t{j}"} for j in range(draw(st.integers(1, 3)))],
            }
        )
    caps = [
        {"scope": "global", "max": draw(st.integers(1, 3)), "per_days": draw(st.integers(1, 7))}
    ]
    if draw(st.booleans()):
        caps.append(
            {"scope": "channel", "channel": "email", "max": 1, "per_days": draw(st.integers(2, 5))}
        )
    exclusions = []
    if n >= 2:
        exclusions.append({"if_received": "c0", "exclude": "c1", "days": draw(st.integers(2, 9))})
    return Plan.model_validate(
        {
            "settings": {
                "global_control_fraction": draw(st.sampled_from([0.0, 0.2])),
                "allow_no_send": draw(st.booleans()),
            },
            "campaigns": campaigns,
            "caps": caps,
            "exclusions": exclusions,
        }
    )


def simulate(plan: Plan, scores: np.ndarray, days: int, seed: int) -> list[tuple]:
    """Run the pure core day after day; return the decision log rows."""
    ids = [f"u{i:03d}" for i in range(len(scores))]
    keys = customer_keys(ids, plan.settings.salt)
    columns = {"score": column_from_values("number", scores.tolist())}
    log: list[tuple] = []
    for offset in range(days):
        day = START + timedelta(days=offset)
        actions = build_actions(plan, day)
        setup = RunSetup(
            day=day,
            actions=actions,
            rules=[Rule.compile(c.target, SCHEMA) for c in actions.campaigns],
            caps=plan.caps,
            exclusions=plan.exclusions,
            global_control_fraction=plan.settings.global_control_fraction,
            policy=UniformPolicy(),
        )
        history = history_from_rows(
            log,
            ids,
            day=day,
            campaign_vocab=[c.id for c in plan.campaigns],
            channel_vocab=["email", "sms"],
            measured={c.id: c.measured for c in plan.campaigns},
        )
        dec = decide_batch(
            setup,
            BatchInput(
                keys,
                columns,
                np.zeros((len(ids), 0)),
                history,
                Draws.for_run(keys, seed=seed, day=day),
            ),
        )
        for i in np.flatnonzero(dec.decided):
            a = int(dec.action[i])
            c = int(dec.campaign[i])
            camp = actions.campaigns[c] if c >= 0 else None
            log.append(
                (
                    ids[i],
                    day,
                    camp.id if camp else None,
                    camp.channel if camp else None,
                    GROUPS[int(dec.group[i])],
                    day + timedelta(days=camp.measurement_days) if camp else None,
                    actions.treatment_ids[a],
                    float(dec.propensity[i]),
                )
            )
    return log


def check_log(plan: Plan, scores: np.ndarray, log: list[tuple]) -> None:
    """Independent, row-by-row check of every invariant over the whole log."""
    ids = [f"u{i:03d}" for i in range(len(scores))]
    gc = in_global_control(
        customer_keys(ids, plan.settings.salt), plan.settings.global_control_fraction
    )
    by_customer: dict[str, list[tuple]] = {}
    for row in log:
        by_customer.setdefault(row[0], []).append(row)
    for i, cid in enumerate(ids):
        rows = sorted(by_customer.get(cid, []), key=lambda r: r[1])
        if gc[i]:
            assert rows == [], "the global control group was contacted"
        days = [r[1] for r in rows]
        assert len(days) == len(set(days)), "two decisions on one day"
        sends = [r for r in rows if r[2] is not None and r[4] == "test"]
        for r in rows:
            day, camp_id = r[1], r[2]
            assert 0 < r[7] <= 1, "propensity out of (0, 1]"
            if camp_id is None:
                continue
            camp = plan.campaign(camp_id)
            assert camp is not None
            assert r[6] in {t.id for t in camp.treatments}
            # eligible: rule, windows, cooldown, exclusions, caps as of that day
            if camp.target != "true":
                assert scores[i] > float(camp.target.split(">")[1]), "rule was false"
            before = [p for p in rows if p[1] < day]
            if camp.measured:
                open_ = [
                    p
                    for p in before
                    if p[2] is not None and plan.campaign(p[2]).measured and p[5] > day
                ]
                assert not open_, "measurement windows overlap"
            prev_sends = [p for p in sends if p[1] < day]
            assert not [
                p for p in prev_sends if p[2] == camp_id and (day - p[1]).days < camp.cooldown_days
            ], "cooldown ignored"
            for x in plan.exclusions:
                if x.exclude == camp_id:
                    assert not [
                        p
                        for p in prev_sends
                        if p[2] == x.if_received and (day - p[1]).days < x.days
                    ], "exclusion ignored"
            # priorities: nothing with a lower number was eligible-and-chosen-able is checked
            # in test_priorities_win; here the reason is recorded consistently.
        for cap in plan.caps:
            for r in sends:
                window = [
                    p
                    for p in sends
                    if 0 <= (r[1] - p[1]).days < cap.per_days
                    and (cap.scope == "global" or p[3] == cap.channel)
                ]
                assert len(window) <= cap.max, f"cap {cap} exceeded"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans(), st.integers(0, 2**31 - 1))
def test_invariants_hold_over_a_simulated_month(plan: Plan, seed: int) -> None:
    scores = np.random.default_rng(seed).random(40)
    log = simulate(plan, scores, days=15, seed=seed)
    check_log(plan, scores, log)
    assert simulate(plan, scores, days=15, seed=seed) == log, "same seed, different decisions"


@settings(max_examples=40, deadline=None)
@given(plans(), st.integers(0, 2**31 - 1))
def test_priorities_win(plan: Plan, seed: int) -> None:
    """On a fresh day, a customer eligible for a prioritized campaign gets the best-ranked one."""
    scores = np.random.default_rng(seed).random(60)
    log = simulate(plan, scores, days=1, seed=seed)
    ids = [f"u{i:03d}" for i in range(len(scores))]
    gc = in_global_control(
        customer_keys(ids, plan.settings.salt), plan.settings.global_control_fraction
    )
    chosen = {r[0]: r[2] for r in log}
    for i, cid in enumerate(ids):
        if gc[i]:
            continue
        ranked = sorted(
            (c.priority, c.id)
            for c in plan.campaigns
            if c.priority is not None
            and (c.target == "true" or scores[i] > float(c.target.split(">")[1]))
        )
        if ranked:
            assert chosen.get(cid) == ranked[0][1]


def test_control_share_matches_its_fraction() -> None:
    """With n customers, the control count is Binomial(n, f): within 4 standard deviations."""
    n, f = 20_000, 0.2
    plan = Plan.model_validate(
        {
            "settings": {"global_control_fraction": 0.0, "allow_no_send": False},
            "campaigns": [
                {
                    "id": "c",
                    "channel": "email",
                    "control_fraction": f,
                    "treatments": [{"id": "a"}, {"id": "b"}],
                }
            ],
        }
    )
    log = simulate(plan, np.zeros(n), days=1, seed=3)
    control = sum(1 for r in log if r[4] == "control")
    assert len(log) == n
    assert abs(control - n * f) < 4 * np.sqrt(n * f * (1 - f))
    # propensity = policy share (1/2) times the split's share
    props = {(r[4], round(r[7], 9)) for r in log}
    assert props == {("test", 0.4), ("control", 0.1)}


def test_global_control_share_matches_its_fraction() -> None:
    n, f = 50_000, 0.05
    keys = customer_keys([f"C{i}" for i in range(n)], "orch")
    count = int(in_global_control(keys, f).sum())
    assert abs(count - n * f) < 4 * np.sqrt(n * f * (1 - f))
    # sticky: the same customers whatever else is in the batch
    again = in_global_control(customer_keys([f"C{i}" for i in range(0, n, 2)], "orch"), f)
    assert (again == in_global_control(keys, f)[::2]).all()


def test_exclusion_blocks_the_excluded_campaign_for_its_days() -> None:
    plan = Plan.model_validate(
        {
            "settings": {"global_control_fraction": 0.0, "allow_no_send": False},
            "campaigns": [
                {
                    "id": "c0",
                    "channel": "email",
                    "priority": 1,
                    "control_fraction": 0.0,
                    "measured": False,
                    "end": "2026-11-01",
                    "treatments": [{"id": "a"}],
                },
                {
                    "id": "c1",
                    "channel": "email",
                    "control_fraction": 0.0,
                    "measured": False,
                    "treatments": [{"id": "b"}],
                },
            ],
            "exclusions": [{"if_received": "c0", "exclude": "c1", "days": 3}],
        }
    )
    log = simulate(plan, np.zeros(20), days=5, seed=1)
    per_day = {}
    for r in log:
        per_day.setdefault(r[1], set()).add(r[2])
    # day 0: c0 for all; days 1-2: c1 excluded (no other option); day 3 on: c1 again
    assert [sorted(per_day.get(START + timedelta(days=d), set())) for d in range(5)] == [
        ["c0"],
        [],
        [],
        ["c1"],
        ["c1"],
    ]
