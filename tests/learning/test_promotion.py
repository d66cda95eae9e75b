"""The promotion rule on synthetic logs with known values: it promotes a clearly better
candidate and refuses a clearly worse one, through the estimator the learning loop uses."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.learning.learn import promotion
from orchestrator.measure.ope import fit_estimated_rewards, paired_difference


def _log(seed: int, n: int, n_actions: int, effect: float, noise: float):
    """Contexts, a uniform logging policy, rewards with a known mean per (context, action):
    the best action's index depends on the sign of the first context column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    best = np.where(x[:, 0] > 0, 0, n_actions - 1)
    mean = np.zeros((n, n_actions))
    mean[np.arange(n), best] = effect
    action = rng.integers(0, n_actions, n)
    # A large common part (what customers spend anyway, which their history predicts well)
    # that any policy earns alike.
    common = 40.0 + 15.0 * x[:, 1] + rng.normal(0, 2.0, n)
    reward = common + mean[np.arange(n), action] + rng.normal(0, noise, n)
    pscore = np.full(n, 1.0 / n_actions)
    good = np.zeros((n, n_actions))
    good[np.arange(n), best] = 1.0
    bad = np.zeros((n, n_actions))
    bad[np.arange(n), (best + 1) % n_actions] = 1.0
    q = fit_estimated_rewards(x, action, reward, n_actions, n_folds=2, seed=seed)
    return reward, action, pscore, good, bad, q, mean


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    n_actions=st.integers(2, 5),
    effect=st.floats(3.0, 6.0),
    rule=st.sampled_from(["not_worse_than_active", "lcb_beats_active", "estimate_beats_active"]),
)
def test_a_clearly_better_candidate_is_promoted_and_a_worse_one_refused(
    seed: int, n_actions: int, effect: float, rule: str
) -> None:
    n = 6000
    reward, action, pscore, good, bad, q, mean = _log(seed, n, n_actions, effect, 5.0)
    uniform = np.full((n, n_actions), 1.0 / n_actions)
    true_gap = float((good * mean).sum(axis=1).mean() - (uniform * mean).sum(axis=1).mean())
    better = paired_difference(reward, action, pscore, good, uniform, q)
    # Clearly better: the true gap is many standard errors wide.
    assert true_gap > 6 * better.std_err
    assert promotion(better, rule, has_active=True)[0]
    worse = paired_difference(reward, action, pscore, bad, good, q)
    assert not promotion(worse, rule, has_active=True)[0]
    # With nothing active the reference is what was done (uniform): a clearly better first
    # policy starts, a clearly worse one does not.
    first_good = paired_difference(reward, action, pscore, good, None, q)
    first_bad = paired_difference(reward, action, pscore, bad, None, q)
    uniform_value = float((uniform * mean).sum(axis=1).mean())
    assert promotion(first_good, rule, has_active=False)[0]
    if uniform_value > 6 * first_bad.std_err:  # clearly worse than what was done
        assert not promotion(first_bad, rule, has_active=False)[0]


def test_manual_never_promotes() -> None:
    reward, action, pscore, good, _, q, _ = _log(0, 2000, 3, 5.0, 5.0)
    diff = paired_difference(reward, action, pscore, good, None, q)
    assert diff.ci_low > 0 and not promotion(diff, "manual", has_active=True)[0]


def test_pairing_cancels_the_common_part() -> None:
    """The paired interval is far narrower than the two separate intervals' width, because
    what customers spend anyway is earned by both policies."""
    n, n_actions = 4000, 3
    reward, action, pscore, good, _, q, _ = _log(1, n, n_actions, 3.0, 5.0)
    uniform = np.full((n, n_actions), 1.0 / n_actions)
    diff = paired_difference(reward, action, pscore, good, uniform, q)
    alone = paired_difference(reward, action, pscore, good, None, np.zeros_like(q))
    assert diff.std_err < alone.std_err / 3


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000))
def test_cluster_robust_errors_are_wider_for_repeated_customers(seed: int) -> None:
    """Ten decisions per customer that move together carry less information than ten
    customers' decisions: the cluster-robust standard error says so."""
    rng = np.random.default_rng(seed)
    n, n_actions = 3000, 2
    customer = np.repeat(np.arange(n // 10), 10)
    action = np.zeros(n, dtype=np.int64)  # logged with certainty: each term is its reward
    reward = rng.normal(0, 10, n // 10)[customer] + rng.normal(0, 1, n)
    dist = np.tile([1.0, 0.0], (n, 1))
    ref = np.tile([0.5, 0.5], (n, 1))
    q = np.zeros((n, n_actions))
    pscore = np.ones(n)
    plain = paired_difference(reward, action, pscore, dist, ref, q)
    robust = paired_difference(reward, action, pscore, dist, ref, q, clusters=customer)
    assert robust.std_err > 2 * plain.std_err
