"""How much of the oracle's value a scenario lets a learner reach: the ceiling behind issue 9's
figure ("`lints` at least 80% of the oracle").

Logs a `uniform` contender through the closed loop and keeps, for each decision from
``--from-day`` on, the context the policy saw, the eligible actions and the world's exact
incremental value of every one of them. Then, per decision (not per customer-day: the closed
loop's share also depends on when each customer is contacted):

- ceilings with *noise-free* values: the best single action, a per-persona choice (knows the
  hidden persona), a linear model per action on the context (fit on half, judged on the other),
  none of which a learner can beat with these features;
- what `lints` itself reaches when trained on N logged decisions whose rewards are the true value
  plus noise with each customer's own spending variance (its purchase rate and order value in
  the world: the noise the real loop sees, without the baseline's own error), for several N.

    python benchmarks/bench_learnability.py                     # standard, 20k customers
    python benchmarks/bench_learnability.py --scenario drift --sizes 20000,60000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL, build_actions
from orchestrator.engine.hashing import Draws
from orchestrator.plan import Plan
from orchestrator.storage.run_repo import load_contexts
from policies.lin_ts import LinearTS
from simulations.loop import run_contender
from simulations.scenario import Scenario, load_scenario
from simulations.world import World


def capture(spec: Scenario, customers: int, days: int, from_day: int) -> dict[str, Any]:
    """Contexts, eligible sets and true values (n, A) of a uniform run's decisions."""
    world = World(spec, customers=customers, seed=spec.seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    names: list[str] = []
    labels: list[str] = []

    def hook(engine: sa.Engine, day: date) -> None:
        if (day - spec.start).days < from_day:
            return
        with engine.connect() as conn:
            ctx = load_contexts(conn, [day]).get(day)
        if ctx is None:
            return
        names[:], labels[:] = ctx.names, ctx.actions
        ids = sorted(ctx.row_of, key=ctx.row_of.__getitem__)
        rows = world.rows_of(ids)
        values = world.expected_incremental(day, rows, ctx.actions)
        # Spending variance over one day without contact: rate x value^2 x E[lognormal^2].
        noise = world._rate_now[rows] * world._value[rows] ** 2 * np.exp(spec.amount_noise**2)
        parts.append((ctx.matrix.astype(np.float64), ctx.eligible, values, noise))
        persona.append(world.persona[rows])

    persona: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'uniform.db'}"
        run_contender(
            spec, "uniform", customers, days, spec.seed, url, world=world, on_decided=hook
        )
    return {
        "names": names,
        "labels": labels,
        "x": np.vstack([p[0] for p in parts]),
        "eligible": np.vstack([p[1] for p in parts]),
        "values": np.vstack([p[2] for p in parts]),
        "noise_per_day": np.concatenate([p[3] for p in parts]),
        "persona": np.concatenate(persona),
    }


def value_of(pred: np.ndarray, eligible: np.ndarray, values: np.ndarray) -> float:
    """Mean true value of choosing each row's argmax of ``pred`` among its eligible actions."""
    choice = np.where(eligible, pred, -np.inf).argmax(axis=1)
    return float(values[np.arange(len(values)), choice].mean())


def ceilings(data: dict[str, Any], train: np.ndarray) -> dict[str, float]:
    x, eligible, values = data["x"], data["eligible"], data["values"]
    test = ~train
    e, v = eligible[test], values[test]
    out = {"oracle": float(np.where(e, v, -np.inf).max(axis=1).mean())}
    no_send = data["labels"].index(NO_SEND_LABEL)
    singles = []
    for j in range(v.shape[1]):
        pred = np.zeros(v.shape)
        pred[:, j] = 1.0
        pred[:, no_send] = 0.5
        singles.append(value_of(pred, e, v))
    out["best single action"] = max(singles)
    out["uniform"] = float(np.nanmean(np.where(e, v, np.nan), axis=1).mean())
    persona = data["persona"]
    pred = np.zeros(values.shape)
    for p in np.unique(persona):
        for j in range(values.shape[1]):
            sel = train & (persona == p) & eligible[:, j]
            pred[persona == p, j] = values[sel, j].mean() if sel.any() else -np.inf
    out["per-persona choice (hidden persona known)"] = value_of(pred[test], e, v)
    z = np.column_stack([np.ones(len(x)), (x - x.mean(0)) / np.maximum(x.std(0), 1e-9)])
    pred = np.zeros(values.shape)
    for j in range(values.shape[1]):
        sel = train & eligible[:, j]
        if sel.sum() > z.shape[1]:
            pred[:, j] = z @ np.linalg.lstsq(z[sel], values[sel, j], rcond=None)[0]
    out["linear per action, noise-free values"] = value_of(pred[test], e, v)
    return out


