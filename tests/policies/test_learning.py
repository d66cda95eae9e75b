"""Trained on uniformly logged data, the learners beat uniform choice on fresh customers.

Three customer types with a type-specific best action among six; contexts carry the type as a
one-hot group next to a noise column and an unscaled money column (as the engine sends them).
Each policy learns from the same seeded log; its *true* value on fresh customers is the mean of
``Σ_a π(a|x) μ(type, a)``, so the only noise is the draw of customers, and the margin over
uniform is required to exceed four standard errors of the paired per-customer difference.
"""

from __future__ import annotations

import numpy as np
import pytest

from policies import POLICIES, Policy
from policies.epsilon_greedy import EpsilonGreedy

N_TYPES, N_ACTIONS = 3, 6
BEST = np.array([0, 2, 4])
MEAN = np.full((N_TYPES, N_ACTIONS), 0.30)
MEAN[np.arange(N_TYPES), BEST] = 0.70
MEAN[np.arange(N_TYPES), BEST + 1] = 0.45  # a runner-up per type
# Each action's identity, plus a numeric treatment feature shared by some of them.
FEATURES = np.column_stack([np.eye(N_ACTIONS), np.tile([0.0, 0.2], 3)])
NAMES = ["type=a", "type=b", "type=c", "noise", "monetary"]


def _customers(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    kind = rng.integers(0, N_TYPES, n)
    x = np.column_stack([np.eye(N_TYPES)[kind], rng.normal(size=n), rng.lognormal(5, 1, n)])
    return kind, x.astype(np.float32)


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    kind, x = _customers(rng, 3000)
    action = rng.integers(0, N_ACTIONS, len(kind))
    reward = (rng.random(len(kind)) < MEAN[kind, action]).astype(float)
    test_kind, test_x = _customers(rng, 4000)
    eligible = rng.random((4000, N_ACTIONS)) < 0.8
    eligible[np.arange(4000), rng.integers(0, N_ACTIONS, 4000)] = True
    return {
        "x": x,
        "action": action,
        "reward": reward,
        "test_kind": test_kind,
        "test_x": test_x,
        "eligible": eligible,
    }


def _true_value(policy: Policy, world: dict[str, np.ndarray]) -> np.ndarray:
    dist = policy.action_dist(world["test_x"], FEATURES, world["eligible"])
    return (dist * MEAN[world["test_kind"]]).sum(axis=1)


def _margin_over_uniform(policy: Policy, world: dict[str, np.ndarray]) -> tuple[float, float]:
    policy.update(
        world["x"],
        FEATURES,
        world["action"],
        world["reward"],
        np.full(len(world["action"]), 1 / N_ACTIONS),
    )
    diff = _true_value(policy, world) - _true_value(POLICIES["uniform"](), world)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


@pytest.mark.parametrize("name", ["lints", "vw"])
def test_learners_clearly_beat_uniform(name: str, world: dict[str, np.ndarray]) -> None:
    margin, se = _margin_over_uniform(POLICIES[name](), world)
    assert margin > 4 * se, (margin, se)
    assert margin > 0.15  # of a possible ~0.26: the best action most of the time


def test_egreedy_is_not_worse_than_uniform(world: dict[str, np.ndarray]) -> None:
    policy = EpsilonGreedy(segment_by="type")
    policy.set_feature_names(NAMES)
    margin, se = _margin_over_uniform(policy, world)
    assert margin > -4 * se
    assert margin > 4 * se, (margin, se)  # with the type as its segment it does learn


def test_egreedy_without_segments_is_not_worse_than_uniform(
    world: dict[str, np.ndarray],
) -> None:
    margin, se = _margin_over_uniform(EpsilonGreedy(), world)
    assert margin > -4 * se, (margin, se)
