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
from orchestrator.engine.columns import align
from orchestrator.learning import versions
from orchestrator.learning.logged import LoggedDay, evaluation_days, load_logged
from orchestrator.measure.ope import estimate_policy_value, fit_estimated_rewards
from orchestrator.plan import Plan
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.plan_repo import read_plan
from policies import Policy

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Stacked:
    """All days' decisions in one table over the union of their action labels.

    ``labels (L,)``; ``reward (n,)``; ``action (n,)`` index into ``labels``; ``pscore (n,)`` the
    logging policy's probability of it; ``estimated (n, L)`` a cross-fitted reward model for DR
    (a ridge regression on the context per label); ``clusters (n,)`` customer codes, so
    intervals allow for one customer's decisions being correlated.
    """

    labels: list[str]
    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    estimated: np.ndarray
    clusters: np.ndarray
    columns: list[np.ndarray]  # per day: (A_day,) the column of each of its labels

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def width(self) -> int:
        return len(self.labels)


def stack(days: Sequence[LoggedDay], rewards: Sequence[np.ndarray] | None = None) -> Stacked:
    """Stack ``days`` (with ``rewards`` per day in place of the logged ones, if given)."""
    labels: list[str] = []
    index: dict[str, int] = {}
    columns = []
    for d in days:
        columns.append(np.array([index.setdefault(lb, len(index)) for lb in d.labels]))
    labels = list(index)
    reward = np.concatenate(list(rewards) if rewards is not None else [d.reward for d in days])
    action = np.concatenate([cols[d.action] for d, cols in zip(days, columns, strict=True)])
    pscore = np.concatenate([d.policy_prob for d in days])
    names = days[-1].names
    contexts = np.vstack([align(d.contexts, d.names, names) for d in days])
    estimated = fit_estimated_rewards(contexts, action, reward, len(labels), n_folds=2)
    _, clusters = np.unique(
        np.concatenate([np.asarray(d.customer_ids) for d in days]), return_inverse=True
    )
    return Stacked(labels, reward, action, pscore, estimated, clusters.ravel(), columns)


def policy_dist(
    stacked: Stacked, days: Sequence[LoggedDay], policy: Policy, names: Sequence[str] | None
) -> np.ndarray:
    """``(n, L)`` the policy's distribution over each stacked decision's eligible actions."""
    if names is not None:
        policy.set_feature_names(list(names))
    out = np.zeros((stacked.n, stacked.width))
    row = 0
    for d, cols in zip(days, stacked.columns, strict=True):
        dist = policy.action_dist(
            align(d.contexts, d.names, names or d.names), d.action_features, d.eligible
        )
        out[row : row + d.n, cols] = dist
        row += d.n
    return out


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
    rewards: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Estimates per contender: each policy, ``logged`` and (with a plan) ``static_ranking``."""
    stacked = stack(days, rewards)
    dists = {
        label: policy_dist(stacked, days, policy, names.get(label))
        for label, policy in policies.items()
    }
    return estimates_of(stacked, days, dists, plan=plan)


def estimates_of(
    stacked: Stacked,
    days: Sequence[LoggedDay],
    dists: Mapping[str, np.ndarray],
    *,
    plan: Plan | None = None,
) -> dict[str, dict[str, Any]]:
    """``ips``, ``snips`` and ``dr`` of each distribution in ``dists`` (and the baselines)."""
    results: dict[str, dict[str, Any]] = {
        label: _estimate(stacked, dist) for label, dist in dists.items()
    }
    if plan is not None:
        static = np.zeros((stacked.n, stacked.width))
        row = 0
        for d, cols in zip(days, stacked.columns, strict=True):
            static[row : row + d.n, cols] = static_ranking_dist(d, plan)
            row += d.n
        results["static_ranking"] = _estimate(stacked, static)
    logged = np.zeros((stacked.n, stacked.width))
    logged[np.arange(stacked.n), stacked.action] = 1.0
    on_policy = estimate_policy_value(
        stacked.reward, stacked.action, np.ones(stacked.n), logged, estimators=("ips",)
    )["ips"]
    results["logged"] = {e: on_policy for e in ESTIMATORS}
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
