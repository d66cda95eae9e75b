"""Off-policy estimators: hand-computed values, direct formulas, input errors, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.measure.ope import ESTIMATORS, estimate_policy_value, fit_estimated_rewards

Z95 = 1.959963984540054


def test_hand_computed_small_case() -> None:
    reward = np.array([1.0, 0.0, 2.0])
    action = np.array([0, 1, 1])
    pscore = np.array([0.5, 0.25, 0.5])
    dist = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    q = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    est = estimate_policy_value(reward, action, pscore, dist, q, estimators=ESTIMATORS)
    # w = [0.2/0.5, 0.5/0.25, 0/0.5] = [0.4, 2, 0]
    assert est["ips"].value == pytest.approx((0.4 * 1 + 2 * 0 + 0) / 3)
    assert est["snips"].value == pytest.approx(0.4 / 2.4)
    # direct = [0.2*1 + 0.8*0, 0.5*0 + 0.5*1, 1*2] = [0.2, 0.5, 2]
    assert est["dm"].value == pytest.approx((0.2 + 0.5 + 2.0) / 3)
    # dr = direct + w (r - q[a]) = [0.2 + 0.4*0, 0.5 + 2*(0-1), 2 + 0] = [0.2, -1.5, 2]
    assert est["dr"].value == pytest.approx((0.2 - 1.5 + 2.0) / 3)
    terms = np.array([0.2, -1.5, 2.0])
    se = terms.std(ddof=1) / np.sqrt(3)
    assert est["dr"].std_err == pytest.approx(se)
    assert est["dr"].ci_low == pytest.approx(terms.mean() - Z95 * se)
    assert est["dr"].ci_high == pytest.approx(terms.mean() + Z95 * se)
    assert all(e.n == 3 for e in est.values())


def test_logging_policy_evaluated_on_itself_is_the_sample_mean() -> None:
    rng = np.random.default_rng(3)
    n, n_actions = 500, 4
    logging = rng.dirichlet(np.ones(n_actions), size=n)
    action = np.array([rng.choice(n_actions, p=p) for p in logging])
    reward = rng.normal(size=n)
    pscore = logging[np.arange(n), action]
    est = estimate_policy_value(reward, action, pscore, logging, estimators=("ips", "snips"))
    assert est["ips"].value == pytest.approx(reward.mean())
    assert est["snips"].value == pytest.approx(reward.mean())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), n_actions=st.integers(1, 5))
def test_match_the_direct_formulas(seed: int, n: int, n_actions: int) -> None:
    rng = np.random.default_rng(seed)
    action = rng.integers(0, n_actions, n)
    pscore = rng.uniform(0.05, 1.0, n)
    reward = rng.normal(size=n)
    dist = rng.dirichlet(np.ones(n_actions), size=n)
    q = rng.normal(size=(n, n_actions))
    est = estimate_policy_value(reward, action, pscore, dist, q, estimators=ESTIMATORS)
    ips = sum(dist[i, action[i]] / pscore[i] * reward[i] for i in range(n)) / n
    weights = [dist[i, action[i]] / pscore[i] for i in range(n)]
    snips = sum(w * r for w, r in zip(weights, reward, strict=True)) / sum(weights)
    dm = sum(sum(dist[i, a] * q[i, a] for a in range(n_actions)) for i in range(n)) / n
    dr = dm + sum(weights[i] * (reward[i] - q[i, action[i]]) for i in range(n)) / n
    assert est["ips"].value == pytest.approx(ips)
    assert est["snips"].value == pytest.approx(snips)
    assert est["dm"].value == pytest.approx(dm)
    assert est["dr"].value == pytest.approx(dr)
    for e in est.values():
        assert e.ci_low <= e.value <= e.ci_high


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pscore": np.array([0.5, 0.0, 0.5])}, "pscore"),
        ({"pscore": np.array([0.5, 1.5, 0.5])}, "pscore"),
        ({"action": np.array([0, 2, 1])}, "action must be in"),
        ({"action": np.array([0.0, 1.0, 1.0])}, "integers"),
        ({"reward": np.array([1.0, 0.0])}, "shape"),
        ({"action_dist": np.ones((3, 2))}, "sum to 1"),
        ({"action_dist": np.full((2, 2), 0.5)}, "action_dist must have shape"),
        ({"estimated_rewards": np.zeros((3, 3))}, "estimated_rewards must have shape"),
        ({"estimated_rewards": None}, "need estimated_rewards"),
        ({"estimators": ("ips", "magic")}, "unknown estimator"),
    ],
)
def test_bad_inputs_are_refused(change: dict, message: str) -> None:
    args = {
        "reward": np.array([1.0, 0.0, 2.0]),
        "action": np.array([0, 1, 1]),
        "pscore": np.array([0.5, 0.5, 0.5]),
        "action_dist": np.full((3, 2), 0.5),
        "estimated_rewards": np.zeros((3, 2)),
        "estimators": ("ips", "snips", "dr"),
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        estimate_policy_value(**args)


def test_snips_without_overlap_is_nan() -> None:
    est = estimate_policy_value(
        np.ones(2), np.array([0, 0]), np.full(2, 0.5), np.array([[0.0, 1.0]] * 2), None, ("snips",)
    )
    assert np.isnan(est["snips"].value)


def test_fit_estimated_rewards_recovers_a_linear_model() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.normal(size=(n, 2)) * np.array([1.0, 500.0])
    action = rng.integers(0, 3, n)
    truth = np.column_stack([1 + x[:, 0], 2 - x[:, 0], 0.5 + x[:, 1] / 500])
    reward = truth[np.arange(n), action] + rng.normal(scale=0.1, size=n)
    q = fit_estimated_rewards(x, action, reward, 3, n_folds=2)
    assert np.abs(q - truth).max() < 0.1
    unseen = fit_estimated_rewards(x, np.zeros(n, int), reward, 2)
    assert np.allclose(unseen[:, 1], unseen[:, 1].mean(), atol=0.2)  # no data: the fold mean


def _simulate(rng: np.random.Generator, n: int):
    """A context-dependent logging policy and a known target policy over 3 actions."""
    x = rng.normal(size=(n, 2))
    mean = np.column_stack(
        [0.5 + 0.5 * x[:, 0], 0.8 - 0.3 * x[:, 1], 0.3 + 0.2 * x[:, 0] * x[:, 1]]
    )
    logits = np.column_stack([x[:, 0], -x[:, 0], 0.5 * x[:, 1]])
    logging = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    logging = 0.8 * logging + 0.2 / 3  # keeps every propensity >= 0.067
    greedy = np.eye(3)[mean.argmax(axis=1)]
    target = 0.7 * greedy + 0.3 / 3
    return x, mean, logging, target


def test_intervals_cover_the_true_value_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(2024)
    x, mean, _, target = _simulate(rng, 1_000_000)
    truth = float((target * mean).sum(axis=1).mean())  # Monte Carlo error ~ 3e-4
    reps, n = 200, 800
    covered = {name: 0 for name in ("ips", "snips", "dr")}
    for _ in range(reps):
        x, mean, logging, target = _simulate(rng, n)
        cum = logging.cumsum(axis=1)
        action = (rng.random(n)[:, None] > cum).sum(axis=1)
        reward = mean[np.arange(n), action] + rng.normal(scale=1.0, size=n)
        pscore = logging[np.arange(n), action]
        q = fit_estimated_rewards(x, action, reward, 3, n_folds=2, seed=int(rng.integers(1 << 30)))
        est = estimate_policy_value(reward, action, pscore, target, q)
        for name, e in est.items():
            covered[name] += e.ci_low <= truth <= e.ci_high
    tolerance = 3 * np.sqrt(0.95 * 0.05 / reps)  # three binomial standard errors
    for name, hits in covered.items():
        assert abs(hits / reps - 0.95) <= tolerance, (name, hits / reps)
