"""The simulation-only contenders: the oracle, one fixed action, and each contender's plan."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from orchestrator.engine.actions import NO_SEND_LABEL, ActionSet, build_actions
from orchestrator.plan import Plan
from policies import POLICIES
from simulations.contenders import (
    ROW_ATTRIBUTE,
    FixedPolicy,
    OraclePolicy,
    action_rows,
    register_world,
    unregister_world,
)
from simulations.loop import LEARNERS, best_single, contender_plan
from simulations.scenario import Scenario, load_scenario
from simulations.world import World

TOKEN = "test-contenders"


@dataclass
class Registered:
    world: World
    plan: Plan
    actions: ActionSet
    token: str


def _register(name: str, customers: int, seed: int) -> Iterator[Registered]:
    saved = dict(POLICIES)
    spec = load_scenario(name)
    world = World(spec, customers=customers, seed=seed)
    if name == "tiny":  # some state first: offers running, discounts active, fatigue
        ids = world.customer_ids[::3]
        world.step(world.today, ids, ["app_deals/pct10"] * len(ids))
        world.step(world.today, world.customer_ids[1::5], ["winback/miss_you"] * 100)
    plan = spec.plan_model()
    register_world(TOKEN, world, plan, world.today)
    try:
        yield Registered(world, plan, build_actions(plan, world.today), TOKEN)
    finally:
        unregister_world(TOKEN)
        POLICIES.clear()
        POLICIES.update(saved)


@pytest.fixture
def tiny() -> Iterator[Registered]:
    yield from _register("tiny", 500, 3)


@pytest.fixture
def harmful() -> Iterator[Registered]:
    yield from _register("all-harmful", 300, 5)


def _shuffled(reg: Registered, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The action features in a random order (a policy must go by features, not position)."""
    order = rng.permutation(reg.actions.n_actions)
    return reg.actions.features[order], [reg.actions.labels[a] for a in order]


def _oracle(reg: Registered) -> OraclePolicy:
    policy = OraclePolicy(world=reg.token)
    policy.set_feature_names(["age", ROW_ATTRIBUTE, "monetary"])
    return policy


