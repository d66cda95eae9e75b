"""Basket analysis: "customers of this group who bought X also bought Y", and each customer's
best next category.

A customer's basket is the set of categories they ever bought. A rule ``X → Y`` inside a group (a
micro-segment) counts the group's customers whose basket holds both:

- ``support``: that count over the group's customers;
- ``confidence``: that count over the group's customers who bought ``X``: P(Y | X);
- ``lift``: confidence over the share of the group's customers who bought ``Y`` (above 1: a buyer
  of ``X`` is likelier than the group's average customer to buy ``Y``).

A group's rule with fewer than ``min_customers`` buyers of ``X`` is replaced by the same rule over
the whole base (a small micro-segment borrows the base's evidence). A customer's
``next_category`` is the category not yet bought with the highest confidence given a category
they did buy; ``next_category_confidence`` is that confidence. Confidence, not lift, ranks: inside
a micro-segment (clustered on the category mix among other things) most customers share their
categories, so a category almost everyone there bought has a lift near 1 and is still the best
offer to the few who have not. Customers with no rule (nobody who bought what they bought
bought anything else) get none.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

MAX_CATEGORIES = 30  # the most bought categories are analysed; the rest are ignored
MIN_CUSTOMERS = 30  # buyers of X behind a group's rule; fewer: the base's rule
TOP_RULES = 5  # rules per group kept with the model (by lift) for the reports


@dataclass(frozen=True)
class Rules:
    """Counts per group ``(G, C, C)`` (``[g, x, y]`` for ``X → Y``) and per group ``(G, C)``."""

    categories: tuple[str, ...]
    customers: np.ndarray  # (G,) customers of each group
    buyers: np.ndarray  # (G, C) customers who bought the category
    both: np.ndarray  # (G, C, C) customers who bought x and y (0 on the diagonal)

    def confidence(self) -> np.ndarray:
        return np.divide(
            self.both,
            self.buyers[:, :, None],
            out=np.zeros(self.both.shape),
            where=self.buyers[:, :, None] > 0,
        )

    def lift(self) -> np.ndarray:
        share = np.divide(
            self.buyers,
            self.customers[:, None],
            out=np.zeros(self.buyers.shape),
            where=self.customers[:, None] > 0,
        )
        return np.divide(
            self.confidence(),
            share[:, None, :],
            out=np.zeros(self.both.shape),
            where=share[:, None, :] > 0,
        )

    def support(self) -> np.ndarray:
        return np.divide(
            self.both,
            self.customers[:, None, None],
            out=np.zeros(self.both.shape),
            where=self.customers[:, None, None] > 0,
        )


def baskets(owner: np.ndarray, codes: np.ndarray, n: int, n_categories: int) -> np.ndarray:
    """``(n, C)`` bool: whether each customer bought each category (``codes`` -1 not counted)."""
    out = np.zeros((n, n_categories), dtype=bool)
    use = codes >= 0
    out[owner[use], codes[use]] = True
    return out


def count_rules(
    bought: np.ndarray, group: np.ndarray, n_groups: int, categories: Sequence[str]
) -> Rules:
    """Rule counts per group (``group (n,)`` codes, -1: in no group, counted in none)."""
    n, c = bought.shape
    rows = np.flatnonzero(group >= 0)
    # A (G x n) indicator: one sparse product sums any per-customer column within each group.
    g = sparse.csr_matrix((np.ones(len(rows)), (group[rows], rows)), shape=(max(n_groups, 1), n))
    customers = np.asarray(g.sum(axis=1)).ravel()[:n_groups]
    as_float = bought.astype(np.float64)
    buyers = np.asarray(g @ as_float)[:n_groups]
    both = np.zeros((n_groups, c, c))
    for x in range(c):
        both[:, x, :] = np.asarray(g @ (as_float * as_float[:, x : x + 1]))[:n_groups]
        both[:, x, x] = 0.0
    return Rules(tuple(categories), customers, buyers, both)


def pooled(rules: Rules) -> Rules:
    """The same counts over every group together (one group)."""
    return Rules(
        rules.categories,
        rules.customers.sum(keepdims=True),
        rules.buyers.sum(axis=0, keepdims=True),
        rules.both.sum(axis=0, keepdims=True),
    )


def next_categories(
    bought: np.ndarray, group: np.ndarray, rules: Rules, min_customers: int = MIN_CUSTOMERS
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's best next category (code, -1: none) and its confidence (NaN: none)."""
    n, c = bought.shape
    if c == 0:  # no purchase names a category
        return np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
    base = pooled(rules)
    usable = rules.buyers[:, :, None] >= min_customers  # (G, C, 1): the group's own rule
    conf = np.where(usable, rules.confidence(), base.confidence())
    # Customers in no group use the base's rules.
    conf = np.concatenate([conf, base.confidence()])
    g = np.where(group >= 0, group, len(conf) - 1)
    score = np.zeros((n, c))
    for x in range(c):
        has = bought[:, x]
        if has.any():
            score[has] = np.maximum(score[has], conf[g[has], x, :])
    score[bought] = 0.0  # not a category already bought
    best = score.argmax(axis=1)
    value = score[np.arange(n), best]
    found = value > 0
    return np.where(found, best, -1), np.where(found, value, np.nan)


def top_rules(rules: Rules, labels: Sequence[str], k: int = TOP_RULES) -> dict[str, list[Any]]:
    """The ``k`` rules of highest lift per group (at least ``MIN_CUSTOMERS`` buyers of X), as
    JSON-ready rows."""
    conf, lift, support = rules.confidence(), rules.lift(), rules.support()
    out: dict[str, list[Any]] = {}
    for gi, label in enumerate(labels):
        ok = (rules.buyers[gi][:, None] >= MIN_CUSTOMERS) & (rules.both[gi] > 0)
        xs, ys = np.nonzero(ok)
        order = np.argsort(-lift[gi][xs, ys], kind="stable")[:k]
        out[label] = [
            {
                "bought": rules.categories[x],
                "then": rules.categories[y],
                "customers": int(rules.both[gi, x, y]),
                "support": float(support[gi, x, y]),
                "confidence": float(conf[gi, x, y]),
                "lift": float(lift[gi, x, y]),
            }
            for x, y in zip(xs[order], ys[order], strict=True)
        ]
    return out
