"""`orch learn`: mature rewards, train a candidate incrementally, evaluate it, maybe promote it.

Training uses every matured decision outside the evaluation holdout that the lineage has not
seen yet (a watermark on the reward's maturation time), so each day adds to the model instead
of retraining from scratch. The candidate and the active policy are then evaluated off-policy
on the holdout's decisions that the policy chose (not manual priorities); the candidate is
promoted when the plan's rule says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.learning import versions
from orchestrator.learning.evaluate import evaluate_days
from orchestrator.learning.logged import LoggedDay, align, evaluation_days, keep, load_logged
from orchestrator.plan import Plan
from orchestrator.rewards import MaturationReport, mature_rewards
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.models import PolicyVersion
from orchestrator.storage.plan_repo import read_plan
from policies import Policy

PRIMARY_ESTIMATOR = "snips"


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
    apprentice_id: int | None = None
    seconds: float = 0.0


def training_arrays(
    days: list[LoggedDay], names: list[str], *, map_control_to_no_send: bool = True
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per day: (contexts aligned to ``names``, action features, actions, rewards, propensities).

    A control-group decision observed the no-contact outcome: where the date had a "send
    nothing" action it is learned as that action (so a policy can learn that for some customers
    a discount only costs margin); otherwise it is left out.
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
        out.append(
            (
                align(day.contexts[keep], day.names, names),
                day.action_features,
                action[keep],
                day.reward[keep],
                day.propensity[keep],
            )
        )
    return out


def _train(policy: Policy, days: list[LoggedDay], names: list[str]) -> int:
    n = 0
    for contexts, action_features, actions, rewards, props in training_arrays(days, names):
        policy.update(contexts, action_features, actions, rewards, props)
        n += len(actions)
    return n


def _watermark(days: list[LoggedDay], previous: datetime | None) -> datetime | None:
    stamps = [d.matured_at.max() for d in days if d.n]
    if not stamps:
        return previous
    newest: datetime = max(stamps).astype("datetime64[us]").astype(datetime)
    return newest


def learn(
    engine: sa.Engine, *, as_of: date, actor: str, kind: str | None = None, eval_days: int = 28
) -> LearnReport:
    """Run one learning step for the plan's policy (or ``kind``); see the module docstring.

    The gate evaluates on the holdout decisions of the latest ``eval_days`` run dates whose
    outcomes have matured.
    """
    require_schema(engine)
    started = time.perf_counter()
    maturation = mature_rewards(engine, as_of=as_of)
    with session_scope(engine) as session:
        plan = read_plan(session)
    settings = plan.settings.policy
    kind = kind or settings.name
    report = LearnReport(as_of=as_of, maturation=maturation, policy=kind)

    with session_scope(engine) as session:
        candidate = _step(engine, session, plan, kind, status="candidate", report=report)
        if candidate is not None:
            _gate(
                engine,
                session,
                plan,
                candidate,
                report,
                actor=actor,
                eval_days=eval_days,
                as_of=as_of,
            )
        if settings.apprentice:
            app = _step(
                engine, session, plan, settings.apprentice, status="apprentice", report=None
            )
            report.apprentice_id = app.id if app is not None else None
    report.seconds = time.perf_counter() - started
    return report


def _step(
    engine: sa.Engine,
    session: Any,
    plan: Plan,
    kind: str,
    *,
    status: str,
    report: LearnReport | None,
) -> PolicyVersion | None:
    """Train the newest version of ``kind`` (candidate lineage, or apprentice) on new rewards."""
    statuses = ("candidate", "active") if status == "candidate" else ("apprentice",)
    base = versions.latest(session, kind, statuses)
    params = (
        dict(base.params)
        if base
        else dict(plan.settings.policy.params if kind == plan.settings.policy.name else {})
    )
    policy = versions.instantiate(kind, params, base.state if base else None)
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
    n = _train(policy, train, names)
    version = versions.save(
        session,
        kind=kind,
        policy=policy,
        params=params,
        status=status,
        parent=base,
        n_new=n,
        trained_until=_watermark(days, base.trained_until if base else None),
    )
    if base is not None and base.status == "candidate":
        base.status = "superseded"
        session.add(base)
    if report is not None:
        report.trained_on, report.candidate_id = n, version.id
    return version


def _gate(
    engine: sa.Engine,
    session: Any,
    plan: Plan,
    candidate: PolicyVersion,
    report: LearnReport,
    *,
    actor: str,
    eval_days: int,
    as_of: date,
) -> None:
    """Estimate candidate and active on the holdout; promote when the plan's rule allows."""
    current = versions.active(session)
    contenders: dict[str, PolicyVersion | None] = {"candidate": candidate, "active": current}
    days = load_logged(
        engine,
        salt=plan.settings.salt,
        holdout_fraction=plan.settings.policy.evaluation_holdout,
        until=as_of,
    )
    holdout = evaluation_days(days, latest=eval_days)
    if not holdout:
        report.decision = "no holdout decisions to evaluate on yet: candidate kept, not promoted"
        return
    policies: dict[str, Policy] = {}
    for label, version in contenders.items():
        if version is not None:
            policies[label] = versions.instantiate(version.kind, version.params, version.state)
    if current is None:
        # Nothing active yet: the plan's policy acts as it is configured, untrained.
        policies["active"] = versions.instantiate(
            plan.settings.policy.name, plan.settings.policy.params, None
        )
    names = {
        label: list(v.params.get("context_names") or holdout[-1].names)
        for label, v in contenders.items()
        if v is not None
    }
    results = evaluate_days(holdout, policies, names)
    report.estimates = {k: {e: r.__dict__ for e, r in v.items()} for k, v in results.items()}
    candidate.ope = report.estimates
    session.add(candidate)
    cand = results["candidate"][PRIMARY_ESTIMATOR]
    base = results["active"][PRIMARY_ESTIMATOR]
    rule = plan.settings.policy.promote_when
    if rule == "manual":
        report.decision = "promotion is manual (`orch policy promote`)"
        return
    bar = cand.ci_low if rule == "lcb_beats_active" else cand.value
    if bar > base.value:
        versions.promote(
            session,
            candidate.id or 0,
            actor=actor,
            reason=f"{rule}: {bar:.4f} > {base.value:.4f} ({PRIMARY_ESTIMATOR})",
        )
        report.promoted = True
        report.decision = f"promoted: {rule} ({bar:.4f} > {base.value:.4f})"
    else:
        report.decision = f"kept as candidate: {rule} not met ({bar:.4f} <= {base.value:.4f})"
