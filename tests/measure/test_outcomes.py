"""Outcomes count every event once per decision, and only inside its window."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.measure.outcomes import window_outcomes


@st.composite
def logs(draw: st.DrawFn):
    n_cust = draw(st.integers(1, 5))
    m = draw(st.integers(0, 12))
    k = draw(st.integers(0, 25))
    days = st.integers(0, 30)
    d_cust = np.array(draw(st.lists(st.integers(0, n_cust - 1), min_size=m, max_size=m)), int)
    start = np.array(draw(st.lists(days, min_size=m, max_size=m)), int)
    length = np.array(draw(st.lists(st.integers(0, 10), min_size=m, max_size=m)), int)
    e_cust = np.array(draw(st.lists(st.integers(0, n_cust - 1), min_size=k, max_size=k)), int)
    e_day = np.array(draw(st.lists(days, min_size=k, max_size=k)), int)
    amount = np.array(draw(st.lists(st.integers(-50, 200), min_size=k, max_size=k)), dtype=float)
    buy = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)), bool)
    return d_cust, start, start + length, e_cust, e_day, amount, buy


@settings(max_examples=300, deadline=None)
@given(logs())
def test_matches_a_brute_force_count(log) -> None:
    d_cust, start, end, e_cust, e_day, amount, buy = log
    out = window_outcomes(d_cust, start, end, e_cust, e_day, amount, buy)
    for i in range(len(d_cust)):
        inside = (e_cust == d_cust[i]) & (e_day >= start[i]) & (e_day < end[i])
        assert out.revenue[i] == amount[inside].sum()
        assert out.purchases[i] == (inside & buy).sum()
