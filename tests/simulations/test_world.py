"""The synthetic world: scenarios load, draws are seeded, and the known truth is the truth."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.plan import Plan, check_plan
from simulations.scenario import ScenarioError, list_scenarios, load_scenario
from simulations.world import World


@pytest.fixture(scope="module")
def tiny() -> World:
    return World(load_scenario("tiny"))


def _revenue(events: list[dict[str, object]], world: World) -> np.ndarray:
    """Sum event amounts per customer row: (n,)."""
    out = np.zeros(len(world.customer_ids))
    if events:
        rows = world.rows_of([str(e["customer_id"]) for e in events])
        np.add.at(out, rows, [float(e["amount"]) for e in events])  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", list_scenarios())
def test_every_scenario_loads_and_its_plan_validates(name: str) -> None:
    scenario = load_scenario(name)
    plan = Plan.model_validate(scenario.plan)
    check_plan(plan)
    assert scenario.name == name
    assert set(scenario.marketer_ranking) <= {c.id for c in plan.campaigns}
    world = World(scenario, customers=50)
    assert len(world.labels()) == sum(len(c.treatments) for c in plan.campaigns)
    row = world.customer_rows()[0]
    assert set(row) == {"customer_id", *plan.attributes}


def test_a_bad_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "simulations/scenarios/tiny.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("lift: {loyal: 0.02, deal: 0.005", "lift: {loyl: 0.02, deal: 0.005")
    )
    with pytest.raises(ScenarioError, match=r"bad\.yaml:\d+: effects\.newsletter/new_arrivals"):
        load_scenario(str(bad))
    with pytest.raises(ScenarioError, match="no such scenario"):
        load_scenario("no-such-world")


def test_history_and_rows_look_like_imports(tiny: World) -> None:
    events = tiny.history_events()
    assert events and len({e["event_id"] for e in events}) == len(events)
    first = events[0]
    assert set(first) == {
        "event_id", "customer_id", "occurred_at", "type", "amount", "discount", "category",
        "channel",
    }  # fmt: skip
    start = tiny.scenario.start.isoformat()
    assert all(e["occurred_at"] < start and e["type"] == "purchase" for e in events)
    assert str(first["occurred_at"]).endswith("+00:00")
    assert len(tiny.customer_rows()) == 400 and tiny.customer_ids[0] == "S000000"


def _run(seed: int, days: int = 3) -> list[dict[str, object]]:
    world = World(load_scenario("tiny"), seed=seed)
    events = world.history_events()
    for _ in range(days):
        ids = world.customer_ids[:150]
        events += world.step(world.today, ids, ["newsletter/pct20"] * 100 + [NO_SEND_LABEL] * 50)
    return events


def test_same_seed_and_sends_give_the_same_events() -> None:
    assert _run(5) == _run(5)
    assert _run(5) != _run(6)


def test_days_must_be_stepped_in_order_and_sends_must_be_known(tiny: World) -> None:
    world = copy.deepcopy(tiny)
    with pytest.raises(ValueError, match="step days in order"):
        world.step(world.today + timedelta(days=1), [], [])
    with pytest.raises(ValueError, match="unknown action label"):
        world.step(world.today, ["S000001"], ["newsletter/nope"])
    with pytest.raises(ValueError, match="two sends"):
        world.step(world.today, ["S000001"] * 2, ["newsletter/pct20", "app_deals/pct10"])
    assert world.expected_incremental(world.today, np.arange(3), [NO_SEND_LABEL]).tolist() == [
        [0.0],
        [0.0],
        [0.0],
    ]


@pytest.mark.parametrize(
    "label",
    [
        "newsletter/pct20",  # a discount, over another active one (the best code is paid)
        "winback/miss_you",  # no discount, 14 days, under an active discount
        "sms_flash/pct20",  # harmful for most: clipping at 0 binds for low-rate customers
    ],
)
def test_expected_incremental_is_the_mean_of_what_step_draws(label: str) -> None:
    world = World(load_scenario("tiny"), customers=20_000, seed=11)
    # Some state first: a third got a 10% push offer yesterday (active discount, fatigue).
    ids = world.customer_ids
    world.step(world.today, ids[::3], ["app_deals/pct10"] * len(ids[::3]))
    world.step(world.today, [], [])
    day = world.today
    truth = world.expected_incremental(day, np.arange(len(ids)), [label])[:, 0]
    assert np.allclose(truth, world.true_value_of_sends(day, ids, [label] * len(ids)))
    sent, held = copy.deepcopy(world), copy.deepcopy(world)
    horizon = int(sent._horizon[sent.labels().index(label)])
    gain = _revenue(sent.step(day, ids, [label] * len(ids)), world)
    gain -= _revenue(held.step(day, [], []), world)
    for _ in range(horizon - 1):
        gain += _revenue(sent.step(sent.today, [], []), world)
        gain -= _revenue(held.step(held.today, [], []), world)
    gain -= world._cost[world.labels().index(label)]
    for group in [slice(None), *(world.persona == p for p in range(len(world.persona_ids)))]:
        se = gain[group].std(ddof=1) / np.sqrt(gain[group].size)
        assert abs(gain[group].mean() - truth[group].mean()) < 4 * se + 0.01, group


@pytest.mark.parametrize("days, daily", [(1, 300), (4, 1200)])  # few / many offers active
def test_expected_incremental_is_exactly_what_the_state_implies(days: int, daily: int) -> None:
    """Sum the day-by-day expected revenue that step() draws from, with and without a send."""
    world = World(load_scenario("tiny"), customers=3000, seed=4)
    ids, labels = world.customer_ids, world.labels()
    rng = np.random.default_rng(1)
    for _ in range(days):  # overlapping offers, discounts beating new ones, fatigue
        who = rng.choice(3000, daily, replace=False)
        picks = [labels[k] for k in rng.integers(0, len(labels), who.size)]
        world.step(world.today, [ids[i] for i in who], picks)
    rows = np.arange(3000)
    truth = world.expected_incremental(world.today, rows, labels)
    for j, label in enumerate(labels):
        sent, held = copy.deepcopy(world), copy.deepcopy(world)
        sent._register(sent._t, rows, np.full(rows.size, j))
        gain = -np.full(rows.size, world._cost[j])
        for _ in range(int(world._horizon[j])):
            for sign, w in ((1.0, sent), (-1.0, held)):
                p, disc = w._odds_today()
                gain += sign * p * w._value * (1 - disc)
                w.step(w.today, [], [])
        assert np.allclose(truth[:, j], gain, rtol=0, atol=1e-9), label


def test_any_rows_and_labels_in_any_order_get_the_same_values() -> None:
    world = World(load_scenario("tiny"), customers=3000, seed=2)
    ids, labels = world.customer_ids, world.labels()
    rng = np.random.default_rng(0)
    for _ in range(3):  # overlapping offers, fatigue
        who = rng.choice(3000, 1000, replace=False)
        sent = [labels[k] for k in rng.integers(0, len(labels), who.size)]
        world.step(world.today, [ids[i] for i in who], sent)
    everything = world.expected_incremental(world.today, np.arange(3000), labels)
    rows = rng.permutation(3000)[:500]
    asked = [labels[3], NO_SEND_LABEL, labels[0], labels[5]]
    some = world.expected_incremental(world.today, rows, asked)
    assert np.allclose(some[:, [0, 2, 3]], everything[rows][:, [3, 0, 5]], rtol=0, atol=1e-12)
    assert (some[:, 1] == 0).all()
    picked = world.true_value_of_sends(world.today, [ids[r] for r in rows], [labels[2]] * 500)
    assert np.allclose(picked, everything[rows, 2], rtol=0, atol=1e-12)


def test_all_harmful_loses_money_on_every_send() -> None:
    world = World(load_scenario("all-harmful"), customers=3000)
    values = world.expected_incremental(world.today, np.arange(3000), world.labels())
    assert (values < 0).all()


@pytest.mark.parametrize("name", ["tiny", "drift"])
def test_the_best_action_of_some_persona_changes_at_the_drift(name: str) -> None:
    scenario = load_scenario(name)
    world = World(scenario, customers=2000)
    rows, labels = np.arange(2000), world.labels()

    def best() -> list[int]:
        values = world.expected_incremental(world.today, rows, labels)
        return [
            int(values[world.persona == p].mean(0).argmax()) for p in range(len(scenario.personas))
        ]

    before = best()
    assert scenario.drift_day is not None
    for _ in range(scenario.drift_day):
        world.step(world.today, [], [])
    assert best() != before


def test_a_second_send_in_the_fatigue_window_lifts_less(tiny: World) -> None:
    world = copy.deepcopy(tiny)
    label = "newsletter/new_arrivals"  # no discount: value + cost = order value x lift
    cost = world._cost[world.labels().index(label)]
    rows = np.flatnonzero(world.persona == world.persona_ids.index("loyal"))
    first = world.expected_incremental(world.today, rows, [label])[:, 0] + cost
    world.step(world.today, [world.customer_ids[r] for r in rows], [label] * rows.size)
    second = world.expected_incremental(world.today, rows, [label])[:, 0] + cost
    assert (np.abs(second) < np.abs(first)).all()
    factor = np.exp(-world.scenario.fatigue.per_contact)
    assert np.allclose(second, first * factor)
