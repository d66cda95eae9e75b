"""`orch learn`: mature rewards, train a candidate incrementally, evaluate it, maybe promote it.

Training uses every matured decision outside the evaluation holdout that the lineage has not
seen yet (a watermark on the reward's maturation time), so each day adds to the model instead
of retraining from scratch. The candidate and the active policy are then evaluated off-policy
on the holdout's decisions that the policy chose (not manual priorities); the candidate is
promoted when the plan's rule says so.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.engine.columns import align
from orchestrator.learning import versions
from orchestrator.learning.baseline import Baseline, baseline_from_days
from orchestrator.learning.evaluate import estimates_of, policy_dist, stack
from orchestrator.learning.logged import (
    LoggedDay,
    evaluation_days,
    keep,
    latest_matured_run_date,
    load_logged,
)
from orchestrator.learning.period import load_period
from orchestrator.measure.ope import Estimate, paired_difference
from orchestrator.plan import Plan
from orchestrator.rewards import MaturationReport, mature_rewards
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.models import PolicyVersion
from orchestrator.storage.plan_repo import read_plan
from policies import POLICIES, Policy


@dataclass
class LearnReport:
    as_of: date
    maturation: MaturationReport
    policy: str
    trained_on: int = 0
    candidate_id: int | None = None
    promoted: bool = False
    decision: str = ""
    estimates: dict[str, Any] = field(default_factory=dict)
    difference: dict[str, Any] = field(default_factory=dict)  # paired: candidate - reference
    apprentice_id: int | None = None
    seconds: float = 0.0


def training_arrays(
    days: list[LoggedDay],
    names: list[str],
    *,
    baseline: Baseline | None = None,
    map_control_to_no_send: bool = True,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per day: (contexts aligned to ``names``, action features, actions, rewards, propensities).

    Rewards are incremental over the no-contact ``baseline`` when one is given (see
    ``orchestrator.learning.baseline``). Propensities are the policy's own probabilities of the
    chosen action: the test/control split that follows is random and independent of the
    customer, so it thins every action's data alike and is no part of the choice a learner
    weighs. A control-group decision observed the no-contact
    outcome: where the date had a "send nothing" action it is learned as that action (so a
    policy can learn that for some customers a discount only costs margin); otherwise it is
    left out.
    """
    out = []
    for day in days:
        action = day.action.copy()
        keep = np.ones(day.n, dtype=bool)
        if day.control.any():
            if map_control_to_no_send and NO_SEND_LABEL in day.labels:
                action[day.control] = day.labels.index(NO_SEND_LABEL)
            else:
                keep &= ~day.control
        if not keep.any():
            continue
        reward = baseline.incremental(day) if baseline is not None else day.reward
        out.append(
            (
                align(day.contexts[keep], day.names, names),
                day.action_features,
                action[keep],
                reward[keep],
                day.policy_prob[keep],
            )
        )
    return out


