"""Purchase summaries and behaviour layers: the vectorized cores against plain Python."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.segments.behaviour import discount_affinity, preferred
from orchestrator.segments.summary import summarize

N = 6
events = st.lists(
    st.tuples(
        st.integers(0, N - 1),  # customer
        st.integers(0, 60),  # day
        st.sampled_from([5.0, 12.5, 40.0, 99.99]),  # amount
        st.booleans(),  # a return?
        st.sampled_from([math.nan, 0.0, 0.1, 0.3]),  # discount
        st.integers(-1, 3),  # category code (-1: none)
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_summary_matches_a_customer_by_customer_count(rows: list[tuple]) -> None:
    owner = np.array([r[0] for r in rows], dtype=np.int64)
    day = np.array([r[1] for r in rows], dtype=np.int64)
    is_return = np.array([r[3] for r in rows], dtype=bool)
    amount = np.array([-r[2] if r[3] else r[2] for r in rows])
    h = summarize(owner, day, amount, is_return, n=N, as_of=60, gap_days=20)
    for c in range(N):
        buys = [(r[1], r[2]) for r in rows if r[0] == c and not r[3]]
        back = sum(-r[2] for r in rows if r[0] == c and r[3])
        days = sorted({d for d, _ in buys})
        assert h.days[c] == len(days)
        if not days:
            assert math.isnan(h.recency[c]) and math.isnan(h.net_spend[c]) and h.repeats[c] == -1
            continue
        gross = sum(a for _, a in buys)
        first = sum(a for d, a in buys if d == days[0])
        keep = min(max((gross + back) / gross, 0.0), 1.0)
        assert h.recency[c] == 60 - days[-1] and h.tenure[c] == 60 - days[0]
        assert h.span[c] == days[-1] - days[0] and h.repeats[c] == len(days) - 1
        assert math.isclose(h.net_spend[c], gross * keep, rel_tol=1e-9, abs_tol=1e-9)
        if len(days) > 1:
            want = (gross - first) * keep / (len(days) - 1)
            assert math.isclose(h.repeat_order_value[c], want, rel_tol=1e-9, abs_tol=1e-9)
        else:
            assert math.isnan(h.repeat_order_value[c])
        comebacks = [d for p, d in zip(days, days[1:], strict=False) if d - p > 20]
        if comebacks:
            assert h.comeback[c] == 60 - comebacks[-1]
        else:
            assert math.isnan(h.comeback[c])


@settings(max_examples=300, deadline=None)
@given(events)
def test_behaviour_layers_match_plain_python(rows: list[tuple]) -> None:
    buys = [r for r in rows if not r[3]]
    owner = np.array([r[0] for r in buys], dtype=np.int64)
    affinity = discount_affinity(owner, np.array([r[4] for r in buys], dtype=float), N)
    top = preferred(
        owner,
        np.array([r[5] for r in buys], dtype=np.int64),
        np.array([r[1] for r in buys], dtype=np.int64),
        N,
    )
    for c in range(N):
        known = [r[4] for r in buys if r[0] == c and not math.isnan(r[4])]
        if known:
            assert math.isclose(affinity[c], sum(d > 0 for d in known) / len(known))
        else:
            assert math.isnan(affinity[c])
        codes = [(r[5], r[1]) for r in buys if r[0] == c and r[5] >= 0]
        if not codes:
            assert top[c] == -1
            continue
        counts = Counter(code for code, _ in codes)
        latest = {code: max(d for k, d in codes if k == code) for code in counts}
        want = max(counts, key=lambda k: (counts[k], latest[k], -k))
        assert top[c] == want
