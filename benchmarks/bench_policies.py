"""Benchmark the learning policies side by side on the same inputs.

Seeded inputs like a daily run's: ``--customers`` contexts of ``--features`` columns (raw money
and counts, 0/1 flags, a one-hot lifecycle stage), ``--actions`` (campaign, treatment) pairs with
the engine's hashed action features, eligibility masks that differ per customer (80% of the
actions), and as many uniformly logged decisions with rewards for learning. Times (best of
``--repeats``):

* ``choose`` (scoring + sampling, what the run calls) and ``update`` of every policy;
* mabwiser's ``LinUCB.predict`` on the same contexts (a plain numpy LinUCB if mabwiser is not
  installed; neither handles eligibility nor returns propensities);
* a bare Python loop of VW predictions over the exact example texts the ``vw`` policy builds
  (built beforehand, not timed), through the same low-level calls, and through the public
  ``Workspace.predict``.

Contenders that are compared run alternately (VW: on each batch of 10,000 customers), so a
load spike from another process hits both.

BLAS runs single-threaded unless ``--blas-threads`` says otherwise, so figures are per core and
do not depend on what else the machine runs; every contender gets the same setting.

    python benchmarks/bench_policies.py                  # 100k customers, 50 actions, 20 features
    python benchmarks/bench_policies.py --profile lints  # cProfile of one policy's choose
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--actions", type=int, default=50)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1, help="0: leave BLAS alone")
    parser.add_argument("--profile", choices=["lints", "egreedy", "vw"], default=None)
    return parser.parse_args()


ARGS = _parse()
if ARGS.blas_threads:  # must be set before numpy loads its BLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402
import pylibvw  # noqa: E402

sys.path.insert(0, str(ROOT))

from orchestrator.engine.actions import hash_features  # noqa: E402
from orchestrator.engine.hashing import Draws  # noqa: E402
from policies import POLICIES, Policy  # noqa: E402
from policies.vw import VowpalPolicy  # noqa: E402

STAGES = ("prospect", "new", "active", "at_risk", "lapsed", "reactivated")


def make_inputs(n: int, n_actions: int, d: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_hot = min(len(STAGES), d)
    n_num = d - n_hot
    kinds: list[Callable[[], np.ndarray]] = [
        lambda: rng.lognormal(4, 1.2, n),  # money
        lambda: rng.poisson(3, n),  # counts
        lambda: rng.integers(0, 2, n),  # flags
        lambda: rng.uniform(0, 400, n),  # days
    ]
    numeric = np.column_stack([kinds[j % 4]() for j in range(n_num)]).reshape(n, n_num)
    stage = rng.integers(0, n_hot, n)
    contexts = np.column_stack([numeric, np.eye(n_hot)[stage]]).astype(np.float32)
    names = [f"f{j}" for j in range(n_num)] + [f"lifecycle_stage={s}" for s in STAGES[:n_hot]]
    features = np.stack(
        [
            hash_features(
                {
                    f"campaign=camp{a // 2:03d}": 1.0,
                    f"channel={('email', 'sms', 'push')[(a // 2) % 3]}": 1.0,
                    "discount": 0.1 * (1 + a % 2),
                }
            )
            for a in range(n_actions)
        ]
    )
    eligible = rng.random((n, n_actions)) < 0.8
    eligible[np.arange(n), rng.integers(0, n_actions, n)] = True
    # Logged decisions: uniform actions, rewards from a hidden linear model.
    actions = rng.integers(0, n_actions, n)
    z = (contexts - contexts.mean(axis=0)) / (contexts.std(axis=0) + 1e-9)
    w = rng.normal(size=(d, n_actions)) * 0.3
    mean = 1.0 + (z @ w)[np.arange(n), actions]
    rewards = mean + rng.normal(size=n)
    return {
        "contexts": contexts,
        "names": names,
        "features": features,
        "eligible": eligible,
        "actions": actions,
        "rewards": rewards,
        "propensities": np.full(n, 1.0 / n_actions),
    }


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, float, str]] = []

    def add(self, who: str, what: str, n: int, seconds: float, note: str = "") -> float:
        self.rows.append((who, what, n, seconds, note))
        print(f"  {who:<10} {what:<28} {n / seconds:>12,.0f} /s  {note}", flush=True)
        return n / seconds

    def show(self) -> None:
        print()
        print("| policy     | operation                    |     rows |  seconds |       rows/s |")
        print("|------------|------------------------------|---------:|---------:|-------------:|")
        for who, what, n, seconds, _ in self.rows:
            print(f"| {who:<10} | {what:<28} | {n:>8} | {seconds:>8.3f} | {n / seconds:>12,.0f} |")


def learn(table: Table, name: str, policy: Policy, data: dict[str, Any]) -> None:
    n = len(data["actions"])
    args = (data["contexts"], data["features"], data["actions"], data["rewards"])

    def run() -> None:
        policy.update(*args, data["propensities"])
        if hasattr(policy, "_posterior"):
            policy._posterior()  # lints solves lazily: count the solve as learning

    # One update from a fresh policy is what is timed (learning twice would double the data).
    table.add(name, "update (learn)", n, best_of(1, run))


def choose(table: Table, name: str, policy: Policy, data: dict[str, Any], repeats: int) -> float:
    n = len(data["contexts"])

    def run() -> None:
        policy.choose(data["contexts"], data["features"], data["eligible"], Draws.seeded(n, 1))

    return table.add(name, "choose (score + sample)", n, best_of(repeats, run))


def race(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best time of each contender, runs alternating so that all see the same machine load."""
    best = dict.fromkeys(contenders, np.inf)
    for _ in range(repeats):
        for name, fn in contenders.items():
            best[name] = min(best[name], best_of(1, fn))
    return best


