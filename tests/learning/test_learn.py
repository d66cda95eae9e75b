"""The learning loop on a real database: maturation, incremental training, OPE, promotion."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import InputError
from orchestrator.learning import period, versions
from orchestrator.learning.evaluate import evaluate
from orchestrator.learning.learn import learn
from orchestrator.learning.logged import LoggedDay, load_logged
from orchestrator.rewards import mature_rewards
from orchestrator.run import run_daily
from orchestrator.storage.models import AuditLog, Decision, Event, PolicyVersion
from tests.helpers import seed_customers

PLAN = Path(__file__).parent.parent / "data" / "plan_run.yaml"
START = date(2026, 11, 1)


def _world(
    engine: sa.Engine,
    tmp_path: Path,
    *,
    policy: str = "uniform",
    apprentice: str | None = None,
    days: int = 6,
) -> None:
    text = PLAN.read_text().replace(
        "policy: {name: uniform}",
        "policy: {name: " + policy + (f", apprentice: {apprentice}" if apprentice else "") + "}",
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    admin.apply_plan_file(engine, plan, actor="t")
    seed_customers(engine, 400)
    for offset in range(days):
        run_daily(engine, day=START + timedelta(days=offset), batch_size=150)
    # Outcomes: crosssell's bogo sells, everything else does little.
    with Session(engine) as s:
        events = []
        for i, d in enumerate(s.exec(select(Decision))):
            amount = 60.0 if d.treatment_id == "bogo" and d.group == "test" else 5.0
            at = datetime.combine(d.run_date, datetime.min.time()) + timedelta(hours=30)
            events.append(
                Event(
                    source_event_id=f"e{i}",
                    customer_id=d.customer_id,
                    occurred_at=at,
                    type="purchase",
                    amount=amount,
                )
            )
        s.add_all(events)
        s.commit()


def test_learn_trains_once_per_reward_and_keeps_the_holdout_out(
    engine: sa.Engine, tmp_path: Path
) -> None:
    _world(engine, tmp_path)
    as_of = START + timedelta(days=40)
    first = learn(engine, as_of=as_of, actor="ana")
    assert first.maturation.matured > 0 and first.candidate_id is not None
    days = load_logged(engine, salt="orch", holdout_fraction=0.2)
    trainable = sum(int((~d.holdout & d.by_policy).sum()) for d in days)
    assert first.trained_on == trainable > 0
    assert 0 < sum(int(d.holdout.sum()) for d in days) < sum(d.n for d in days)
    assert set(first.estimates) >= {"candidate", "logged"}
    # Nothing active yet: the candidate is compared with what was actually done.
    assert first.difference["reference"] == "logging"
    assert first.difference["ci_low"] <= first.difference["value"] <= first.difference["ci_high"]
    again = learn(engine, as_of=as_of, actor="ana")
    assert again.candidate_id is None and "no new matured" in again.decision
    with Session(engine) as s:
        saved = list(s.exec(select(PolicyVersion)))
    statuses = [v.status for v in saved]
    assert statuses.count("candidate") + statuses.count("active") == 1
    # The data's date (the latest run date learned), not when the rewards matured.
    assert saved[0].trained_through == max(d.run_date for d in days if (~d.holdout).any())


def test_promote_and_rollback_are_audited(engine: sa.Engine, tmp_path: Path) -> None:
    _world(engine, tmp_path)
    learn(engine, as_of=START + timedelta(days=40), actor="ana")
    with Session(engine) as s:
        first = versions.latest(s, "uniform", ("candidate", "active"))
        assert first is not None
        if first.status != "active":
            versions.promote(s, first.id, actor="ana", reason="manual")
        with pytest.raises(InputError, match="already active"):
            versions.promote(s, first.id, actor="ana", reason="manual")
        with pytest.raises(InputError, match="nothing to roll back to"):
            versions.rollback(s, actor="ana")
        s.commit()
    with Session(engine) as s:
        actions = [a.action for a in s.exec(select(AuditLog))]
    assert "policy.promote" in actions


def test_evaluate_compares_policies_and_baselines(engine: sa.Engine, tmp_path: Path) -> None:
    _world(engine, tmp_path)
    with pytest.raises(InputError, match="no matured decisions"):
        evaluate(engine)
    learn(engine, as_of=START + timedelta(days=40), actor="ana")
    report = evaluate(engine)
    labels = [r["policy"] for r in report.rows]
    assert "static_ranking" in labels and "logged" in labels
    assert report.n_decisions > 0
    for row in report.rows:
        for est in ("ips", "snips", "dr"):
            e = row[est]
            assert e["ci_low"] <= e["value"] <= e["ci_high"]


def test_apprentice_learns_without_acting(engine: sa.Engine, tmp_path: Path) -> None:
    _world(engine, tmp_path, apprentice="uniform")
    report = learn(engine, as_of=START + timedelta(days=40), actor="ana")
    assert report.apprentice_id is not None
    run = run_daily(engine, day=START + timedelta(days=41), batch_size=150)
    agreement = run.counts["apprentice"]
    assert set(agreement) <= {"priority", "policy"} and agreement
    for agree, total in agreement.values():
        assert 0 <= agree <= total


def _same_days(got: list[LoggedDay], want: list[LoggedDay]) -> None:
    assert [d.run_date for d in got] == [d.run_date for d in want]
    for g, w in zip(got, want, strict=True):
        for name, value in vars(w).items():
            other = getattr(g, name)
            if isinstance(value, np.ndarray):
                assert np.array_equal(other, value), (g.run_date, name)
            else:
                assert other == value, (g.run_date, name)


def test_the_period_cache_rereads_only_the_dates_that_changed(
    engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(engine, tmp_path, days=8)
    span = {"since": START, "until": START + timedelta(days=8)}
    reads: list[list[date]] = []
    real = period.load_logged

    def spy(*args: Any, **kwargs: Any) -> list[LoggedDay]:
        reads.append(list(kwargs["dates"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(period, "load_logged", spy)
    period.clear()

    def both() -> list[LoggedDay]:
        got = period.load_period(engine, salt="orch", holdout_fraction=0.2, **span)
        _same_days(got, load_logged(engine, salt="orch", holdout_fraction=0.2, **span))
        return got

    mature_rewards(engine, as_of=START + timedelta(days=9))  # the first dates' short windows
    first = both()
    assert first and reads == [[d.run_date for d in first]]
    assert both() and len(reads) == 1  # nothing changed: nothing read
    mature_rewards(engine, as_of=START + timedelta(days=40))  # every window closes
    after = both()
    assert len(reads) == 2 and 0 < len(reads[1]) <= len(after)
    with pytest.raises(ValueError, match="read-only"):
        after[0].reward[0] = 1.0  # a cached day cannot be changed behind the cache
    # Another salt is another holdout: read again, not served from the first entry.
    period.load_period(engine, salt="other", holdout_fraction=0.2, **span)
    assert len(reads) == 3 and len(reads[2]) == len(after)
