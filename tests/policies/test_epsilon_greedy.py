"""Per-segment epsilon-greedy: segments by name or index, shrinkage, ties, state."""

from __future__ import annotations

import numpy as np
import pytest

from policies.epsilon_greedy import EpsilonGreedy

NAMES = ["monetary", "lifecycle_stage=new", "lifecycle_stage=active", "rfm_cell=lost"]
FEATURES = np.eye(3)


def _rows(stage: str, n: int, monetary: float = 100.0) -> np.ndarray:
    row = [monetary, stage == "new", stage == "active", 0.0]
    return np.tile(np.array(row, np.float32), (n, 1))


def _log(policy: EpsilonGreedy) -> EpsilonGreedy:
    """New customers like action 0 (mean 1), active ones action 2 (mean 2); the rest pay 0."""
    x = np.vstack([_rows("new", 30), _rows("active", 30)])
    for action in range(3):
        rewards = np.zeros(60)
        if action == 0:
            rewards[:30] = 1.0
        if action == 2:
            rewards[30:] = 2.0
        policy.update(x, FEATURES, np.full(60, action), rewards, np.full(60, 1 / 3))
    return policy


def test_segments_by_feature_name() -> None:
    policy = EpsilonGreedy(epsilon=0.3)
    policy.set_feature_names(NAMES)
    _log(policy)
    eligible = np.ones((3, 3), bool)
    probe = np.vstack([_rows("new", 1), _rows("active", 1), _rows("none", 1)])
    dist = policy.action_dist(probe, FEATURES, eligible)
    assert np.allclose(dist[0], [0.8, 0.1, 0.1])
    assert np.allclose(dist[1], [0.1, 0.1, 0.8])
    # A segment never seen borrows each action's mean over all segments: action 2 pays 1.
    assert np.allclose(dist[2], [0.1, 0.1, 0.8])


def test_without_names_there_is_one_global_segment() -> None:
    policy = _log(EpsilonGreedy(epsilon=0.3))
    dist = policy.action_dist(_rows("new", 1), FEATURES, np.ones((1, 3), bool))
    assert np.allclose(dist, [[0.1, 0.1, 0.8]])  # globally action 2 pays most


def test_segment_columns_by_index() -> None:
    policy = _log(EpsilonGreedy(epsilon=0.0, segment_columns=[1, 2]))
    dist = policy.action_dist(_rows("new", 1), FEATURES, np.ones((1, 3), bool))
    assert np.allclose(dist, [[1.0, 0.0, 0.0]])


def test_shrinkage_uses_prior_count() -> None:
    policy = EpsilonGreedy(epsilon=0.0, segment_columns=[1, 2], prior_count=2.0)
    policy.update(_rows("new", 1), FEATURES, np.array([1]), np.array([3.0]), np.ones(1))
    policy.update(_rows("active", 3), FEATURES, np.array([0, 0, 0]), np.full(3, 1.0), np.ones(3))
    scores = policy.scores(_rows("new", 1), FEATURES, np.ones((1, 3), bool))
    overall = 6.0 / 4.0
    action0 = (3.0 + 2.0 * overall) / (3.0 + 2.0)  # its global mean, shrunk to the overall
    action1 = (3.0 + 2.0 * overall) / (1.0 + 2.0)
    new0 = (0.0 + 2.0 * action0) / (0.0 + 2.0)  # never tried by "new": the global mean
    new1 = (3.0 + 2.0 * action1) / (1.0 + 2.0)
    assert np.allclose(scores, [[new0, new1, overall]])


def test_ties_split_the_greedy_share_and_ineligible_get_nothing() -> None:
    policy = EpsilonGreedy(epsilon=0.2)
    eligible = np.array([[True, False, True], [False, False, False]])
    dist = policy.action_dist(_rows("new", 2), FEATURES, eligible)
    assert np.allclose(dist, [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])


def test_state_round_trips_segments_and_actions_by_identity() -> None:
    policy = EpsilonGreedy(epsilon=0.0)
    policy.set_feature_names(NAMES)
    _log(policy)
    restored = EpsilonGreedy(epsilon=0.0)
    restored.set_state(policy.get_state())
    # A new column order and a new action order: segments by name, actions by features.
    restored.set_feature_names(["lifecycle_stage=active", "lifecycle_stage=new", "monetary"])
    probe = np.array([[0.0, 1.0, 10.0]], np.float32)  # a "new" customer
    reordered = FEATURES[[2, 0, 1]]
    dist = restored.action_dist(probe, reordered, np.ones((1, 3), bool))
    assert np.allclose(dist, [[0.0, 1.0, 0.0]])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedy(epsilon=1.5)
    policy = EpsilonGreedy(segment_columns=[7])
    with pytest.raises(ValueError, match="segment column 7"):
        policy.update(_rows("new", 1), FEATURES, np.array([0]), np.ones(1), np.ones(1))
