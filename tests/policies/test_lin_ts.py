"""Linear Thompson sampling: sufficient statistics, scale invariance, sampling = action_dist."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine.hashing import Draws
from policies.base import pack_arrays, unpack_arrays
from policies.lin_ts import LinearTS

N_ACTIONS = 4
FEATURES = np.column_stack([np.eye(N_ACTIONS), [0.0, 0.1, 0.2, 0.0]])


def _log(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.lognormal(6, 1, n), rng.integers(0, 2, n)])
    a = rng.integers(0, N_ACTIONS, n)
    r = np.where(a == (x[:, 0] > 0) * 2, 1.0, 0.0) + 0.001 * x[:, 1] + rng.normal(0, 0.3, n)
    return x.astype(np.float32), a, r


def _trained(**params) -> LinearTS:
    policy = LinearTS(**params)
    x, a, r = _log(0)
    policy.update(x, FEATURES, a, r, np.full(len(a), 1 / N_ACTIONS))
    return policy


def test_untrained_is_uniform_over_the_eligible() -> None:
    eligible = np.array([[True, False, True, True], [False, False, False, False]])
    dist = LinearTS().action_dist(np.zeros((2, 3), np.float32), FEATURES, eligible)
    assert np.allclose(dist, [[1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 0, 0]])


def test_incremental_updates_equal_one_update() -> None:
    x, a, r = _log(1, 600)
    p = np.full(600, 0.25)
    whole, parts = LinearTS(half_life=None), LinearTS(half_life=None)
    whole.update(x, FEATURES, a, r, p)
    for chunk in np.array_split(np.arange(600), 3):
        parts.update(x[chunk], FEATURES, a[chunk], r[chunk], p[chunk])
    probe = x[:50]
    eligible = np.ones((50, N_ACTIONS), bool)
    assert np.allclose(
        whole.scores(probe, FEATURES, eligible), parts.scores(probe, FEATURES, eligible), atol=1e-4
    )


def test_rescaling_a_context_column_changes_nothing() -> None:
    x, a, r = _log(2)
    scaled = x.copy()
    scaled[:, 1] /= 1000.0  # e.g. revenue in thousands instead of units
    p = np.full(len(a), 0.25)
    one, other = LinearTS(dtype="float64"), LinearTS(dtype="float64")
    one.update(x, FEATURES, a, r, p)
    other.update(scaled, FEATURES, a, r, p)
    eligible = np.ones((len(x), N_ACTIONS), bool)
    assert np.allclose(
        one.scores(x, FEATURES, eligible), other.scores(scaled, FEATURES, eligible), atol=1e-6
    )
    assert np.allclose(
        one.action_dist(x, FEATURES, eligible), other.action_dist(scaled, FEATURES, eligible)
    )


def test_learns_which_action_is_best() -> None:
    policy = _trained(epsilon=0.0)
    probe = np.array([[2.0, 400.0, 0.0], [-2.0, 400.0, 1.0]], np.float32)
    dist = policy.action_dist(probe, FEATURES, np.ones((2, N_ACTIONS), bool))
    assert dist.argmax(axis=1).tolist() == [2, 0]
    assert dist[0, 2] > 0.9 and dist[1, 0] > 0.9


def test_feature_names_carry_the_model_across_a_new_column_order() -> None:
    policy = _trained()
    policy.set_feature_names(["z", "monetary", "opt_in"])
    x, _, _ = _log(3, 100)
    eligible = np.ones((100, N_ACTIONS), bool)
    before = policy.scores(x, FEATURES, eligible)
    policy.set_feature_names(["opt_in", "new_col", "z", "monetary"])
    reordered = np.column_stack([x[:, 2], np.zeros(100), x[:, 0], x[:, 1]]).astype(np.float32)
    assert np.allclose(policy.scores(reordered, FEATURES, eligible), before, atol=1e-4)
    restored = LinearTS()
    restored.set_state(policy.get_state())
    assert np.allclose(restored.scores(reordered, FEATURES, eligible), before, atol=1e-4)


def test_a_state_saved_before_the_robust_spread_still_loads() -> None:
    """Version 1 had no residual statistics: it loads with the constant-noise equivalent and
    keeps its solved posterior; this code's states say version 2, which older code refuses."""
    policy = _trained()
    meta, arrays = unpack_arrays(policy._state_payload(), 8)
    del meta["meat"]
    old_payload = pack_arrays(meta, arrays[:3] + arrays[4:])
    header = json.dumps({"kind": "lints", "version": 1, "params": policy.params()}).encode()
    old = b"ORCHPOL1" + len(header).to_bytes(4, "big") + header + old_payload
    restored = LinearTS()
    restored.set_state(old)
    x, _, _ = _log(3, 50)
    eligible = np.ones((50, N_ACTIONS), bool)
    assert np.allclose(restored.scores(x, FEATURES, eligible), policy.scores(x, FEATURES, eligible))
    assert restored._meat.shape == policy._meat.shape and restored._meat[:, 0, 0].min() > 0
    state = policy.get_state()
    assert json.loads(state[12 : 12 + int.from_bytes(state[8:12], "big")])["version"] == 2


