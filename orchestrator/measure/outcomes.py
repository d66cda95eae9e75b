"""What each decision's customer did inside its measurement window (pure, vectorized).

A decision made on day ``start`` with window end ``end`` (exclusive) counts the customer's events
with ``start <= day < end``: each event once per decision, and only inside its window. Shapes:
``m`` decisions, ``k`` events; customers are integer codes shared by both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MICRO = 1_000_000  # amounts are summed in millionths


@dataclass(frozen=True)
class Outcomes:
    """Per decision: ``revenue (m,)`` summed amounts, ``purchases (m,)`` count of purchases."""

    revenue: np.ndarray
    purchases: np.ndarray

    @property
    def converted(self) -> np.ndarray:
        return self.purchases > 0


def window_outcomes(
    decision_customer: np.ndarray,
    decision_start: np.ndarray,
    decision_end: np.ndarray,
    event_customer: np.ndarray,
    event_day: np.ndarray,
    event_amount: np.ndarray,
    event_is_purchase: np.ndarray,
) -> Outcomes:
    """Sum each decision's events in ``[start, end)``; days are integers (e.g. day ordinals),
    amounts money (summed exactly to the millionth).

    >>> o = window_outcomes(
    ...     np.array([0, 0, 1]), np.array([10, 12, 10]), np.array([17, 19, 11]),
    ...     np.array([0, 0, 1, 1]), np.array([9, 12, 10, 11]), np.array([5.0, 20.0, 7.0, 3.0]),
    ...     np.array([True, True, True, False]),
    ... )
    >>> o.revenue.tolist(), o.purchases.tolist()
    ([20.0, 20.0, 7.0], [1, 1, 1])
    """
    d_cust = np.asarray(decision_customer, dtype=np.int64)
    e_cust = np.asarray(event_customer, dtype=np.int64)
    e_day = np.asarray(event_day, dtype=np.int64)
    if len(e_cust) == 0 or len(d_cust) == 0:
        zeros = np.zeros(len(d_cust))
        return Outcomes(zeros, zeros.astype(np.int64))
    # One sortable key per (customer, day): customers never collide, days keep their order.
    lo_day = min(int(e_day.min()), int(np.min(decision_start)))
    span = max(int(e_day.max()), int(np.max(decision_end))) - lo_day + 2
    e_key = e_cust * span + (e_day - lo_day)
    order = np.argsort(e_key, kind="stable")
    e_key = e_key[order]
    # Money in whole millionths: the prefix sums are exact integers, so a decision's revenue is
    # its events' sum to the millionth whatever other customers' events share the call (float
    # prefix sums moved it in the last digits with the chunking: 53.34 came out 53.339999...).
    micro = np.round(np.asarray(event_amount, dtype=np.float64)[order] * MICRO).astype(np.int64)
    amount = np.concatenate([[0], np.cumsum(micro)])
    bought = np.concatenate([[0], np.cumsum(np.asarray(event_is_purchase, dtype=np.int64)[order])])
    start = d_cust * span + (np.asarray(decision_start, dtype=np.int64) - lo_day)
    end = d_cust * span + (np.asarray(decision_end, dtype=np.int64) - lo_day)
    left = np.searchsorted(e_key, start, side="left")
    right = np.searchsorted(e_key, np.maximum(end, start), side="left")
    return Outcomes((amount[right] - amount[left]) / MICRO, bought[right] - bought[left])
