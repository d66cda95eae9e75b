"""Per-customer purchase histories from purchase and return events, as numpy arrays.

Purchases count by day: several purchase events on one day are one order (the BG/NBD
convention, which also merges split baskets). Returns (negative amounts) cannot be matched to
their orders, so they reduce every order of the customer in proportion: ``keep`` is the share of
gross spend not returned, between 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.segments.lifecycle import days_since_comeback


@dataclass(frozen=True)
class PurchaseHistory:
    """Purchase history of ``n`` customers as of day number ``as_of``; every array is (n,).

    ``first_day`` and ``last_day`` are day numbers (-1 without a purchase); ``comeback`` is days
    since the latest purchase after a long gap (NaN if none).
    """

    as_of: int
    days: np.ndarray  # int64: distinct purchase days
    first_day: np.ndarray  # int64
    last_day: np.ndarray  # int64
    gross: np.ndarray  # float64: sum of purchase amounts
    first_gross: np.ndarray  # float64: sum of purchase amounts on the first purchase day
    returned: np.ndarray  # float64: sum of return amounts (<= 0)
    comeback: np.ndarray  # float64

    @property
    def bought(self) -> np.ndarray:
        return self.days > 0

    def _days_or_nan(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.bought, values, np.nan).astype(np.float64)

    @property
    def recency(self) -> np.ndarray:
        """Days since the last purchase (NaN without a purchase)."""
        return self._days_or_nan(self.as_of - self.last_day)

    @property
    def tenure(self) -> np.ndarray:
        """Days since the first purchase (NaN without a purchase)."""
        return self._days_or_nan(self.as_of - self.first_day)

    @property
    def span(self) -> np.ndarray:
        """Days from the first to the last purchase, BG/NBD's ``t_x`` (NaN without a purchase)."""
        return self._days_or_nan(self.last_day - self.first_day)

    @property
    def repeats(self) -> np.ndarray:
        """Repeat purchase days, BG/NBD's ``x`` (-1 without a purchase); int64."""
        return self.days - 1

    @property
    def keep(self) -> np.ndarray:
        """Share of gross spend not returned, in [0, 1] (1 without a purchase)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (self.gross + self.returned) / self.gross
        return np.where(self.gross > 0, np.clip(share, 0.0, 1.0), 1.0)

    @property
    def net_spend(self) -> np.ndarray:
        """Total spend net of returns, never negative (NaN without a purchase)."""
        return self._days_or_nan(self.gross * self.keep)

    @property
    def repeat_order_value(self) -> np.ndarray:
        """Mean net value of the repeat purchase days, Gamma-Gamma's ``m`` (NaN where x == 0)."""
        x = self.repeats
        with np.errstate(invalid="ignore", divide="ignore"):
            value = (self.gross - self.first_gross) * self.keep / x
        return np.where(x > 0, value, np.nan)


def summarize(
    owner: np.ndarray,
    day: np.ndarray,
    amount: np.ndarray,
    is_return: np.ndarray,
    *,
    n: int,
    as_of: int,
    gap_days: int,
) -> PurchaseHistory:
    """Summarize purchase and return events (k,) of ``n`` customers as of day number ``as_of``.

    ``owner`` are customer indices in ``[0, n)``, ``day`` day numbers (events after ``as_of`` must
    already be left out), ``amount`` the event amounts, ``is_return`` marks returns (the other
    events are purchases). ``gap_days`` is the lifecycle's reactivation gap.

    >>> h = summarize(np.array([0, 0, 0, 1, 0]), np.array([10, 10, 20, 15, 25]),
    ...               np.array([5.0, 5.0, 20.0, 8.0, -10.0]), np.array([0, 0, 0, 0, 1], bool),
    ...               n=3, as_of=30, gap_days=180)
    >>> h.days.tolist(), h.recency.tolist(), h.repeats.tolist(), h.net_spend.tolist()
    ([2, 1, 0], [10.0, 15.0, nan], [1, 0, -1], [20.0, 8.0, nan])
    >>> h.repeat_order_value.round(2).tolist()
    [13.33, nan, nan]
    """
    owner = np.asarray(owner, dtype=np.int64)
    day = np.asarray(day, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    is_return = np.asarray(is_return, dtype=bool)
    returned = np.bincount(owner[is_return], weights=amount[is_return], minlength=n)
    buy = ~is_return
    p_owner, p_day, p_amount = owner[buy], day[buy], amount[buy]
    first_day = np.full(n, -1, dtype=np.int64)
    last_day = np.full(n, -1, dtype=np.int64)
    first_gross = np.zeros(n)
    if len(p_day) == 0:
        none = np.zeros(n, dtype=np.int64)
        return PurchaseHistory(
            as_of, none, first_day, last_day, np.zeros(n), first_gross, returned, np.full(n, np.nan)
        )
    lo = int(p_day.min())
    width = int(p_day.max()) - lo + 1
    key, inverse = np.unique(p_owner * width + (p_day - lo), return_inverse=True)
    day_owner = key // width
    day_number = key % width + lo
    day_gross = np.bincount(inverse.ravel(), weights=p_amount, minlength=len(key))
    # Purchase days are sorted by owner then day: each owner's first and last are at its edges.
    days = np.bincount(day_owner, minlength=n).astype(np.int64)
    ends = np.cumsum(days)
    starts = ends - days
    bought = days > 0
    first_day[bought] = day_number[starts[bought]]
    last_day[bought] = day_number[ends[bought] - 1]
    gross = np.bincount(day_owner, weights=day_gross, minlength=n)
    first_gross[bought] = day_gross[starts[bought]]
    comeback = days_since_comeback(day_owner, day_number, as_of, gap_days, n)
    return PurchaseHistory(as_of, days, first_day, last_day, gross, first_gross, returned, comeback)
