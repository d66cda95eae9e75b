"""The learners earn more than the marketer's ranking and than chance, on the standard world.

A short, small run of the closed loop (the figures at full size are in docs/performance.md):
the margin is judged against the noise of the run itself, the day-to-day spread of the paired
daily differences, not against a constant.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulations.loop import SimulationResult, simulate

DAYS, FROM = 22, 8  # the first promotion comes once the first week's windows have closed


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(
        "standard",
        ["uniform", "static", "lints", "vw"],
        customers=3000,
        days=DAYS,
        seed=11,
        measure_from=FROM,
        workers=2,
    )


@pytest.mark.parametrize("learner", ["lints", "vw"])
@pytest.mark.parametrize("baseline", ["uniform", "static"])
def test_the_learner_beats_the_baseline_beyond_the_noise(
    result: SimulationResult, learner: str, baseline: str
) -> None:
    gap = np.array(result.runs[learner].value[FROM:]) - np.array(result.runs[baseline].value[FROM:])
    se = gap.std(ddof=1) / np.sqrt(len(gap))
    assert result.runs[learner].promotions, f"{learner} never promoted a version"
    assert gap.mean() > 3 * se, (
        f"{learner} - {baseline}: {gap.mean():+.4f} per customer-day, standard error {se:.4f}"
    )
