"""Uniform random choice among the eligible actions (the exploration baseline)."""

from __future__ import annotations

import numpy as np

from policies.base import Policy, uniform_over


class UniformPolicy(Policy):
    """Every eligible action equally likely.

    >>> import numpy as np
    >>> p = UniformPolicy()
    >>> p.action_dist(np.zeros((1, 2)), np.zeros((3, 1)), np.array([[True, False, True]]))
    array([[0.5, 0. , 0.5]])
    """

    name = "uniform"
    uses_context = False
    learns = False

    def action_dist(
        self, contexts: np.ndarray, action_features: np.ndarray, eligible: np.ndarray
    ) -> np.ndarray:
        return uniform_over(eligible)
