"""The learning curve of a simulation as a PNG: value per customer-day, and share of the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulations.loop import SimulationResult

COLOURS = {
    "oracle": "#222222",
    "lints": "#1f77b4",
    "vw": "#2ca02c",
    "egreedy": "#9467bd",
    "best-single": "#ff7f0e",
    "static": "#d62728",
    "uniform": "#7f7f7f",
}


def _rolling(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` days (shorter at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - width, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def learning_curve(result: SimulationResult, path: str | Path, *, width: int = 7) -> Path:
    """Write the curve: each contender's 7-day mean incremental value per customer-day, and
    (with an oracle) its cumulative regret."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_oracle = "oracle" in result.runs
    fig, axes = plt.subplots(
        1, 2 if has_oracle else 1, figsize=(12 if has_oracle else 7, 4.2), squeeze=False
    )
    ax = axes[0][0]
    days = np.arange(result.days)
    for name, run in result.runs.items():
        ax.plot(
            days,
            _rolling(np.asarray(run.value), width),
            label=name,
            color=COLOURS.get(name),
            lw=2.2 if name in ("lints", "vw") else 1.4,
        )
        for day in run.promotions[:1]:
            ax.axvline(day, color=COLOURS.get(name), ls=":", lw=1)
    ax.axvspan(result.measure_from, result.days - 1, color="#eeeeee", zorder=0)
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_title(f"{result.scenario}: incremental value per customer-day ({width}-day mean)")
    ax.set_xlabel("day (shaded: measured; dotted: first promotion)")
    ax.legend(fontsize=8, frameon=False)
    if has_oracle:
        ax2 = axes[0][1]
        for name in result.runs:
            if name != "oracle":
                ax2.plot(days, result.regret(name), label=name, color=COLOURS.get(name))
        ax2.set_title("cumulative regret against the oracle (per customer)")
        ax2.set_xlabel("day")
        ax2.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
