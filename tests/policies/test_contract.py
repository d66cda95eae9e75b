"""The contract every registered policy keeps; a new policy in ``POLICIES`` is tested here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from orchestrator.engine.hashing import Draws
from orchestrator.errors import StateVersionError
from policies import POLICIES, Policy
from policies.base import _MAGIC

N_FEATURES, N_ACTION_FEATURES = 4, 3


def make(name: str) -> Policy:
    return POLICIES[name]()


@st.composite
def batches(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 30))
    n_actions = draw(st.integers(1, 6))
    floats = st.floats(-3, 3, allow_nan=False, width=32)
    contexts = draw(arrays(np.float32, (n, N_FEATURES), elements=floats))
    action_features = draw(arrays(np.float64, (n_actions, N_ACTION_FEATURES), elements=floats))
    eligible = draw(arrays(np.bool_, (n, n_actions)))
    return contexts, action_features, eligible


def _trained(name: str) -> Policy:
    """A policy after one update on logged data, so state is not trivially empty."""
    rng = np.random.default_rng(0)
    policy = make(name)
    n, n_actions = 200, 5
    contexts = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    action_features = rng.normal(size=(n_actions, N_ACTION_FEATURES))
    actions = rng.integers(0, n_actions, n)
    rewards = rng.normal(size=n)
    policy.update(contexts, action_features, actions, rewards, np.full(n, 1 / n_actions))
    return policy


def test_each_policy_is_registered_under_its_own_name() -> None:
    """The registry names modules lazily: a name that drifts from the class's is caught here."""
    assert {name: POLICIES[name].name for name in POLICIES} == {name: name for name in POLICIES}


@pytest.mark.parametrize("name", sorted(POLICIES))
class TestContract:
    @settings(max_examples=40, deadline=None)
    @given(batch=batches(), seed=st.integers(0, 2**32 - 1))
    def test_choices_are_eligible_and_propensities_valid(self, name, batch, seed) -> None:
        contexts, action_features, eligible = batch
        copies = [a.copy() for a in batch]
        choice = _trained(name).choose(
            contexts, action_features, eligible, Draws.seeded(len(contexts), seed)
        )
        for original, copy in zip(batch, copies, strict=True):
            assert np.array_equal(original, copy), "inputs were mutated"
        rows = np.arange(len(eligible))
        has = eligible.any(axis=1)
        assert (choice.action[~has] == -1).all() and (choice.propensity[~has] == 0).all()
        assert eligible[rows[has], choice.action[has]].all(), "chose an ineligible action"
        p = choice.propensity[has]
        assert ((p > 0) & (p <= 1)).all()
        dist = choice.action_dist
        assert np.allclose(dist[rows[has], choice.action[has]], p)
        assert (dist[~eligible] == 0).all()
        assert np.allclose(dist[has].sum(axis=1), 1.0)

    @settings(max_examples=20, deadline=None)
    @given(batch=batches(), seed=st.integers(0, 2**32 - 1))
    def test_seeded_runs_repeat(self, name, batch, seed) -> None:
        policy = _trained(name)
        a = policy.choose(*batch, Draws.seeded(len(batch[0]), seed))
        b = policy.choose(*batch, Draws.seeded(len(batch[0]), seed))
        assert np.array_equal(a.action, b.action)
        assert np.array_equal(a.propensity, b.propensity)

    def test_state_round_trips(self, name) -> None:
        policy = _trained(name)
        state = policy.get_state()
        assert state.startswith(_MAGIC)
        restored = make(name)
        restored.set_state(state)
        rng = np.random.default_rng(1)
        contexts = rng.normal(size=(50, N_FEATURES)).astype(np.float32)
        action_features = rng.normal(size=(5, N_ACTION_FEATURES))
        eligible = rng.random((50, 5)) < 0.7
        a = policy.choose(contexts, action_features, eligible, Draws.seeded(50, 2))
        b = restored.choose(contexts, action_features, eligible, Draws.seeded(50, 2))
        assert np.array_equal(a.action, b.action)
        assert np.allclose(a.action_dist, b.action_dist)
        assert restored.get_state() == state

    def test_foreign_or_newer_state_is_refused(self, name) -> None:
        policy = make(name)
        with pytest.raises(StateVersionError, match="not a policy state"):
            policy.set_state(b"garbage")
        other = next((k for k in POLICIES if k != name), None)
        if other is not None:
            with pytest.raises(StateVersionError, match="cannot load"):
                policy.set_state(make(other).get_state())
        state = policy.get_state()
        newer = state.replace(
            f'"version": {policy.state_version}'.encode(),
            f'"version": {policy.state_version + 1}'.encode(),
        )
        with pytest.raises(StateVersionError, match="newer than this orch"):
            make(name).set_state(newer)
