"""RFM quintile scores and named cells."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.features import RFM_CELLS
from orchestrator.segments.config import DEFAULT_CELLS, RfmCell, RfmConfig
from orchestrator.segments.rfm import assign_cells, cell_grid, quantile_scores, score_rfm

values = st.lists(
    st.one_of(st.integers(0, 20).map(float), st.floats(0, 1e6, allow_nan=False)),
    min_size=1,
    max_size=60,
)


@given(values, st.booleans())
def test_scores_are_monotone_and_ties_share_a_score(raw: list[float], higher: bool) -> None:
    v = np.array(raw)
    s = quantile_scores(v, higher_is_better=higher)
    assert s.min() >= 1 and s.max() <= 5
    order = np.argsort(v if higher else -v, kind="stable")
    assert np.all(np.diff(s[order]) >= 0)  # better value, score at least as high
    for value in np.unique(v):
        assert len(set(s[v == value].tolist())) == 1
    best = v.max() if higher else v.min()
    if (v == best).sum() == 1 and len(v) > 1:
        assert s[v == best][0] == 5
    assert s[v == (v.min() if higher else v.max())][0] == 1


def test_distinct_values_fall_into_quintiles() -> None:
    s = quantile_scores(np.random.default_rng(0).normal(size=100_000))
    shares = np.bincount(s, minlength=6)[1:] / len(s)
    np.testing.assert_allclose(shares, 0.2, atol=0.001)


def test_unscored_customers_get_zero() -> None:
    assert quantile_scores(np.array([np.nan, 1.0, np.nan])).tolist() == [0, 1, 0]
    assert quantile_scores(np.array([np.nan])).tolist() == [0]


def test_default_cells_cover_the_grid_once_each_and_are_the_known_names() -> None:
    grid = cell_grid(DEFAULT_CELLS)
    assert (grid >= 0).all()
    assert [c.name for c in DEFAULT_CELLS] == list(RFM_CELLS)
    names = {(r + 1, f + 1): DEFAULT_CELLS[grid[r, f]].name for r in range(5) for f in range(5)}
    assert names[5, 5] == "champions" and names[1, 1] == "lost" and names[5, 1] == "new_customers"
    assert (
        names[1, 5] == "cannot_lose" and names[2, 3] == "at_risk" and names[2, 1] == "hibernating"
    )


def test_first_matching_cell_wins() -> None:
    cells = (
        RfmCell(name="vip", r=(4, 5), fm=(5, 5)),
        RfmCell(name="everyone", r=(1, 5), fm=(1, 5)),
    )
    codes = assign_cells(np.array([5, 3, 0]), np.array([5, 5, 0]), cells)
    assert codes.tolist() == [0, 1, -1]


def test_cells_must_cover_the_grid_and_ranges_must_be_valid() -> None:
    with pytest.raises(ValidationError, match="without a cell"):
        RfmConfig(cells=(RfmCell(name="top", r=(5, 5), fm=(1, 5)),))
    with pytest.raises(ValidationError, match="within"):
        RfmCell(name="bad", r=(0, 3), fm=(1, 5))
    with pytest.raises(ValidationError, match="ordered"):
        RfmCell(name="bad", r=(4, 2), fm=(1, 5))


def test_score_rfm_leaves_customers_without_purchases_out() -> None:
    recency = np.array([1.0, 200.0, np.nan, 30.0, 400.0])
    frequency = np.array([9, 0, -1, 2, 0])
    monetary = np.array([900.0, 20.0, np.nan, 150.0, 15.0])
    scores = score_rfm(recency, frequency, monetary, RfmConfig())
    assert scores.r.tolist() == [5, 2, 0, 4, 1]
    assert scores.f[2] == 0 and scores.m[2] == 0 and scores.cell[2] == -1
    names = scores.cell_names()
    assert names[0] == "champions" and names[2] is None and names[4] == "lost"
    by_f = score_rfm(recency, frequency, monetary, RfmConfig(second_axis="f"))
    assert by_f.cell_names()[0] == "champions"
