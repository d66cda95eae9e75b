"""Off-policy evaluation of policies on logged decisions, and `orch evaluate`.

Each logged decision carries the policy's own probability of the chosen action (the test/control
split is the same whatever the policy, so it cancels out of the importance weights). A policy's
distribution over the logged eligible actions, the chosen action, that probability and the
reward go to ``estimate_policy_value``. Two baselines sit beside the policies: the logging
policy itself (the mean reward actually observed) and the team's static ranking (always the
first eligible campaign in plan order, manual priorities first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.learning import versions
from orchestrator.learning.logged import LoggedDay, align, evaluation_days, load_logged
from orchestrator.measure.ope import estimate_policy_value
from orchestrator.plan import Plan
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.plan_repo import read_plan
from policies import Policy

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Stacked:
    """All days' decisions in one table, actions padded to the widest date."""

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    estimated: np.ndarray  # (n, A) reward model for DR

    @property
    def n(self) -> int:
        return len(self.reward)


def _stack(days: Sequence[LoggedDay]) -> tuple[Stacked, int]:
    width = max(len(d.labels) for d in days)
    reward = np.concatenate([d.reward for d in days])
    action = np.concatenate([d.action for d in days])
    pscore = np.concatenate([d.policy_prob for d in days])
    # A simple reward model for DR: the mean reward of each action label (overall mean if unseen).
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in days:
        for a, r in zip(d.action.tolist(), d.reward.tolist(), strict=True):
            sums[d.labels[a]] = sums.get(d.labels[a], 0.0) + r
            counts[d.labels[a]] = counts.get(d.labels[a], 0) + 1
    overall = float(reward.mean())
    estimated = np.full((len(reward), width), overall)
    row = 0
    for d in days:
        means = [sums[lb] / counts[lb] if lb in counts else overall for lb in d.labels]
        estimated[row : row + d.n, : len(means)] = means
        row += d.n
    return Stacked(reward, action, pscore, estimated), width


def _pad(dists: list[np.ndarray], width: int) -> np.ndarray:
    return np.vstack([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in dists])


def static_ranking_dist(day: LoggedDay, plan: Plan) -> np.ndarray:
    """One-hot on the first eligible action of the team's ranking (priorities, then plan order)."""
    order = sorted(
        range(len(plan.campaigns)),
        key=lambda i: (plan.campaigns[i].priority is None, plan.campaigns[i].priority or 0, i),
    )
    rank_of_campaign = {plan.campaigns[i].id: r for r, i in enumerate(order)}
    big = len(rank_of_campaign) + 1
    rank = np.array(
        [
            big * 100
            if label == NO_SEND_LABEL
            else rank_of_campaign.get(label.split("/")[0], big) * 100 + j
            for j, label in enumerate(day.labels)
        ],
        dtype=np.int64,
    )
    masked = np.where(day.eligible, rank[None, :], np.iinfo(np.int64).max)
    dist = np.zeros(day.eligible.shape)
    has = day.eligible.any(axis=1)
    dist[np.flatnonzero(has), masked[has].argmin(axis=1)] = 1.0
    return dist


def evaluate_days(
    days: Sequence[LoggedDay],
    policies: Mapping[str, Policy],
    names: Mapping[str, list[str]],
    *,
    plan: Plan | None = None,
) -> dict[str, dict[str, Any]]:
    """Estimates per contender: each policy, ``logged`` and (with a plan) ``static_ranking``."""
    stacked, width = _stack(days)
    results: dict[str, dict[str, Any]] = {}
    for label, policy in policies.items():
        if label in names:
            policy.set_feature_names(names[label])
        dists = [
            policy.action_dist(
                align(d.contexts, d.names, names.get(label, d.names)),
                d.action_features,
                d.eligible,
            )
            for d in days
        ]
        results[label] = _estimate(stacked, _pad(dists, width))
    if plan is not None:
        results["static_ranking"] = _estimate(
            stacked, _pad([static_ranking_dist(d, plan) for d in days], width)
        )
    logged = np.zeros((stacked.n, width))
    logged[np.arange(stacked.n), stacked.action] = 1.0
    results["logged"] = estimate_policy_value(
        stacked.reward, stacked.action, np.ones(stacked.n), logged, estimators=("ips",)
    )
    results["logged"] = {e: results["logged"]["ips"] for e in ESTIMATORS}
    return results


def _estimate(stacked: Stacked, dist: np.ndarray) -> dict[str, Any]:
    return estimate_policy_value(
        stacked.reward,
        stacked.action,
        stacked.pscore,
        dist,
        estimated_rewards=stacked.estimated,
        estimators=ESTIMATORS,
    )


@dataclass
class EvaluationReport:
    n_decisions: int
    n_days: int
    since: date | None
    rows: list[dict[str, Any]]


def evaluate(
    engine: sa.Engine, *, kinds: Sequence[str] = (), since: date | None = None
) -> EvaluationReport:
    """`orch evaluate`: estimate every contender on the holdout decisions the policy chose."""
    require_schema(engine)
    with session_scope(engine) as session:
        plan = read_plan(session)
        contenders: dict[str, Policy] = {}
        names: dict[str, list[str]] = {}
        current = versions.active(session)
        if current is not None:
            contenders[f"active: {current.kind} v{current.id}"] = versions.instantiate(
                current.kind, current.params, current.state
            )
            names[f"active: {current.kind} v{current.id}"] = list(
                current.params.get("context_names") or []
            )
        for kind in kinds or [plan.settings.policy.name]:
            version = versions.latest(session, kind, ("candidate",))
            label = f"candidate: {kind} v{version.id}" if version else f"{kind} (untrained)"
            contenders[label] = versions.instantiate(
                kind, version.params if version else {}, version.state if version else None
            )
            if version is not None:
                names[label] = list(version.params.get("context_names") or [])
    days = load_logged(
        engine,
        salt=plan.settings.salt,
        holdout_fraction=plan.settings.policy.evaluation_holdout,
        since=since,
    )
    holdout = evaluation_days(days)
    if not holdout:
        from orchestrator.errors import InputError

        raise InputError(
            "no matured decisions of the policy to evaluate"
            + (f" since {since}" if since else "")
            + ": run `orch learn` after measurement windows close"
        )
    names = {k: v or holdout[-1].names for k, v in names.items()}
    results = evaluate_days(holdout, contenders, names, plan=plan)
    rows = []
    for label, estimates in results.items():
        row: dict[str, Any] = {"policy": label}
        for est in ESTIMATORS:
            e = estimates[est]
            row[est] = {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}
        rows.append(row)
    return EvaluationReport(sum(d.n for d in holdout), len(holdout), since, rows)