def test_identical_actions_act_as_one_and_the_first_eligible_takes_the_mass() -> None:
    policy = _trained(epsilon=0.0)
    features = np.vstack([FEATURES, FEATURES[2]])  # action 4 duplicates action 2
    probe = np.array([[2.0, 400.0, 0.0]] * 2, np.float32)
    eligible = np.array([[True, True, True, True, True], [True, True, False, True, True]])
    dist = policy.action_dist(probe, features, eligible)
    assert dist[0, 4] == 0.0 and dist[0, 2] > 0.9
    assert dist[1, 2] == 0.0 and dist[1, 4] > 0.9


@pytest.mark.parametrize("draw_per", ["customer", "batch"])
def test_choices_follow_action_dist(draw_per: str) -> None:
    """Sampling draws, not the distribution, is how choose works: check it is the same law."""
    policy = _trained(draw_per=draw_per, n_draws=8, exploration=3.0, epsilon=0.1)
    row = np.array([[0.1, 300.0, 1.0]], np.float32)
    eligible = np.array([[True, True, True, False]])
    batch, reps = (4000, 1) if draw_per == "customer" else (4, 1000)
    contexts, mask = np.repeat(row, batch, axis=0), np.repeat(eligible, batch, axis=0)
    counts = np.zeros(N_ACTIONS)
    for rep in range(reps):  # "batch" follows one draw per run: a new run (seed) per rep
        choice = policy.choose(contexts, FEATURES, mask, Draws.seeded(batch, rep))
        assert np.allclose(choice.propensity, choice.action_dist[np.arange(batch), choice.action])
        counts += np.bincount(choice.action, minlength=N_ACTIONS)
    dist = policy.action_dist(row, FEATURES, eligible)[0]
    total = batch * reps
    # Batch mode: one draw per call, so calls (not rows) are the independent units.
    units = total if draw_per == "customer" else reps
    se = np.sqrt(dist * (1 - dist) / units) + 1e-12
    assert (np.abs(counts / total - dist) <= 4 * se).all(), (counts / total, dist)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_batch_draws_keep_the_contract(seed: int, n: int) -> None:
    policy = _trained(draw_per="batch")
    rng = np.random.default_rng(seed)
    x = _log(seed % 1000, n)[0]
    eligible = rng.random((n, N_ACTIONS)) < 0.5
    choice = policy.choose(x, FEATURES, eligible, Draws.seeded(n, seed))
    again = policy.choose(x, FEATURES, eligible, Draws.seeded(n, seed))
    has = eligible.any(axis=1)
    assert np.array_equal(choice.action, again.action)
    assert (choice.action[~has] == -1).all()
    assert eligible[np.flatnonzero(has), choice.action[has]].all()
    assert (choice.propensity[has] > 0).all()
    assert np.allclose(choice.propensity[has], choice.action_dist[has, choice.action[has]])


