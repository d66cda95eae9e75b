"""Offline replay: off-policy estimates of target policies beside their true values."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.learning.logged import LoggedDay
from orchestrator.plan import Plan
from simulations.ope_replay import (
    ESTIMATORS,
    TARGETS,
    DayTruth,
    ReplayReport,
    SliceResult,
    estimate_slices,
    replay_logged,
)
from simulations.scenario import load_scenario

START = date(2026, 11, 2)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReplayReport:
    spec = load_scenario("tiny")
    seen: list[tuple[str, int, int]] = []
    out = replay_logged(
        spec,
        customers=spec.customers,
        days=spec.days,
        seed=spec.seed,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('replay') / 'replay.db'}",
        targets=TARGETS,
        progress=lambda *msg: seen.append(msg),
    )
    assert seen[-1] == ("uniform", spec.days, spec.days)
    return out


def test_the_replay_reports_every_estimator_and_target(report: ReplayReport) -> None:
    rows = report.rows()
    assert {(r["estimator"], r["target"]) for r in rows} == {
        (e, t) for e in ESTIMATORS for t in TARGETS
    }
    assert all(r["slices"] == 4 for r in rows)
    assert report.decisions > report.control_decisions > 0
    data = json.loads(json.dumps(report.to_json()))
    assert len(data["slices"]) == 4 * len(ESTIMATORS) * len(TARGETS)
    per_slice = [s for s in data["slices"] if s["estimator"] == "dr" and s["target"] == "no-send"]
    assert sum(s["decisions"] for s in per_slice) == report.decisions


def test_no_send_is_worth_exactly_nothing_and_the_truths_differ(report: ReplayReport) -> None:
    for r in report.results:
        assert np.isfinite([r.true_value, r.estimate, r.std_err]).all()
        if r.target == "no-send":
            assert r.true_value == 0.0 and r.estimate == 0.0 and r.covered
    truth = {r["target"]: r["true_value"] for r in report.rows() if r["estimator"] == "dr"}
    assert len(set(truth.values())) == len(TARGETS)
    # The oracle picks the best eligible action, "send nothing" included: nothing beats it.
    assert truth["oracle"] == max(truth.values()) > 0.0


def test_dr_of_deterministic_targets_lands_within_its_standard_errors(
    report: ReplayReport,
) -> None:
    for target in ("oracle", "static"):
        rs = [r for r in report.results if r.estimator == "dr" and r.target == target]
        error = np.mean([r.estimate - r.true_value for r in rs])
        # Slices are (nearly) independent: the mean's standard error from the slices' ones.
        se = np.sqrt(np.sum([r.std_err**2 for r in rs])) / len(rs)
        assert abs(error) <= 3.0 * se, (target, error, se)


def _synthetic(
    rng: np.random.Generator, days: int = 8, n: int = 2500
) -> tuple[list[LoggedDay], dict[date, DayTruth]]:
    """Uniformly logged days whose incremental rewards are the truth plus noise.

    Rewards are ``window x b(x)`` (what the customer spends anyway, linear in the context) plus,
    for a test-group send, the action's true value; control-group decisions are held out with
    probability 0.2 and observe the no-contact outcome.
    """
    labels = ["a/x", "b/y", NO_SEND_LABEL]
    logged, truth = [], {}
    for t in range(days):
        day = START + timedelta(days=t)
        ids = [f"C{t:02d}-{i:05d}" for i in range(n)]
        x = rng.random((n, 2))
        eligible = np.ones((n, 3), dtype=bool)
        eligible[:, 1] = rng.random(n) < 0.6
        values = np.column_stack([4.0 * x[:, 0] - 1.0, 3.0 - 6.0 * x[:, 1], np.zeros(n)])
        count = eligible.sum(axis=1)
        pick = np.minimum((rng.random(n) * count).astype(np.int64), count - 1)
        action = np.where(eligible[:, 1], pick, np.where(pick == 1, 2, pick))
        sent = action != 2
        control = sent & (rng.random(n) < 0.2)
        share = np.where(sent, np.where(control, 0.2, 0.8), 1.0)
        window = np.full(n, 7.0)
        gain = np.where(sent & ~control, values[np.arange(n), action], 0.0)
        reward = window * (1.0 + 0.5 * x[:, 0]) + gain + rng.normal(0.0, 1.0, n)
        logged.append(
            LoggedDay(
                run_date=day,
                names=["x0", "x1"],
                labels=labels,
                action_features=np.eye(3),
                customer_ids=ids,
                contexts=x.astype(np.float32),
                eligible=eligible,
                action=action,
                policy_prob=1.0 / count,
                propensity=share / count,
                reward=reward,
                window_days=window,
                control=control,
                by_policy=np.ones(n, dtype=bool),
                holdout=np.zeros(n, dtype=bool),
                matured_at=np.full(n, np.datetime64("2026-12-31T00:00:00", "us")),
            )
        )
        truth[day] = DayTruth({c: i for i, c in enumerate(ids)}, labels, values)
    return logged, truth


PLAN = {
    "version": 1,
    "settings": {"allow_no_send": True},
    "campaigns": [
        {"id": "a", "channel": "email", "treatments": [{"id": "x"}]},
        {"id": "b", "channel": "sms", "priority": 1, "treatments": [{"id": "y"}]},
    ],
}


def _errors(logged: list[LoggedDay], truth: dict[date, DayTruth]) -> dict[tuple[str, str], Any]:
    """Per (estimator, target): mean error over the slices and its standard error."""
    results = estimate_slices(
        logged, truth, targets=TARGETS, slices=4, plan=Plan.model_validate(PLAN), best_label="a/x"
    )
    groups: dict[tuple[str, str], list[SliceResult]] = {}
    for r in results:
        groups.setdefault((r.estimator, r.target), []).append(r)
    assert all(len(rs) == 4 for rs in groups.values())
    return {
        key: (
            float(np.mean([r.estimate - r.true_value for r in rs])),
            float(np.sqrt(np.sum([r.std_err**2 for r in rs])) / len(rs)),
            float(np.mean([r.true_value for r in rs])),
        )
        for key, rs in groups.items()
    }


def test_every_estimator_is_unbiased_where_the_truth_is_what_is_logged() -> None:
    logged, truth = _synthetic(np.random.default_rng(5))
    errors = _errors(logged, truth)
    assert set(errors) == {(e, t) for e in ESTIMATORS for t in TARGETS}
    for (estimator, target), (error, se, true_value) in errors.items():
        if target == "no-send":
            assert error == 0.0 and true_value == 0.0
            continue
        # dm's standard error ignores the reward model's own error: judge it by dr's.
        tolerance = 4.0 * max(se, errors["dr", target][1])
        assert abs(error) <= tolerance, (estimator, target, error, se)
        assert true_value > 3 * tolerance  # far from zero: an error of 0 is not luck
    # Importance weights that forget the test share (policy_prob alone) fail the same test.
    forgot = [dataclasses.replace(d, propensity=d.policy_prob) for d in logged]
    error, se, _ = _errors(forgot, truth)["ips", "oracle"]
    assert error < -4.0 * se


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path) -> None:
    spec = load_scenario("tiny")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ValueError, match="logging policy"):
        replay_logged(spec, customers=10, days=1, seed=1, database_url=url, logging_policy="static")
    with pytest.raises(ValueError, match="target"):
        replay_logged(spec, customers=10, days=1, seed=1, database_url=url, targets=("nope",))
    assert not (tmp_path / "x.db").exists()
