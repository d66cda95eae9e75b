"""Lifecycle stages from purchase dates: prospect, new, active, at_risk, lapsed, reactivated.

With ``recency`` = days since the last purchase, ``tenure`` = days since the first, and
``comeback`` = days since the latest purchase that came after a gap longer than
``reactivation_gap_days`` (all counted on the as-of day), the first rule that holds wins:

1. ``prospect``: no purchase;
2. ``new``: ``tenure <= new_days``;
3. ``reactivated``: ``comeback <= reactivated_days``;
4. ``active``: ``recency <= active_days``;
5. ``at_risk``: ``recency <= lapsed_days``;
6. ``lapsed``: otherwise (``recency > lapsed_days``).
"""

from __future__ import annotations

import numpy as np

from orchestrator.features import LIFECYCLE_STAGES
from orchestrator.segments.config import LifecycleConfig

PROSPECT, NEW, ACTIVE, AT_RISK, LAPSED, REACTIVATED = (
    LIFECYCLE_STAGES.index(s)
    for s in ("prospect", "new", "active", "at_risk", "lapsed", "reactivated")
)


def days_since_comeback(
    owner: np.ndarray, day: np.ndarray, as_of: int, gap_days: int, n: int
) -> np.ndarray:
    """Days from the latest comeback purchase of each of ``n`` customers to ``as_of``; NaN if none.

    ``owner`` (k,) are customer indices and ``day`` (k,) day numbers of distinct purchase days,
    sorted by owner then day. A comeback is a purchase day more than ``gap_days`` after the
    customer's previous purchase day. Returns float64 (n,).

    >>> owner = np.array([0, 0, 0, 1, 1, 2])
    >>> day = np.array([0, 200, 210, 5, 100, 50])
    >>> days_since_comeback(owner, day, as_of=220, gap_days=180, n=4).tolist()
    [20.0, nan, nan, nan]
    """
    out = np.full(n, np.nan)
    if len(day) < 2:
        return out
    same = owner[1:] == owner[:-1]
    after_gap = np.flatnonzero(same & (day[1:] - day[:-1] > gap_days)) + 1
    if len(after_gap) == 0:
        return out
    # Sorted by day within each owner, so the last assignment per owner is its latest comeback.
    out[owner[after_gap]] = as_of - day[after_gap]
    return out


def lifecycle_stages(
    recency: np.ndarray, tenure: np.ndarray, comeback: np.ndarray, config: LifecycleConfig
) -> np.ndarray:
    """Stage codes (index into ``LIFECYCLE_STAGES``) of customers; int8 (n,).

    ``recency``, ``tenure`` and ``comeback`` are days (float64, n,); NaN ``recency`` means no
    purchase, NaN ``comeback`` no comeback.

    >>> from orchestrator.segments.config import LifecycleConfig
    >>> codes = lifecycle_stages(
    ...     np.array([np.nan, 3, 10, 100, 200, 5]),
    ...     np.array([np.nan, 3, 400, 400, 400, 500]),
    ...     np.array([np.nan, np.nan, np.nan, np.nan, np.nan, 5]),
    ...     LifecycleConfig(),
    ... )
    >>> [LIFECYCLE_STAGES[c] for c in codes]
    ['prospect', 'new', 'active', 'at_risk', 'lapsed', 'reactivated']
    """
    recency = np.asarray(recency, dtype=np.float64)
    # NaN compares False everywhere, so each rule below only applies where its inputs are known.
    with np.errstate(invalid="ignore"):
        conditions = [
            np.isnan(recency),
            tenure <= config.new_days,
            comeback <= config.reactivated_days,
            recency <= config.active_days,
            recency <= config.lapsed_days,
        ]
    choices = [PROSPECT, NEW, REACTIVATED, ACTIVE, AT_RISK]
    return np.select(conditions, choices, default=LAPSED).astype(np.int8)