def test_float32_and_float64_scoring_agree() -> None:
    x, _, _ = _log(4, 2000)
    eligible = np.ones((2000, N_ACTIONS), bool)
    d32 = _trained(dtype="float32").action_dist(x, FEATURES, eligible)
    d64 = _trained(dtype="float64").action_dist(x, FEATURES, eligible)
    assert np.abs(d32 - d64).max() <= 1 / 16 + 1e-9  # at most one draw flips, near a tie
    assert np.mean(np.abs(d32 - d64).sum(axis=1) > 0) < 0.01


def test_bad_inputs_are_refused() -> None:
    policy = _trained()
    with pytest.raises(ValueError, match="learned on 3 context"):
        policy.action_dist(np.zeros((2, 4), np.float32), FEATURES, np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="eligible has shape"):
        policy.action_dist(np.zeros((2, 3), np.float32), FEATURES, np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="propensities"):
        policy.update(np.zeros((1, 3)), FEATURES, np.array([0]), np.array([1.0]), np.zeros(1))
    with pytest.raises(ValueError, match="actions must index"):
        policy.update(np.zeros((1, 3)), FEATURES, np.array([9]), np.array([1.0]), np.ones(1))
    with pytest.raises(ValueError, match="draw_per"):
        LinearTS(draw_per="day")


