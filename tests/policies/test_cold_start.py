"""Cold start: a stable share of the customers is explored on, the rest are sent nothing."""

from __future__ import annotations

from datetime import date

import numpy as np

from orchestrator.engine.hashing import Draws, customer_keys
from policies.cold_start import ColdStart

FEATURES = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # two sends, then "send nothing"


def test_the_same_customers_are_explored_on_every_day() -> None:
    policy = ColdStart(explore=0.25, no_send=FEATURES[2])
    keys = customer_keys([f"C{i}" for i in range(4000)], "salt")
    eligible = np.ones((4000, 3), dtype=bool)
    explored = []
    for day in (date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 9)):
        choice = policy.choose(
            np.zeros((4000, 1)), FEATURES, eligible, Draws.for_run(keys, seed=3, day=day)
        )
        spared = choice.action == 2
        assert np.all(choice.propensity[spared & (choice.action_dist[:, 2] == 1.0)] == 1.0)
        explored.append(choice.action_dist[:, 2] < 1.0)
    assert (explored[0] == explored[1]).all() and (explored[0] == explored[2]).all()
    assert abs(explored[0].mean() - 0.25) < 0.03
    # explorers choose uniformly among their eligible actions, "send nothing" included
    assert np.allclose(choice.action_dist[explored[0]], 1 / 3)


def test_without_send_nothing_everyone_is_explored_on() -> None:
    policy = ColdStart(explore=0.25, no_send=FEATURES[2])
    eligible = np.array([[True, True, False]] * 50)
    choice = policy.choose(np.zeros((50, 1)), FEATURES, eligible, Draws.seeded(50))
    assert np.allclose(choice.action_dist[:, :2], 0.5) and set(choice.action) <= {0, 1}