def linucb_predictor(data: dict[str, Any]) -> tuple[str, Callable[[], Any]]:
    """mabwiser's LinUCB fitted on the logged data, or a plain numpy LinUCB without mabwiser."""
    x = data["contexts"].astype(np.float64)
    n_actions = data["eligible"].shape[1]
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        inv = np.empty((n_actions, x.shape[1], x.shape[1]))
        theta = np.empty((n_actions, x.shape[1]))
        for a in range(n_actions):
            xa = x[data["actions"] == a]
            inv[a] = np.linalg.inv(xa.T @ xa + np.eye(x.shape[1]))
            theta[a] = inv[a] @ (xa.T @ data["rewards"][data["actions"] == a])

        def predict() -> Any:
            ucb = x @ theta.T
            for a in range(n_actions):
                ucb[:, a] += np.sqrt(np.einsum("ij,jk,ik->i", x, inv[a], x))
            return ucb.argmax(axis=1)

        return "numpy LinUCB predict", predict
    mab = MAB(list(range(n_actions)), LearningPolicy.LinUCB(alpha=1.0), seed=0)
    mab.fit(data["actions"], data["rewards"], x)
    return "mabwiser LinUCB.predict", lambda: mab.predict(x)


def lints_against_linucb(
    table: Table, policy: Policy, data: dict[str, Any], repeats: int
) -> tuple[float, float]:
    n = len(data["contexts"])
    label, predict = linucb_predictor(data)

    def run_policy() -> None:
        policy.choose(data["contexts"], data["features"], data["eligible"], Draws.seeded(n, 1))

    best = race({"lints": run_policy, "linucb": predict}, repeats)
    rate = table.add("lints", "choose (score + sample)", n, best["lints"])
    who, what = label.split(" ", 1)
    return rate, table.add(who, what, n, best["linucb"])


def vw_against_bare_loops(
    table: Table, policy: VowpalPolicy, data: dict[str, Any], repeats: int, step: int = 10_000
) -> tuple[float, float]:
    """The policy's choose against VW predictions over its own example texts, pre-built (the
    floor its Python code sits on). Batches of ``step`` rows; on each, the two alternate."""
    contexts, features, eligible = data["contexts"], data["features"], data["eligible"]
    vw = policy._vw
    parse, predict = pylibvw.vw._parse, pylibvw.vw.predict_multi
    finish = pylibvw.vw._finish_example_multi_ex
    policy_time = bare_time = 0.0
    sample: list[str] = []
    for start in range(0, len(contexts), step):
        rows = slice(start, start + step)
        texts = list(policy._prediction_texts(contexts[rows], features, eligible[rows]))
        sample = sample or texts

        def low_level(texts: list[str] = texts) -> None:
            for text in texts:
                examples = parse(vw, text)
                predict(vw, examples)
                examples[0].get_action_scores()
                finish(vw, examples)

        def run_policy(rows: slice = rows) -> None:
            n_rows = len(contexts[rows])
            policy.choose(contexts[rows], features, eligible[rows], Draws.seeded(n_rows, 1))

        best = race({"policy": run_policy, "bare": low_level}, repeats)
        policy_time += best["policy"]
        bare_time += best["bare"]

    def public() -> None:  # slow: one batch is enough
        for text in sample:
            vw.predict(text)

    n = len(contexts)
    rate = table.add("vw", "choose (score + sample)", n, policy_time)
    bare = table.add("vw", "bare loop, same calls", n, bare_time)
    table.add("vw", "bare loop, Workspace.predict", len(sample), best_of(1, public))
    return rate, bare


def main() -> None:
    args = ARGS
    print(
        f"{args.customers:,} customers, {args.actions} actions, {args.features} features; "
        f"BLAS threads: {args.blas_threads or 'default'}; best of {args.repeats}",
        flush=True,
    )
    data = make_inputs(args.customers, args.actions, args.features, args.seed)
    policies: dict[str, Policy] = {name: POLICIES[name]() for name in POLICIES}
    for policy in policies.values():
        if hasattr(policy, "set_feature_names"):
            policy.set_feature_names(data["names"])
    if args.profile:
        import cProfile
        import pstats

        policy = policies[args.profile]
        learn(Table(), args.profile, policy, data)
        profiler = cProfile.Profile()
        profiler.enable()
        choose(Table(), args.profile, policy, data, 1)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    table = Table()
    rates: dict[str, float] = {}
    rates["uniform"] = choose(table, "uniform", policies["uniform"], data, args.repeats)
    learn(table, "egreedy", policies["egreedy"], data)
    rates["egreedy"] = choose(table, "egreedy", policies["egreedy"], data, args.repeats)
    learn(table, "lints", policies["lints"], data)
    rates["lints"], rates["linucb"] = lints_against_linucb(
        table, policies["lints"], data, args.repeats
    )
    vw_policy = policies["vw"]
    assert isinstance(vw_policy, VowpalPolicy)
    learn(table, "vw", vw_policy, data)
    rates["vw"], rates["vw_bare"] = vw_against_bare_loops(table, vw_policy, data, args.repeats)
    table.show()
    print()
    print(f"lints choose / LinUCB predict: {rates['lints'] / rates['linucb']:.2f}x")
    print(f"vw choose / bare VW loop:      {rates['vw'] / rates['vw_bare']:.0%}")


if __name__ == "__main__":
    main()