def _explicit(x: np.ndarray, a: np.ndarray, ridge: float) -> tuple[Any, np.ndarray, np.ndarray]:
    """The model written out: the feature map, the design of the log and the prior's
    precisions (interactions get ``ridge``; levels, the first row and column of the Kronecker
    layout, a unit prior)."""

    def standardize(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
        sd = ref.std(axis=0)
        return (v - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    def scale(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Action features are scaled by their root mean square, not centred."""
        rms = np.sqrt((ref**2).mean(axis=0))
        return v / np.where(rms > 0, rms, 1.0)

    x64, logged = x.astype(np.float64), FEATURES[a]

    def phi(xs: np.ndarray, feats: np.ndarray) -> np.ndarray:
        zx = np.column_stack([np.ones(len(xs)), standardize(xs, x64)])
        za = np.column_stack([np.ones(len(feats)), scale(feats, logged)])
        return np.einsum("ip,iq->ipq", zx, za).reshape(len(xs), -1)

    d1, k1 = x.shape[1] + 1, FEATURES.shape[1] + 1
    main = np.zeros((d1, k1), dtype=bool)
    main[0, :] = main[:, 0] = True
    return phi, phi(x64, logged), np.where(main.ravel(), 1.0, ridge)


def test_posterior_mean_is_the_ridge_solution_on_explicit_features() -> None:
    x, a, r = _log(6, 300)
    policy = LinearTS(ridge=2.0, dtype="float64")
    policy.update(x, FEATURES, a, r, np.full(len(a), 0.25))
    phi, design, penalty = _explicit(x, a, 2.0)
    theta = np.linalg.solve(design.T @ design + np.diag(penalty), design.T @ r)
    probe = x[:20].astype(np.float64)
    expected = np.column_stack(
        [phi(probe, np.repeat(FEATURES[[j]], 20, axis=0)) @ theta for j in range(N_ACTIONS)]
    )
    got = policy.scores(x[:20], FEATURES, np.ones((20, N_ACTIONS), bool))
    assert np.allclose(got, expected, atol=1e-6)


def test_draws_follow_the_robust_posterior_also_where_no_action_was_seen() -> None:
    """The draws' covariance is the sandwich ``A⁻¹ (M + σ²Λ) A⁻¹`` (``M = Σ φφᵀ e²`` with the
    residuals before the update: here the rewards, there being no model yet), times
    ``exploration²``. Four actions span four of the five action-feature directions: the fifth
    has no data and is not solved for; its draws come from the prior. Whitened by the
    explicit covariance, every coefficient's draws are independent standard normals."""
    x, a, r = _log(8, 300)
    r = r * np.where(x[:, 0] > 0, 6.0, 1.0)  # noise that differs between customers
    policy = LinearTS(ridge=2.0, dtype="float64", n_draws=4000, exploration=0.7)
    policy.update(x, FEATURES, a, r, np.full(len(a), 0.25))
    _, design, penalty = _explicit(x, a, 2.0)
    precision = design.T @ design + np.diag(penalty)
    theta = np.linalg.solve(precision, design.T @ r)
    n, dim = len(r), len(theta)
    rss = r @ r - theta @ (design.T @ r) - theta @ (penalty * theta)
    sigma2 = (rss + dim * r.var()) / (n + dim)
    meat = design.T @ (design * (r**2)[:, None]) + sigma2 * np.diag(penalty)
    inv = np.linalg.inv(precision)
    cov = 0.7**2 * inv @ meat @ inv
    fit = policy._posterior()
    assert fit is not None
    white = np.linalg.solve(np.linalg.cholesky(cov), (fit.draws - fit.mean).T).T
    var = white.var(axis=0)
    assert np.all(np.abs(var - 1.0) < 0.2), var
    corr = np.corrcoef(white, rowvar=False)
    assert np.abs(corr[~np.eye(dim, dtype=bool)]).max() < 0.15


def test_the_spread_is_made_of_out_of_sample_residuals() -> None:
    """A second batch adds its residuals under the model fitted on the first: a model that
    explains the rewards leaves a spread far below the rewards' own."""
    x, a, r = _log(9, 600)
    signal = np.where(a == 1, 5.0, 0.0) * np.sign(x[:, 0])
    policy = LinearTS(ridge=2.0, dtype="float64", half_life=None)
    p = np.full(300, 0.25)
    policy.update(x[:300], FEATURES, a[:300], signal[:300] + r[:300], p)
    before = policy._meat.copy()
    policy.update(x[300:], FEATURES, a[300:], signal[300:] + r[300:], p)
    added = policy._meat[:, 0, 0].sum() - before[:, 0, 0].sum()
    raw = ((signal[300:] + r[300:]) ** 2).sum()
    assert 0.0 < added < 0.5 * raw


def test_choose_reports_the_posterior_mean_scores() -> None:
    policy = _trained()
    x, _, _ = _log(7, 50)
    features = np.vstack([FEATURES, FEATURES[1]])  # a duplicate shares its group's score
    eligible = np.random.default_rng(7).random((50, N_ACTIONS + 1)) < 0.6
    choice = policy.choose(x, features, eligible, Draws.seeded(len(x), 0))
    expected = policy.scores(x, features, eligible)
    assert np.array_equal(np.isnan(choice.scores), ~eligible)
    assert np.allclose(choice.scores[eligible], expected[eligible], rtol=1e-5, atol=1e-5)


def test_forgetting_follows_a_change_of_taste() -> None:
    """After the best action changes, a forgetting model follows sooner than one that never
    forgets, and an update's weight halves every ``half_life`` updates."""
    rng = np.random.default_rng(5)
    n = 400
    forgetful, stubborn = LinearTS(half_life=2.0, epsilon=0.0), LinearTS(half_life=None)
    for step in range(12):
        x = rng.normal(size=(n, 3)).astype(np.float32)
        a = rng.integers(0, N_ACTIONS, n)
        best = 0 if step < 8 else 2
        r = (a == best).astype(float) + rng.normal(0, 0.1, n)
        for policy in (forgetful, stubborn):
            policy.update(x, FEATURES, a, r, np.full(n, 0.25))
    probe = rng.normal(size=(50, 3)).astype(np.float32)
    eligible = np.ones((50, N_ACTIONS), bool)
    assert (forgetful.scores(probe, FEATURES, eligible).argmax(axis=1) == 2).all()
    assert (stubborn.scores(probe, FEATURES, eligible).argmax(axis=1) == 0).mean() > 0.5
    # 12 updates of n rows, each halved every 2 updates: total weight n * sum(0.5 ** (k / 2)).
    weight = forgetful._gram[:, 0, 0].sum()
    assert np.isclose(weight, n * sum(0.5 ** (k / 2) for k in range(12)))


def test_the_evidence_chooses_more_shrinkage_when_there_is_no_signal() -> None:
    """With ``ridge=None`` the interaction ridge maximizes the marginal likelihood: pure noise
    asks for far more shrinkage than a reward that really depends on context and action."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3000, 3)).astype(np.float32)
    a = rng.integers(0, N_ACTIONS, 3000)
    signal = LinearTS(half_life=None)
    signal.update(x, FEATURES, a, np.where(a == 0, 3.0 * x[:, 0], 0.0) + rng.normal(0, 1, 3000),
                  np.full(3000, 0.25))  # fmt: skip
    noise = LinearTS(half_life=None)
    noise.update(x, FEATURES, a, rng.normal(0, 1, 3000), np.full(3000, 0.25))
    assert signal._posterior() is not None and noise._posterior() is not None
    assert noise._log_ridge is not None and signal._log_ridge is not None
    # Interactions: pure noise asks for far more shrinkage.
    assert noise._log_ridge[1] >= signal._log_ridge[1] + 2
    # The choice travels with the state and seeds the next search.
    restored = LinearTS(half_life=None)
    restored.set_state(signal.get_state())
    assert restored._log_ridge == signal._log_ridge


def test_action_levels_are_not_shrunk_toward_sending_nothing() -> None:
    """Money rewards: a tenth of the customers spend a lot (noise sd 40), the rest little (sd
    2), and the actions differ by about one unit on average, a few standard errors each. The
    evidence may shrink the interactions, but each action's level must stay at its sample mean:
    a level prior chosen by the evidence (which assumes one noise variance for everyone) pulled
    them toward "send nothing" by 30-50% on these logs, and the choices lost value with it."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n = 8000
        spender = rng.random(n) < 0.1
        x = np.column_stack([rng.normal(size=n), spender, rng.normal(size=(n, 6))])
        a = rng.integers(0, N_ACTIONS, n)
        r = np.array([1.0, -0.8, 0.5, 0.0])[a] + rng.normal(0, 1, n) * np.where(spender, 40, 2)
        policy = LinearTS(half_life=None, dtype="float64")
        policy.update(x.astype(np.float32), FEATURES, a, r, np.full(n, 0.25))
        average = x.mean(axis=0, keepdims=True).astype(np.float32)
        got = policy.scores(average, FEATURES, np.ones((1, N_ACTIONS), bool))[0]
        means = np.array([r[a == j].mean() for j in range(N_ACTIONS)])
        assert np.abs(got - means).max() < 0.1, (seed, got, means)


def test_thompson_sampling_on_a_stable_share_the_posterior_mean_on_the_rest() -> None:
    """``explore_share`` of the customers (the same ones every day) sample a posterior draw;
    the others get the best action under the posterior mean. Propensities are those of each
    customer's own distribution, and ``action_dist`` is their mixture."""
    from orchestrator.engine.hashing import customer_keys

    policy = _trained(explore_share=0.3, epsilon=0.0, exploration=3.0)
    n = 3000
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.normal(size=n), rng.lognormal(6, 1, n), rng.integers(0, 2, n)])
    x = x.astype(np.float32)
    eligible = np.ones((n, N_ACTIONS), dtype=bool)
    keys = customer_keys([f"C{i}" for i in range(n)], "s")
    from datetime import date

    days = [Draws.for_run(keys, seed=1, day=date(2026, 11, d)) for d in (1, 2)]
    sampler = days[0].per_customer("lints.explore_share") < 0.3
    assert (sampler == (days[1].per_customer("lints.explore_share") < 0.3)).all()
    assert abs(sampler.mean() - 0.3) < 0.03
    best = policy.scores(x, FEATURES, eligible).argmax(axis=1)
    thompson = policy._dist(x, FEATURES, eligible)[0]
    for draws in days:
        pick = policy.choose(x, FEATURES, eligible, draws)
        assert (pick.action[~sampler] == best[~sampler]).all()
        assert (pick.propensity[~sampler] == 1.0).all()
        rows = np.flatnonzero(sampler)
        assert np.allclose(pick.propensity[rows], thompson[rows, pick.action[rows]])
        assert (pick.action[sampler] != best[sampler]).any()  # draws disagree with the mean
    mix = policy.action_dist(x, FEATURES, eligible)
    assert np.allclose(mix, 0.3 * thompson + 0.7 * np.eye(N_ACTIONS)[best])