def merged_batch(
    days: list[LoggedDay], names: list[str], baseline: Baseline | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Everything new as one batch ``(contexts, action_features, actions, rewards,
    propensities)`` over one action table (identical feature rows, the same action, merge);
    None when there is nothing. A learning step is one ``update``: forgetting policies count
    their half-lives in steps."""
    parts = training_arrays(days, names, baseline=baseline)
    if not parts:
        return None
    table, inverse = np.unique(np.vstack([p[1] for p in parts]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    offsets = np.cumsum([0] + [len(p[1]) for p in parts])
    actions = np.concatenate([inverse[offsets[i] + p[2]] for i, p in enumerate(parts)])
    return (
        np.vstack([p[0] for p in parts]),
        table,
        actions.astype(np.int64),
        np.concatenate([p[3] for p in parts]),
        np.concatenate([p[4] for p in parts]),
    )


def train(
    policy: Policy, days: list[LoggedDay], names: list[str], baseline: Baseline | None = None
) -> int:
    """Update ``policy`` once with the days' decisions; return how many it learned from."""
    batch = merged_batch(days, names, baseline)
    if batch is None:
        return 0
    policy.update(*batch)
    return len(batch[2])


def _watermark(days: list[LoggedDay], previous: datetime | None) -> datetime | None:
    stamps = [d.matured_at.max() for d in days if d.n]
    if not stamps:
        return previous
    newest: datetime = max(stamps).astype("datetime64[us]").astype(datetime)
    return newest


def learn(
    engine: sa.Engine,
    *,
    as_of: date,
    actor: str,
    kind: str | None = None,
    eval_days: int = 14,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> LearnReport:
    """Run one learning step for the plan's policy (or ``kind``); see the module docstring.

    The gate evaluates on the holdout decisions of the latest ``eval_days`` run dates whose
    outcomes have matured; the no-contact baseline is fitted on the other customers' decisions
    of the same period. ``workers`` or ``scheduler`` mature the rewards on a Dask cluster
    (PostgreSQL; see :func:`orchestrator.rewards.mature_rewards`); ``progress`` gets the
    decisions matured so far and the number pending.
    """
    require_schema(engine)
    started = time.perf_counter()
    maturation = mature_rewards(
        engine, as_of=as_of, workers=workers, scheduler=scheduler, progress=progress
    )
    with session_scope(engine) as session:
        plan = read_plan(session)
    settings = plan.settings.policy
    kind = kind or settings.name
    report = LearnReport(as_of=as_of, maturation=maturation, policy=kind)
    longest = max(
        [c.measurement_days for c in plan.campaigns] + [plan.settings.no_send_measurement_days]
    )

    @functools.cache
    def period() -> tuple[list[LoggedDay], Baseline | None]:
        """The latest period's logs and their no-contact baseline (loaded once, when needed)."""
        newest = latest_matured_run_date(engine, until=as_of)
        if newest is None:
            return [], None
        recent = load_period(
            engine,
            salt=plan.settings.salt,
            holdout_fraction=settings.evaluation_holdout,
            since=newest - timedelta(days=eval_days + longest),
            until=as_of,
        )
        if not recent:
            return [], None
        return recent, baseline_from_days(keep(recent, lambda d: ~d.holdout), recent[-1].names)

    def baseline() -> Baseline | None:
        return period()[1]

    with session_scope(engine) as session:
        trained = _step(engine, session, plan, kind, "candidate", report, baseline)
        if trained is not None:
            candidate, policy = trained
            _gate(session, plan, candidate, policy, report, *period(), actor, eval_days)
        if settings.apprentice:
            app = _step(engine, session, plan, settings.apprentice, "apprentice", None, baseline)
            report.apprentice_id = app[0].id if app is not None else None
    report.seconds = time.perf_counter() - started
    return report


def _step(
    engine: sa.Engine,
    session: Any,
    plan: Plan,
    kind: str,
    status: str,
    report: LearnReport | None,
    baseline_of: Callable[[], Baseline | None],
) -> tuple[PolicyVersion, Policy] | None:
    """Train the newest version of ``kind`` (candidate lineage, or apprentice) on new rewards;
    return the version saved and the trained policy."""
    statuses = ("candidate", "active") if status == "candidate" else ("apprentice",)
    base = versions.latest(session, kind, statuses)
    params = (
        dict(base.params)
        if base
        else dict(plan.settings.policy.params if kind == plan.settings.policy.name else {})
    )
    days = load_logged(
        engine,
        salt=plan.settings.salt,
        holdout_fraction=plan.settings.policy.evaluation_holdout,
        matured_after=base.trained_until if base else None,
    )
    if status == "candidate":
        # The candidate learns from the decisions a policy made; an apprentice from all of them.
        train = keep(days, lambda d: ~d.holdout & d.by_policy)
    else:
        train = keep(days, lambda d: ~d.holdout)
    if not train:
        if report is not None:
            report.decision = "no new matured decisions to learn from"
        return None
    names = list(params.get("context_names") or train[-1].names)
    params["context_names"] = names
    batch = merged_batch(train, names, baseline_of())
    if batch is None:
        if report is not None:
            report.decision = "no new matured decisions to learn from"
        return None
    if base is None and kind in POLICIES:
        # Settings a policy derives from the rewards (VW: their money scale) are fixed at the
        # first version, so that later updates mean the same thing; the plan's win.
        params = {**POLICIES[kind].params_from_rewards(batch[3]), **params}
    policy = versions.instantiate(kind, params, base.state if base else None)
    policy.update(*batch)
    n = len(batch[2])
    version = versions.save(
        session,
        kind=kind,
        policy=policy,
        params=params,
        status=status,
        parent=base,
        n_new=n,
        trained_until=_watermark(days, base.trained_until if base else None),
        trained_through=max(d.run_date for d in train),
    )
    if base is not None and base.status == "candidate":
        base.status = "superseded"
        session.add(base)
    if report is not None:
        report.trained_on, report.candidate_id = n, version.id
    return version, policy


def _gate(
    session: Any,
    plan: Plan,
    candidate: PolicyVersion,
    trained: Policy,
    report: LearnReport,
    recent: list[LoggedDay],
    baseline: Baseline | None,
    actor: str,
    eval_days: int,
) -> None:
    """Compare candidate and active on the holdout; promote when the plan's rule allows.

    The statistic is the paired doubly robust difference of the two on the same held-out
    decisions (``paired_difference``), on incremental rewards. With nothing active yet the
    reference is the logging policy (what was actually done): a first candidate acts once it is
    not worse than that.
    """
    current = versions.active(session)
    holdout = evaluation_days(recent, latest=eval_days)
    if not holdout:
        report.decision = "no holdout decisions to evaluate on yet: candidate kept, not promoted"
        return
    rewards = [baseline.incremental(d) if baseline is not None else d.reward for d in holdout]
    stacked = stack(holdout, rewards)
    # The candidate is the policy just trained (no reload of its state).
    dists = {
        "candidate": policy_dist(
            stacked, holdout, trained, candidate.params.get("context_names") or None
        )
    }
    if current is not None:
        dists["active"] = policy_dist(
            stacked,
            holdout,
            versions.instantiate(current.kind, current.params, current.state),
            current.params.get("context_names") or None,
        )
    results = estimates_of(stacked, holdout, dists)
    diff = paired_difference(
        stacked.reward,
        stacked.action,
        stacked.pscore,
        dists["candidate"],
        dists.get("active"),
        stacked.estimated,
        clusters=stacked.clusters,
    )
    reference = "active" if current is not None else "logging"
    report.estimates = {k: {e: r.__dict__ for e, r in v.items()} for k, v in results.items()}
    report.difference = {"reference": reference, **diff.__dict__}
    candidate.ope = {**report.estimates, "difference": report.difference}
    session.add(candidate)
    rule = plan.settings.policy.promote_when
    ok, why = promotion(diff, rule, has_active=current is not None)
    shown = f"candidate - {reference} = {diff.value:.4f} [{diff.ci_low:.4f}, {diff.ci_high:.4f}]"
    if ok:
        versions.promote(session, candidate.id or 0, actor=actor, reason=f"{why}: {shown}")
        report.promoted = True
        report.decision = f"promoted: {why} ({shown})"
    elif rule == "manual":
        report.decision = f"promotion is manual (`orch policy promote`); {shown}"
    else:
        report.decision = f"kept as candidate: {why} not met ({shown})"


def promotion(diff: Estimate, rule: str, *, has_active: bool) -> tuple[bool, str]:
    """Whether a candidate replaces the reference, given the paired difference ``diff``
    (candidate - reference, 95% interval) and the plan's rule; and the rule that decided.

    ``not_worse_than_active`` (the default) promotes unless the candidate is significantly
    worse (the whole interval below zero): the candidate is the same learner with more data,
    and at a few thousand held-out decisions a day the interval is too wide to prove a real
    improvement of a few percent, so asking for proof would keep a stale policy acting; the
    gate is there to stop a candidate that is clearly worse (bad data, a broken feature).
    ``estimate_beats_active`` asks for the estimate above zero, ``lcb_beats_active`` for the
    whole interval (for volumes large enough to prove it). With nothing active yet, a first
    candidate acts once it is not significantly worse than the logging policy, whatever the
    rule (but ``manual``).

    >>> promotion(Estimate(0.2, 0.1, 0.3, 0.05, 100), "lcb_beats_active", has_active=True)
    (True, 'lcb_beats_active')
    >>> promotion(Estimate(0.2, -0.1, 0.5, 0.15, 100), "lcb_beats_active", has_active=True)[0]
    False
    >>> promotion(Estimate(-0.2, -0.5, 0.1, 0.15, 100), "not_worse_than_active", has_active=True)
    (True, 'not_worse_than_active')
    """
    if rule == "manual":
        return False, "manual"
    if not has_active:
        return diff.ci_high >= 0.0, "first policy, not worse than the logging policy"
    if rule == "lcb_beats_active":
        return diff.ci_low > 0.0, rule
    if rule == "estimate_beats_active":
        return diff.value > 0.0, rule
    return diff.ci_high >= 0.0, "not_worse_than_active"
