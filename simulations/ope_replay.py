"""Offline replay: evaluate policies off-policy on a simulation's logs and compare with the truth.

``orch simulate ... --replay`` runs the closed loop for one logging policy (``uniform`` by
default) exactly as :func:`simulations.loop.run_contender` does, through the production
use-cases, and records for every logged decision the world's exact expected incremental value
of every action of that day (:meth:`World.expected_incremental`, taken before the day is
stepped). After the loop the rewards mature, the logs are read back as the learners read them
(:func:`load_logged`), and each target policy is estimated off-policy on consecutive slices of
run dates with ``ips``, ``dm`` and ``dr``; its true value on the same decisions is known, so
each estimator's bias, RMSE and interval coverage can be read off.

The estimand is a target's value *relative to sending nothing*, per decision:
``mean_i Σ_a π(a|x_i) v_i(a)``, ``v_i(a)`` the true incremental value of action ``a`` for
decision ``i``. Raw rewards are not comparable between actions (each is the revenue of its own
measurement window, 7 days for one campaign, 14 for another), the incremental ones (reward
minus ``window_days × b(x)``, the no-contact baseline the learners use) are, and the world's
truth is incremental too. Every estimate is therefore a paired difference: the target's
per-decision terms minus those of always sending nothing, on the same decisions.

Control-group decisions are kept in the population (the truth averages over them as well: the
customer's state is the same whichever group the hash put them in) but have no importance
weight: they observed the no-contact outcome, whose logging probability (``"send nothing"`` or
any campaign's control share) the log does not hold. They still feed the reward model as
``"send nothing"`` observations (as :func:`orchestrator.learning.learn.training_arrays` does)
and give ``dm`` and ``dr`` their direct-method terms. A test-group send of action ``a`` is
then logged with probability ``π0(a|x) × (1 - control_fraction)``, the logged ``propensity``,
which is its importance denominator (``policy_prob`` alone would shrink every send's weight by
the test share and bias every estimate towards zero). Decisions made by a manual priority are
left out (the policy chose only among that campaign's treatments).

After the last simulated day the world keeps stepping, with no sends, until every measurement
window has closed, so that no reward is cut short. A reward holds all that happened in its
window (after "send nothing" the customer may be sent something the next day), the truth only
the one decision's effect, and the baseline is a linear model: both are biases the replay
measures, not ones it corrects.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.errors import InputError
from orchestrator.imports.events import import_events
from orchestrator.learning.baseline import baseline_from_days
from orchestrator.learning.evaluate import Stacked, stack, static_ranking_dist
from orchestrator.learning.logged import LoggedDay, keep, load_logged
from orchestrator.measure.ope import Estimate, paired_difference
from orchestrator.plan import Plan
from orchestrator.rewards import mature_rewards
from orchestrator.storage.db import make_engine
from orchestrator.storage.run_repo import load_contexts
from simulations.loop import (
    LEARNERS,
    DayProgress,
    best_single,
    contender_plan,
    run_contender,
    simulated_now,
    write_csv,
)
from simulations.scenario import Scenario
from simulations.world import World

ESTIMATORS = ("ips", "dm", "dr")
TARGETS = ("static", "best-single", "no-send", "uniform", "oracle")
# Policies that explore: a deterministic one (static, best-single, oracle) logs no alternatives.
LOGGING_POLICIES = ("uniform", *LEARNERS)


@dataclass(frozen=True)
class DayTruth:
    """One run date's decisions: ``values (n, A)`` true incremental value of each label."""

    row_of: dict[str, int]  # customer id -> row of values
    labels: list[str]  # (A,)
    values: np.ndarray  # (n, A); "send nothing" is 0


@dataclass(frozen=True)
class SliceResult:
    """One estimator's estimate of one target on one slice of run dates, and the truth."""

    slice: int
    first_day: date
    last_day: date
    decisions: int
    target: str
    estimator: str
    true_value: float
    estimate: float
    std_err: float
    ci_low: float
    ci_high: float

    @property
    def covered(self) -> bool:
        return self.ci_low <= self.true_value <= self.ci_high


@dataclass(frozen=True)
class Summary:
    """One (estimator, target) over the slices: values per decision, in money."""

    estimator: str
    target: str
    true_value: float  # mean over slices
    mean_estimate: float
    bias: float  # mean of estimate - truth
    rmse: float
    coverage: float  # share of slices whose 95% interval holds the truth
    mean_std_err: float
    slices: int