def lints_on_noisy_logs(
    data: dict[str, Any], spec: Scenario, train: np.ndarray, size: int, seed: int
) -> tuple[float, float]:
    """(greedy, Thompson) value per decision of `lints` trained on ``size`` uniform decisions."""
    rng = np.random.default_rng(seed)
    x, eligible, values = data["x"], data["eligible"], data["values"]
    actions = build_actions(Plan.model_validate(spec.plan), spec.start)
    features = actions.features
    window = np.array([actions.no_send_days] * actions.n_actions, dtype=float)
    for j in range(actions.n_actions):
        c = actions.campaign_of[j]
        if j != actions.no_send:
            window[j] = actions.measurement_days[c]
    idx = rng.choice(np.flatnonzero(train), size)
    chosen = np.array([rng.choice(np.flatnonzero(eligible[i])) for i in idx])
    sd = np.sqrt(window[chosen] * data["noise_per_day"][idx])
    reward = values[idx, chosen] + rng.normal(0.0, 1.0, size) * sd
    policy = LinearTS(half_life=None)
    policy.set_feature_names(data["names"])
    for part in np.array_split(np.arange(size), 30):  # one update per simulated day
        policy.update(x[idx[part]], features, chosen[part], reward[part], np.ones(len(part)))
    test = np.flatnonzero(~train)
    e, v = eligible[test], values[test]
    greedy = value_of(policy.scores(x[test], features, e), e, v)
    draw = policy.choose(x[test], features, e, Draws.seeded(len(test), seed)).action
    return greedy, float(v[np.arange(len(test)), draw].mean())


def load_or_capture(args: argparse.Namespace, spec: Scenario) -> dict[str, Any]:
    """The captured logs, from ``--cache`` when it exists (the capture takes minutes)."""
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache, allow_pickle=False) as f:
            data: dict[str, Any] = {k: f[k] for k in f.files}
        data["names"], data["labels"] = list(data["names"]), list(data["labels"])
        return data
    data = capture(spec, args.customers, args.from_day + args.capture_days, args.from_day)
    if args.cache is not None:
        np.savez(args.cache, **{k: np.asarray(v) for k, v in data.items()})
    return data


def report(rows: Sequence[tuple[str, float]], oracle: float) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'per decision':<{width}}  {'value':>8}  {'share':>6}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>+8.3f}  {value / oracle:>6.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="standard")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--from-day", type=int, default=30)
    ap.add_argument("--capture-days", type=int, default=6)
    ap.add_argument("--sizes", default="20000,60000,120000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--cache", type=Path, help="an .npz file: read the captured logs from it, or write them"
    )
    args = ap.parse_args()
    spec = load_scenario(args.scenario)
    started = time.perf_counter()
    data = load_or_capture(args, spec)
    n = len(data["x"])
    last = args.from_day + args.capture_days - 1
    took = time.perf_counter() - started
    print(
        f"{args.scenario}: {n:,} decisions of a uniform run, "
        f"days {args.from_day}-{last} ({took:.0f} s)"
    )
    train = np.random.default_rng(0).random(n) < 0.7
    found = ceilings(data, train)
    oracle = found.pop("oracle")
    rows = list(found.items())
    for size in (int(s) for s in args.sizes.split(",")):
        runs = [lints_on_noisy_logs(data, spec, train, size, seed) for seed in range(args.seeds)]
        greedy, draw = np.mean(runs, axis=0)
        rows.append((f"lints on {size:,} noisy decisions, greedy", float(greedy)))
        rows.append((f"lints on {size:,} noisy decisions, Thompson", float(draw)))
    print(f"oracle per decision: {oracle:+.3f}")
    report(rows, oracle)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
