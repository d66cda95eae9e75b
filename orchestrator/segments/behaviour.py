"""Behaviour layers: appetite for discounts (how often, how deep), and the category and channel a
customer prefers.

Both look at purchase events only (what people buy says more than what they browse): the
discount affinity is the share of a customer's purchases that carried a discount among those
whose discount is known; the preferred value is the most frequent non-null one, ties going to
the value bought most recently, then to the smaller code.
"""

from __future__ import annotations

import numpy as np


def discount_affinity(owner: np.ndarray, discount: np.ndarray, n: int) -> np.ndarray:
    """Share of purchases with ``discount > 0`` per customer among purchases whose discount is
    known (not NaN); NaN for customers with none. ``owner`` and ``discount`` (k,); float64 (n,).

    >>> discount_affinity(np.array([0, 0, 0, 1, 2]), np.array([0.1, 0.0, np.nan, np.nan, 0.0]), 4)
    array([0.5, nan, 0. , nan])
    """
    known = ~np.isnan(discount)
    total = np.bincount(owner[known], minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore"):
        hits = np.bincount(owner[known], weights=discount[known] > 0, minlength=n)
        return np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan)


def mean_discount(owner: np.ndarray, discount: np.ndarray, n: int) -> np.ndarray:
    """Mean discount of a customer's purchases whose discount is known (0 for a full-price
    purchase); NaN for customers with none. ``owner`` and ``discount`` (k,); float64 (n,).

    >>> mean_discount(np.array([0, 0, 0, 1, 2]), np.array([0.3, 0.0, np.nan, np.nan, 0.0]), 4)
    array([0.15,  nan, 0.  ,  nan])
    """
    known = ~np.isnan(discount)
    total = np.bincount(owner[known], minlength=n).astype(np.float64)
    depth = np.bincount(owner[known], weights=discount[known], minlength=n)
    return np.where(total > 0, depth / np.where(total > 0, total, 1.0), np.nan)


def preferred(owner: np.ndarray, code: np.ndarray, when: np.ndarray, n: int) -> np.ndarray:
    """The most frequent ``code`` (>= 0; -1 is null) per customer, -1 for none; int32 (n,).

    ``owner``, ``code`` and ``when`` (a sortable time, e.g. a day number) are (k,). Ties go to
    the code with the latest ``when``, then to the smaller code.

    >>> preferred(np.array([0, 0, 0, 1, 1, 2]), np.array([3, 1, 1, 2, 5, -1]),
    ...           np.array([1, 2, 3, 9, 8, 1]), 4).tolist()
    [1, 2, -1, -1]
    """
    out = np.full(n, -1, dtype=np.int32)
    keep = code >= 0
    if not keep.any():
        return out
    owner, code, when = owner[keep], code[keep].astype(np.int64), when[keep]
    span = int(code.max()) + 1
    pair = owner.astype(np.int64) * span + code
    order = np.argsort(pair)
    pair = pair[order]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    counts = np.diff(np.r_[starts, len(pair)])
    latest = np.maximum.reduceat(when[order], starts)
    pairs = pair[starts]  # sorted: by owner, then code
    pair_owner, pair_code = pairs // span, pairs % span
    owner_starts = np.flatnonzero(np.r_[True, pair_owner[1:] != pair_owner[:-1]])
    # Narrow each owner's pairs down: most frequent, then latest; the first left has the
    # smallest code.
    best = counts == np.repeat(
        np.maximum.reduceat(counts, owner_starts), np.diff(np.r_[owner_starts, len(pairs)])
    )
    tie_latest = np.where(best, latest, np.iinfo(np.int64).min)
    best &= tie_latest == np.repeat(
        np.maximum.reduceat(tie_latest, owner_starts), np.diff(np.r_[owner_starts, len(pairs)])
    )
    chosen = np.flatnonzero(best)
    first = np.r_[True, pair_owner[chosen][1:] != pair_owner[chosen][:-1]]
    out[pair_owner[chosen[first]]] = pair_code[chosen[first]]
    return out