@dataclass
class ReplayReport:
    """What :func:`replay_logged` found; see the module docstring for the estimand."""

    scenario: str
    customers: int
    days: int
    seed: int
    logging_policy: str
    decisions: int  # decisions evaluated on (by the policy, control groups included)
    control_decisions: int
    results: list[SliceResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> list[Summary]:
        """Aggregate the slices per (estimator, target), in the order they were estimated."""
        groups: dict[tuple[str, str], list[SliceResult]] = {}
        for r in self.results:
            groups.setdefault((r.estimator, r.target), []).append(r)
        out = []
        for (estimator, target), rs in groups.items():
            truth = np.array([r.true_value for r in rs])
            est = np.array([r.estimate for r in rs])
            err = est - truth
            out.append(
                Summary(
                    estimator=estimator,
                    target=target,
                    true_value=float(truth.mean()),
                    mean_estimate=float(est.mean()),
                    bias=float(err.mean()),
                    rmse=float(np.sqrt((err**2).mean())),
                    coverage=float(np.mean([r.covered for r in rs])),
                    mean_std_err=float(np.mean([r.std_err for r in rs])),
                    slices=len(rs),
                )
            )
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Return one table row per (estimator, target), estimators first."""
        order = {e: i for i, e in enumerate(ESTIMATORS)}
        summaries = sorted(self.summary(), key=lambda s: order.get(s.estimator, len(order)))
        return [
            {
                "estimator": s.estimator,
                "target": s.target,
                "true_value": s.true_value,
                "mean_estimate": s.mean_estimate,
                "bias": s.bias,
                "rmse": s.rmse,
                "coverage": s.coverage,
                "slices": s.slices,
            }
            for s in summaries
        ]

    def to_json(self) -> dict[str, Any]:
        """Return the report as plain JSON types: the summary and every slice's figures."""
        return {
            "scenario": self.scenario,
            "customers": self.customers,
            "days": self.days,
            "seed": self.seed,
            "logging_policy": self.logging_policy,
            "estimand": "value per decision relative to sending nothing (incremental, money)",
            "decisions": self.decisions,
            "control_decisions": self.control_decisions,
            "seconds": self.seconds,
            "summary": [dataclasses.asdict(s) for s in self.summary()],
            "slices": [
                {
                    **dataclasses.asdict(r),
                    "first_day": r.first_day.isoformat(),
                    "last_day": r.last_day.isoformat(),
                    "covered": r.covered,
                }
                for r in self.results
            ],
        }


def replay_logged(
    spec: Scenario,
    *,
    customers: int,
    days: int,
    seed: int,
    database_url: str,
    logging_policy: str = "uniform",
    targets: Sequence[str] = ("static", "best-single", "no-send", "uniform"),
    slices: int = 4,
    progress: DayProgress | None = None,
) -> ReplayReport:
    """Log ``days`` days of ``logging_policy`` on a fresh database at ``database_url``, then
    estimate each of ``targets`` off-policy on ``slices`` consecutive slices of run dates and
    compare with its true value (see the module docstring)."""
    if logging_policy not in LOGGING_POLICIES:
        raise InputError(
            f"unknown logging policy {logging_policy!r}; choose from {', '.join(LOGGING_POLICIES)}"
        )
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise InputError(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    if slices < 1:
        raise InputError(f"slices must be >= 1, got {slices}")
    started = time.perf_counter()
    world = World(spec, customers=customers, seed=seed)
    # Both need the world on its first day, before anything is stepped.
    best = best_single(world, spec)
    static_plan = Plan.model_validate(contender_plan(spec, "static", world, "-"))
    truth = _log_with_truth(
        world, spec, logging_policy, customers, days, seed, database_url, progress
    )
    engine = make_engine(database_url)
    try:
        logged = keep(
            load_logged(engine, salt=static_plan.settings.salt, holdout_fraction=0.0),
            lambda d: d.by_policy,
        )
    finally:
        engine.dispose()
    if not logged:
        raise InputError(f"{logging_policy}: no matured decisions chosen by the policy to replay")
    report = ReplayReport(
        spec.name,
        customers,
        days,
        seed,
        logging_policy,
        decisions=sum(d.n for d in logged),
        control_decisions=sum(int(d.control.sum()) for d in logged),
    )
    report.results = estimate_slices(
        logged, truth, targets=targets, slices=slices, plan=static_plan, best_label=best
    )
    report.seconds = time.perf_counter() - started
    return report


# --- the closed loop, recording the truth -------------------------------------------------


def _log_with_truth(
    world: World,
    spec: Scenario,
    name: str,
    customers: int,
    days: int,
    seed: int,
    database_url: str,
    progress: DayProgress | None,
) -> dict[date, DayTruth]:
    """Run ``name`` through the closed loop (``run_contender``), recording each date's truth;
    then let the world go on without sends until the last window has closed."""
    truth: dict[date, DayTruth] = {}

    def record(engine: sa.Engine, day: date) -> None:
        # The truth is of the world as it is before today's sends are registered.
        with engine.connect() as conn:
            ctx = load_contexts(conn, [day]).get(day)
        if ctx is not None and ctx.row_of:
            ids = list(ctx.row_of)  # in row order
            values = world.expected_incremental(day, world.rows_of(ids), ctx.actions)
            truth[day] = DayTruth(dict(ctx.row_of), list(ctx.actions), values)

    run_contender(
        spec,
        name,
        customers,
        days,
        seed,
        database_url,
        progress=progress,
        world=world,
        on_decided=record,
    )
    plan = spec.plan_model()
    longest = max(
        [c.measurement_days for c in plan.campaigns] + [plan.settings.no_send_measurement_days]
    )
    # No reward is cut short: the world steps on, sending nothing, past the last window.
    tail: list[dict[str, Any]] = []
    for offset in range(days, days + longest):
        tail += world.step(spec.start + timedelta(days=offset), [], [])
    engine = make_engine(database_url)
    try:
        if tail:
            with tempfile.TemporaryDirectory() as tmp:
                end = spec.start + timedelta(days=days + longest)
                import_events(
                    engine, write_csv(Path(tmp) / "tail.csv", tail), now=simulated_now(end)
                )
        mature_rewards(engine, as_of=spec.start + timedelta(days=days + longest))
    finally:
        engine.dispose()
    return truth


# --- estimates against the truth ----------------------------------------------------------

TargetDist = Callable[[LoggedDay, np.ndarray], np.ndarray]


def _target_dists(plan: Plan, best: str) -> dict[str, TargetDist]:
    """Each target's ``(n, A)`` distribution on a day, given the day's truth ``(n, A)``."""

    def no_send(day: LoggedDay, truth: np.ndarray) -> np.ndarray:
        return _one_hot_at(day, day.labels.index(NO_SEND_LABEL))

    def uniform(day: LoggedDay, truth: np.ndarray) -> np.ndarray:
        elig = day.eligible.astype(np.float64)
        return elig / elig.sum(axis=1, keepdims=True)

    def best_single(day: LoggedDay, truth: np.ndarray) -> np.ndarray:
        dist = no_send(day, truth)
        if best in day.labels:
            j = day.labels.index(best)
            rows = np.flatnonzero(day.eligible[:, j])
            dist[rows] = 0.0
            dist[rows, j] = 1.0
        return dist

    def oracle(day: LoggedDay, truth: np.ndarray) -> np.ndarray:
        masked = np.where(day.eligible, truth, -np.inf)
        dist = np.zeros(day.eligible.shape)
        dist[np.arange(day.n), masked.argmax(axis=1)] = 1.0  # first on ties
        return dist

    return {
        "static": lambda day, truth: static_ranking_dist(day, plan),
        "best-single": best_single,
        "no-send": no_send,
        "uniform": uniform,
        "oracle": oracle,
    }


def _one_hot_at(day: LoggedDay, j: int) -> np.ndarray:
    dist = np.zeros(day.eligible.shape)
    dist[:, j] = 1.0
    return dist


def estimate_slices(
    logged: Sequence[LoggedDay],
    truth: dict[date, DayTruth],
    *,
    targets: Sequence[str],
    slices: int,
    plan: Plan,
    best_label: str,
) -> list[SliceResult]:
    """Estimate each target on ``slices`` consecutive slices of the ``logged`` run dates with
    every estimator, beside its true value from ``truth`` (per run date).

    ``plan`` gives the ``static`` target its ranking (priorities, then plan order) and
    ``best_label`` is the ``best-single`` target's action. The no-contact baseline is fitted
    once, on every no-contact decision of ``logged``; the reward model per slice (cross-fitted
    by ``stack``), so that slices share no fitted model.
    """
    names = logged[-1].names
    baseline = baseline_from_days(logged, names)
    if baseline is None:
        raise InputError("no no-contact decisions to fit the baseline on")
    for d in logged:
        if NO_SEND_LABEL not in d.labels:
            # The estimand is relative to sending nothing, which must have been loggable.
            raise InputError(f"{d.run_date}: the plan does not allow 'send nothing'")
    dists = _target_dists(plan, best_label)
    dates = [d.run_date for d in logged]
    out: list[SliceResult] = []
    for k, chunk in enumerate(np.array_split(np.arange(len(logged)), min(slices, len(logged)))):
        part = [logged[i] for i in chunk.tolist()]
        values = [_truth_of(d, truth[d.run_date]) for d in part]
        stacked = stack(_for_estimation(part), [baseline.incremental(d) for d in part])
        control = np.concatenate([d.control for d in part])
        never = [_one_hot_at(d, d.labels.index(NO_SEND_LABEL)) for d in part]
        reference = _stacked_dist(stacked, never)
        for target in targets:
            per_day = [dists[target](d, v) for d, v in zip(part, values, strict=True)]
            true_value = float(
                np.concatenate(
                    [(p * v).sum(axis=1) for p, v in zip(per_day, values, strict=True)]
                ).mean()
            )
            dist = _stacked_dist(stacked, per_day)
            for estimator in ESTIMATORS:
                e = _paired(estimator, stacked, control, dist, reference)
                out.append(
                    SliceResult(
                        k,
                        dates[chunk[0]],
                        dates[chunk[-1]],
                        stacked.n,
                        target,
                        estimator,
                        true_value,
                        e.value,
                        e.std_err,
                        e.ci_low,
                        e.ci_high,
                    )
                )
    return out


def _truth_of(day: LoggedDay, truth: DayTruth) -> np.ndarray:
    """``(n, A)`` the truth of the day's logged decisions, in the day's rows and labels."""
    if truth.labels != day.labels:
        raise ValueError(f"{day.run_date}: the logged actions differ from the recorded ones")
    rows = np.fromiter((truth.row_of[c] for c in day.customer_ids), np.int64, day.n)
    return truth.values[rows]


def _for_estimation(days: list[LoggedDay]) -> list[LoggedDay]:
    """Map control decisions to "send nothing" (what they observed, for the reward model) and
    give each decision its logged probability of being observed as it was (``propensity``:
    the policy's probability times the test share); controls get 1, unused (no weight)."""
    out = []
    for d in days:
        action = d.action.copy()
        action[d.control] = d.labels.index(NO_SEND_LABEL)
        pscore = np.where(d.control, 1.0, d.propensity)
        out.append(dataclasses.replace(d, action=action, policy_prob=pscore))
    return out


def _stacked_dist(stacked: Stacked, per_day: list[np.ndarray]) -> np.ndarray:
    """``(n, L)`` per-day distributions ``(n_d, A_d)`` in the stacked columns."""
    out = np.zeros((stacked.n, stacked.width))
    row = 0
    for dist, cols in zip(per_day, stacked.columns, strict=True):
        out[row : row + len(dist), cols] = dist
        row += len(dist)
    return out


def _paired(
    estimator: str,
    stacked: Stacked,
    control: np.ndarray,
    dist: np.ndarray,
    reference: np.ndarray,
) -> Estimate:
    """``estimator``'s estimate of ``V(dist) - V(reference)``, all three as paired DR terms.

    ``paired_difference`` computes ``Σ_a π(a|x) q̂(x, a) + π(a_i|x) (r - q̂(x, a_i)) / p``
    per decision minus the same for the reference: with ``q̂ = 0`` that is the paired IPS
    term, with ``r = q̂(x, a_i)`` the paired direct method. A control decision's reward is
    replaced so that its importance term vanishes (it observed no sample of its action):
    ``q̂(x, a_i)`` for DR, 0 for IPS. One function, so the three share the cluster-robust
    standard error (by customer).
    """
    rows = np.arange(stacked.n)
    fitted = stacked.estimated[rows, stacked.action]
    if estimator == "ips":
        reward = np.where(control, 0.0, stacked.reward)
        model = np.zeros_like(stacked.estimated)
    elif estimator == "dm":
        reward, model = fitted, stacked.estimated
    elif estimator == "dr":
        reward = np.where(control, fitted, stacked.reward)
        model = stacked.estimated
    else:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    return paired_difference(
        reward,
        stacked.action,
        stacked.pscore,
        dist,
        reference,
        model,
        clusters=stacked.clusters,
    )
