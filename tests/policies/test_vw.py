"""Vowpal Wabbit policy: PMF placement, explorers, feature names, state."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.engine.hashing import Draws
from policies.vw import EXPLORERS, VowpalPolicy

N_ACTIONS = 3
FEATURES = np.eye(N_ACTIONS)


def _train(policy: VowpalPolicy, n: int = 1500, seed: int = 0) -> VowpalPolicy:
    """Action 0 pays when x0 > 0, action 2 when x0 < 0."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.normal(size=n)]).astype(np.float32)
    a = rng.integers(0, N_ACTIONS, n)
    r = (a == np.where(x[:, 0] > 0, 0, 2)).astype(float)
    policy.update(x, FEATURES, a, r, np.full(n, 1 / N_ACTIONS))
    return policy


PROBE = np.array([[2.0, 0.0], [-2.0, 0.0]], np.float32)


def test_pmf_lands_on_the_right_eligible_columns() -> None:
    policy = _train(VowpalPolicy(explorer="epsilon", epsilon=0.1))
    full = policy.action_dist(PROBE, FEATURES, np.ones((2, 3), bool))
    assert full.argmax(axis=1).tolist() == [0, 2]
    assert np.allclose(full, [[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]])
    # Ineligible columns get nothing and each row still sums to 1.
    partial = policy.action_dist(
        PROBE, FEATURES, np.array([[False, True, True], [True, True, False]])
    )
    assert partial[0, 0] == 0 and partial[1, 2] == 0
    assert np.allclose(partial.sum(axis=1), 1.0)
    assert partial[0, 1:].min() >= 0.05 - 1e-6 and partial[1, :2].min() >= 0.05 - 1e-6


@pytest.mark.parametrize("explorer", EXPLORERS)
def test_every_explorer_gives_valid_distributions(explorer: str) -> None:
    policy = _train(VowpalPolicy(explorer=explorer), n=300)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    eligible = rng.random((40, N_ACTIONS)) < 0.6
    choice = policy.choose(x, FEATURES, eligible, Draws.seeded(len(x), 2))
    has = eligible.any(axis=1)
    assert (choice.action_dist[~eligible] == 0).all()
    assert np.allclose(choice.action_dist[has].sum(axis=1), 1.0)
    assert eligible[np.flatnonzero(has), choice.action[has]].all()
    assert (choice.propensity[has] > 0).all()


def test_learning_from_every_action_line_also_learns() -> None:
    policy = _train(VowpalPolicy(explorer="epsilon", learn_actions="all"))
    dist = policy.action_dist(PROBE, FEATURES, np.ones((2, 3), bool))
    assert dist.argmax(axis=1).tolist() == [0, 2]


def test_feature_names_are_what_vw_learns() -> None:
    policy = VowpalPolicy(explorer="epsilon")
    policy.set_feature_names(["x:score", "noise"])  # ':' must not reach VW's text format
    _train(policy)
    swapped = VowpalPolicy(explorer="epsilon")
    swapped.set_state(policy.get_state())
    swapped.set_feature_names(["noise", "x:score"])
    dist = swapped.action_dist(PROBE[:, ::-1].copy(), FEATURES, np.ones((2, 3), bool))
    assert dist.argmax(axis=1).tolist() == [0, 2]


def test_state_keeps_learning_where_it_stopped() -> None:
    original = _train(VowpalPolicy(), n=500)
    restored = VowpalPolicy()
    restored.set_state(original.get_state())
    _train(original, n=500, seed=1)
    _train(restored, n=500, seed=1)
    eligible = np.ones((2, 3), bool)
    assert np.allclose(
        original.action_dist(PROBE, FEATURES, eligible),
        restored.action_dist(PROBE, FEATURES, eligible),
    )


def test_a_model_cannot_change_its_explorer() -> None:
    state = _train(VowpalPolicy(explorer="squarecb"), n=50).get_state()
    with pytest.raises(ValueError, match="explorer='squarecb'"):
        VowpalPolicy(explorer="epsilon").set_state(state)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown explorer"):
        VowpalPolicy(explorer="softmaxx")
    with pytest.raises(ValueError, match="reward_scale"):
        VowpalPolicy(reward_scale=0)


def test_example_texts_are_plain_vw_format() -> None:
    policy = VowpalPolicy()
    policy.set_feature_names(["money", "lifecycle_stage=new", "a b|c"])
    contexts = np.array([[1.5, 1.0, -2e-8], [0.0, 0.0, 1e20], [3.0, 0.0, 0.0]], np.float32)
    features = np.array([[1.0, 0.0, -0.1], [0.0, 0.0, 0.0]])
    eligible = np.array([[True, True], [False, True], [False, False]])
    texts = list(policy._prediction_texts(contexts, features, eligible))
    assert texts == [
        "shared |c money:1.5 lifecycle_stage=new:1 a_b_c:-2e-8\n|a h0:1.0 h2:-0.1\n|a ",
        "shared |c money:0 lifecycle_stage=new:0 a_b_c:1e+20\n|a ",
    ]
    learned = list(
        policy._learning_texts(
            contexts[:1], features, np.array([1]), np.array([-2.5]), np.array([0.5]), False
        )
    )
    assert learned == ["shared |c money:1.5 lifecycle_stage=new:1 a_b_c:-2e-8\n0:-2.5:0.5 |a "]
    everything = list(
        policy._learning_texts(
            contexts[:1], features, np.array([1]), np.array([-2.5]), np.array([0.5]), True
        )
    )
    assert everything[0].endswith("\n|a h0:1.0 h2:-0.1\n0:-2.5:0.5 |a ")


def test_a_first_version_takes_its_cost_scale_from_the_rewards() -> None:
    """Money rewards become costs of order one: the scale is their standard deviation."""
    rewards = np.random.default_rng(3).normal(5.0, 25.0, 2000)
    params = VowpalPolicy.params_from_rewards(rewards)
    assert params == {"reward_scale": pytest.approx(float(np.std(rewards)))}
    assert VowpalPolicy.params_from_rewards(np.zeros(0)) == {}


@pytest.mark.parametrize("weights", [False, True])
def test_rows_weigh_one_unless_propensity_weights(
    weights: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VW's label carries the probability it divides by: 1 by default (every row weighs
    one), the logged propensity with ``propensity_weights``; the choice is a saved param."""
    policy = VowpalPolicy(propensity_weights=weights)
    fed: list[np.ndarray] = []
    real = policy._learning_texts

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        fed.append(np.array(args[4]))
        return real(*args, **kwargs)

    monkeypatch.setattr(policy, "_learning_texts", spy)
    propensities = np.array([0.5, 0.02, 0.9])
    x = np.zeros((3, 2), np.float32)
    policy.update(x, FEATURES, np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0]), propensities)
    assert np.array_equal(fed[0], propensities if weights else np.ones(3))
    assert VowpalPolicy(**policy.params()).propensity_weights is weights
