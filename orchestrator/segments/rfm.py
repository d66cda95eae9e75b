"""RFM: quintile scores of recency, frequency and monetary value, and the named cells of the grid.

Scores are relative to the customers scored together (those with at least one purchase): a
customer's score is ``1 + floor(5 * w / (n - 1))`` (at most 5), where ``w`` counts the ``n``
scored customers strictly worse, so equal values always share a score, the worst score 1 and the
best 5 (unless the best value is shared by so many that it covers more than a fifth).
Frequency is heavily tied (most customers buy once): one-time buyers all score F = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.segments.config import SCORE_LEVELS, RfmCell, RfmConfig

NO_CELL = -1


def quantile_scores(
    values: np.ndarray, *, higher_is_better: bool = True, levels: int = SCORE_LEVELS
) -> np.ndarray:
    """Score ``values`` (n,) from 1 to ``levels`` by rank; NaN (not scored) gets 0; int8 (n,).

    >>> quantile_scores(np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])).tolist()
    [1, 2, 3, 4, 5, 0]
    >>> quantile_scores(np.array([0.0, 0.0, 0.0, 1.0, 7.0])).tolist()
    [1, 1, 1, 4, 5]
    >>> quantile_scores(np.array([3.0, 10.0, 40.0]), higher_is_better=False).tolist()
    [5, 3, 1]
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(values), dtype=np.int8)
    valid = ~np.isnan(values)
    n = int(valid.sum())
    if n == 0:
        return out
    v = values[valid]
    ordered = np.sort(v)
    if higher_is_better:
        worse = np.searchsorted(ordered, v, side="left")
    else:
        worse = n - np.searchsorted(ordered, v, side="right")
    out[valid] = np.minimum(1 + (levels * worse) // max(n - 1, 1), levels).astype(np.int8)
    return out


def second_axis(f_score: np.ndarray, m_score: np.ndarray, axis: str) -> np.ndarray:
    """The grid's second axis: F, or the mean of F and M rounded half up (0 stays 0).

    >>> second_axis(np.array([1, 4, 5, 0]), np.array([2, 4, 2, 0]), "fm").tolist()
    [2, 4, 4, 0]
    """
    if axis == "f":
        return np.asarray(f_score, dtype=np.int8)
    return ((f_score.astype(np.int16) + m_score + 1) // 2).astype(np.int8)


def cell_grid(cells: Sequence[RfmCell], levels: int = SCORE_LEVELS) -> np.ndarray:
    """Cell index for each (R, second axis) score pair, first match wins; int16 (levels, levels)."""
    grid = np.full((levels, levels), NO_CELL, dtype=np.int16)
    for index in range(len(cells) - 1, -1, -1):  # earlier cells overwrite later ones
        cell = cells[index]
        grid[cell.r[0] - 1 : cell.r[1], cell.fm[0] - 1 : cell.fm[1]] = index
    return grid


def assign_cells(
    r_score: np.ndarray, axis_score: np.ndarray, cells: Sequence[RfmCell]
) -> np.ndarray:
    """Index into ``cells`` of each customer's cell, ``NO_CELL`` where unscored (0); int16 (n,).

    >>> from orchestrator.segments.config import DEFAULT_CELLS
    >>> codes = assign_cells(np.array([5, 1, 0]), np.array([5, 1, 0]), DEFAULT_CELLS)
    >>> [DEFAULT_CELLS[c].name if c >= 0 else None for c in codes]
    ['champions', 'lost', None]
    """
    grid = cell_grid(cells)
    scored = (r_score > 0) & (axis_score > 0)
    out = np.full(len(r_score), NO_CELL, dtype=np.int16)
    out[scored] = grid[r_score[scored] - 1, axis_score[scored] - 1]
    return out


@dataclass(frozen=True)
class RfmScores:
    """Scores 1..5 (0: no purchase) and cell codes (``NO_CELL``: no purchase), each (n,)."""

    r: np.ndarray
    f: np.ndarray
    m: np.ndarray
    cell: np.ndarray
    names: tuple[str, ...]

    def cell_names(self) -> list[str | None]:
        """The cell names, None where there is no cell (n,)."""
        lookup = np.array([*self.names, None], dtype=object)
        return list(lookup[np.where(self.cell >= 0, self.cell, len(self.names))])


def score_rfm(
    recency: np.ndarray, frequency: np.ndarray, monetary: np.ndarray, config: RfmConfig
) -> RfmScores:
    """Score customers (n,) and put them in cells; NaN recency marks a customer with no purchase.

    ``recency`` in days (lower is better), ``frequency`` and ``monetary`` higher is better.
    """
    bought = ~np.isnan(np.asarray(recency, dtype=np.float64))
    freq = np.where(bought, np.asarray(frequency, dtype=np.float64), np.nan)
    money = np.where(bought, np.asarray(monetary, dtype=np.float64), np.nan)
    r = quantile_scores(recency, higher_is_better=False)
    f = quantile_scores(freq)
    m = quantile_scores(money)
    cell = assign_cells(r, second_axis(f, m, config.second_axis), config.cells)
    return RfmScores(r=r, f=f, m=m, cell=cell, names=tuple(c.name for c in config.cells))