def _contexts(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 contexts as the engine builds them, the world row in the middle column."""
    n = rows.size
    return np.column_stack([rng.normal(40, 10, n), rows, rng.gamma(2, 50, n)]).astype(np.float32)


def test_registering_a_world_makes_the_contenders_known_by_name(tiny: Registered) -> None:
    assert POLICIES["oracle"] is OraclePolicy and POLICIES["fixed"] is FixedPolicy
    rows = action_rows(tiny.plan)
    real = [a for a in range(tiny.actions.n_actions) if a != tiny.actions.no_send]
    assert len(rows) == len(real) == len(tiny.world.labels())
    for a in real:
        assert rows[tiny.actions.features[a].tobytes()] == tiny.actions.label(a)


def test_the_oracle_puts_all_mass_on_the_best_eligible_action(tiny: Registered) -> None:
    rng = np.random.default_rng(0)
    world = tiny.world
    n = len(world.customer_ids)
    rows = rng.permutation(n)  # context row i is world row rows[i]
    feats, labels = _shuffled(tiny, rng)
    eligible = rng.random((n, len(labels))) < 0.5
    eligible[np.arange(n), rng.integers(0, len(labels), n)] = True
    eligible[: n // 4, labels.index(NO_SEND_LABEL)] = False  # must pick a send, even a bad one
    dist = _oracle(tiny).action_dist(_contexts(rows, rng), feats, eligible)

    values = world.expected_incremental(world.today, rows, labels)  # send nothing: 0
    best = np.where(eligible, values, -np.inf).argmax(axis=1)
    assert dist.shape == eligible.shape
    assert np.allclose(dist.sum(axis=1), 1.0)
    assert (dist[~eligible] == 0).all(), "mass on an ineligible action"
    assert (dist[np.arange(n), best] == 1.0).all(), "not the best eligible action"
    # The check has teeth: the best differs between rows, the unconstrained best is often
    # ineligible, and some rows without "send nothing" are forced into a harmful send.
    assert len(set(best.tolist())) >= 4
    assert (values.argmax(axis=1) != best).mean() > 0.2
    assert (values[np.arange(n), best] < 0).any()


def test_the_oracle_sends_nothing_where_every_send_loses_money(harmful: Registered) -> None:
    rng = np.random.default_rng(1)
    world = harmful.world
    n = len(world.customer_ids)
    rows = rng.permutation(n)
    feats, labels = _shuffled(harmful, rng)
    nothing = labels.index(NO_SEND_LABEL)
    eligible = rng.random((n, len(labels))) < 0.7
    eligible[:, nothing] = True
    dist = _oracle(harmful).action_dist(_contexts(rows, rng), feats, eligible)
    assert (dist[:, nothing] == 1.0).all()
    # Without "send nothing", the least harmful eligible send.
    eligible[np.arange(n), rng.integers(0, len(labels), n)] = True
    eligible[:, nothing] = False
    has = eligible.any(axis=1)
    dist = _oracle(harmful).action_dist(_contexts(rows, rng), feats, eligible)
    values = world.expected_incremental(world.today, rows, labels)
    assert (values[:, [j for j in range(len(labels)) if j != nothing]] < 0).all()
    best = np.where(eligible, values, -np.inf).argmax(axis=1)
    assert (dist[has, best[has]] == 1.0).all() and (dist[~eligible] == 0).all()


def test_the_oracle_needs_its_world_and_the_row_column(tiny: Registered) -> None:
    rng = np.random.default_rng(2)
    feats = tiny.actions.features
    eligible = np.ones((3, len(feats)), dtype=bool)
    contexts = _contexts(np.arange(3), rng)
    no_row = OraclePolicy(world=tiny.token)
    no_row.set_feature_names(["age", "frequency", "monetary"])
    with pytest.raises(ValueError, match=ROW_ATTRIBUTE):
        no_row.action_dist(contexts, feats, eligible)
    lost = OraclePolicy(world="no-such-world")
    lost.set_feature_names(["age", ROW_ATTRIBUTE, "monetary"])
    with pytest.raises(ValueError, match="no simulated world 'no-such-world'"):
        lost.action_dist(contexts, feats, eligible)


def test_fixed_picks_its_label_else_nothing_else_uniform(tiny: Registered) -> None:
    rng = np.random.default_rng(3)
    feats, labels = _shuffled(tiny, rng)
    col = {label: j for j, label in enumerate(labels)}
    label = "newsletter/pct20"
    # Another campaign's treatment with the same id must not count as the label.
    others = ["sms_flash/pct20", "app_deals/pct10", "winback/pct15"]
    cases = [  # (eligible labels, expected distribution)
        (labels, {label: 1.0}),
        ([label], {label: 1.0}),
        ([label, *others], {label: 1.0}),
        ([NO_SEND_LABEL, *others], {NO_SEND_LABEL: 1.0}),
        ([NO_SEND_LABEL], {NO_SEND_LABEL: 1.0}),
        (others, {o: 1 / 3 for o in others}),
        (["winback/miss_you"], {"winback/miss_you": 1.0}),
    ]
    eligible = np.zeros((len(cases), len(labels)), dtype=bool)
    expected = np.zeros(eligible.shape)
    for i, (names, dist) in enumerate(cases):
        eligible[i, [col[x] for x in names]] = True
        expected[i, [col[x] for x in dist]] = list(dist.values())
    policy = FixedPolicy(world=tiny.token, label=label)
    contexts = np.zeros((len(cases), 0), dtype=np.float32)  # uses_context is False
    got = policy.action_dist(contexts, feats, eligible)
    assert np.allclose(got, expected, rtol=0, atol=1e-12), got


def _world(spec: Scenario) -> World:
    return World(spec, customers=200, seed=1)


def _priorities(plan: dict) -> dict[str, int | None]:
    return {c["id"]: c.get("priority") for c in plan["campaigns"]}


def test_static_ranks_every_campaign_in_the_marketers_order() -> None:
    spec = load_scenario("tiny")
    before = copy.deepcopy(spec.plan)
    plan = contender_plan(spec, "static", _world(spec), "tok")
    assert spec.plan == before, "the scenario's plan was changed"
    prio = _priorities(plan)
    assert sorted(prio, key=lambda c: prio[c]) == list(spec.marketer_ranking)
    assert sorted(prio.values()) == list(range(1, len(prio) + 1))  # type: ignore[type-var]
    assert plan["settings"]["policy"]["name"] == "uniform"
    Plan.model_validate(plan)
    # Campaigns the marketer did not rank come after the ranked ones, in plan order.
    partial = spec.model_copy(update={"marketer_ranking": ["winback"]})
    prio = _priorities(contender_plan(partial, "static", _world(partial), "tok"))
    assert prio == {"winback": 1, "newsletter": 2, "sms_flash": 3, "app_deals": 4}


def test_the_oracle_plan_adds_the_row_attribute_and_names_the_world() -> None:
    spec = load_scenario("tiny")
    plan = contender_plan(spec, "oracle", _world(spec), "tok")
    assert plan["attributes"] == {**spec.plan["attributes"], ROW_ATTRIBUTE: "number"}
    assert plan["settings"]["policy"] == {"name": "oracle", "params": {"world": "tok"}}
    assert set(_priorities(plan).values()) == {None}
    assert ROW_ATTRIBUTE not in spec.plan["attributes"]
    Plan.model_validate(plan)


@pytest.mark.parametrize("name", LEARNERS)
def test_learners_get_their_policy_and_keep_the_other_settings(name: str) -> None:
    spec = load_scenario("tiny")
    data = copy.deepcopy(spec.plan)
    data["settings"]["policy"] = {"name": "uniform", "evaluation_holdout": 0.3}
    custom = spec.model_copy(update={"plan": data})
    plan = contender_plan(custom, name, _world(custom), "tok")
    assert plan["settings"]["policy"] == {"name": name, "evaluation_holdout": 0.3}
    assert ROW_ATTRIBUTE not in plan["attributes"]
    assert set(_priorities(plan).values()) == {None}
    assert Plan.model_validate(plan).settings.policy.name == name


def test_best_single_is_the_label_worth_most_over_the_base() -> None:
    spec = load_scenario("tiny")
    world = _world(spec)
    label = best_single(world, spec)
    plan = contender_plan(spec, "best-single", world, "tok")
    assert plan["settings"]["policy"] == {
        "name": "fixed",
        "params": {"world": "tok", "label": label},
    }
    labels = world.labels()
    totals = world.expected_incremental(spec.start, np.arange(200), labels).sum(axis=0)
    assert totals[labels.index(label)] == totals.max()
    assert (np.sort(totals)[-1] - np.sort(totals)[-2]) > 0  # a unique winner, not a tie