def _engine_actions(n_sends: int) -> np.ndarray:
    """The engine's hashed feature rows: ``n_sends`` email campaigns, then "send nothing"."""
    from orchestrator.engine.actions import NO_SEND_FEATURES, hash_features, named_features

    rows = [hash_features(named_features(f"c{j}", "email", {})) for j in range(n_sends)]
    return np.stack([*rows, hash_features(NO_SEND_FEATURES)])


def _exploiting_sends(policy: LinearTS, feats: np.ndarray, n: int = 2000) -> np.ndarray:
    """The share of exploiting customers who are sent each action (the greedy part)."""
    x = np.random.default_rng(9).normal(size=(n, 3)).astype(np.float32)
    eligible = np.ones((n, len(feats)), dtype=bool)
    _, _, _, exploit = policy._dist(x, feats, eligible, None, True)
    assert exploit is not None
    return np.bincount(exploit.argmax(axis=1), minlength=len(feats)) / n


def test_the_exploiting_customers_send_only_what_beats_sending_nothing_with_confidence() -> None:
    """28 campaigns each truly worth -0.5 against sending nothing, 60 noisy sends each (money
    noise, sd 25): the best of 28 noisy means is positive, and the posterior-mean argmax sent
    to almost everyone (the loss of the all-harmful world's first promoted day). With
    ``exploit_confidence=0.8`` and its correction for choosing the best of 28 the exploiting
    customers keep sending nothing on most logs (0.8 per customer, so not on all). A campaign
    that is clearly better must still win."""
    feats = _engine_actions(28)
    no_send = len(feats) - 1
    kept_mean, kept_careful = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        a = np.concatenate([np.repeat(np.arange(28), 60), np.full(6000, no_send)])
        x = rng.normal(size=(len(a), 3)).astype(np.float32)
        r = np.where(a == no_send, 0.0, -0.5) + rng.normal(0, 25, len(a))
        p = np.full(len(a), 0.5)
        mean_only = LinearTS(half_life=None, seed=seed)  # the default: the posterior mean
        careful = LinearTS(exploit_confidence=0.8, half_life=None, seed=seed)
        for policy in (mean_only, careful):
            policy.update(x, feats, a, r, p)
        kept_mean.append(_exploiting_sends(mean_only, feats)[no_send])
        kept_careful.append(_exploiting_sends(careful, feats)[no_send])
        if seed == 0:  # one campaign truly worth +8, with 3,000 sends: it is sent
            more = np.full(3000, 5)
            r_more = 8.0 + rng.normal(0, 25, 3000)
            x_more = rng.normal(size=(3000, 3)).astype(np.float32)
            careful.update(x_more, feats, more, r_more, p[:3000])
            assert _exploiting_sends(careful, feats)[5] > 0.9
            # The exploiting customers' logged propensity is that of the cautious rule.
            n = 3000
            xs = rng.normal(size=(n, 3)).astype(np.float32)
            eligible = np.ones((n, len(feats)), dtype=bool)
            draws = Draws.seeded(n, 5)
            pick = careful.choose(xs, feats, eligible, draws)
            exploit = careful._dist(xs, feats, eligible, None, True)[3]
            assert exploit is not None
            rows = np.flatnonzero(draws.per_customer("lints.explore_share") >= 0.25)
            own = careful._greedy_dist(exploit, eligible)[rows, pick.action[rows]]
            assert np.allclose(pick.propensity[rows], own)
            assert (pick.propensity[rows] > 0.9).mean() > 0.9  # mostly the rule's own choice
    assert np.mean(kept_mean) < 0.3, kept_mean
    assert np.mean(kept_careful) > 0.6, kept_careful
