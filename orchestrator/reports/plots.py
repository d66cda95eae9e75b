"""Report plots as PNG bytes (matplotlib, no display needed).

Each function takes report objects and returns the PNG of one figure: the uplift and interval of
each campaign (or treatment), a segment × campaign heat map, the cumulative incremental value
over time, and the persona tree.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from orchestrator.reports.future_value import FutureValueReport
    from orchestrator.reports.personas import PersonaReport
    from orchestrator.reports.uplift import Timeline, UpliftRow

VERDICT_COLOURS = {
    "gain": "#1a9850",
    "loss": "#d73027",
    "no clear effect": "#4575b4",
    "too small to say": "#bdbdbd",
    "no control group": "#bdbdbd",
    "no conversions": "#bdbdbd",
}
LABEL_COLOURS = {
    "highly effective": "#1a9850",
    "somewhat effective": "#a6d96a",
    "not effective": "#d9d9d9",
    "harmful": "#d73027",
    "too small to say": "#fee08b",
}
DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def _money(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    if abs(x) >= 1e6:
        return f"{x / 1e6:+.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:+.1f}k"
    return f"{x:+,.0f}" if abs(x) >= 100 else f"{x:+.2f}"


def uplift_plot(rows: Sequence[UpliftRow], *, title: str = "Uplift per decision") -> bytes:
    """Forest plot: each row's value uplift per decision with its interval, zero marked."""
    plt = _pyplot()
    rows = list(rows)
    height = max(2.2, 0.42 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        colour = VERDICT_COLOURS.get(row.verdict, "#4575b4")
        if np.isfinite(row.uplift_low):
            ax.plot([row.uplift_low, row.uplift_high], [yi, yi], color=colour, lw=2.5)
            ax.plot(row.uplift, yi, "o", color=colour, ms=8)
        elif np.isfinite(row.uplift):
            ax.plot(row.uplift, yi, "o", mfc="white", mec=colour, ms=8)
        text = f"{_money(row.incremental)} total · {row.verdict}"
        ax.annotate(
            text,
            (1.01, yi),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
            color=colour,
        )
    ax.axvline(0, color="#444444", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([r.label for r in rows], fontsize=9)
    ax.set_xlabel("value uplift per decision (test − control), 95% interval")
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    return _png(fig)


def heat_colours(
    grid: np.ndarray, cells: dict[tuple[int, int], UpliftRow], cmap: Any, norm: Any
) -> np.ndarray:
    """RGBA per cell: the uplift's colour when significant (q <= 0.05), the same colour most of
    the way to white when not, grey where nothing could be measured."""
    colours = cmap(norm(np.nan_to_num(grid)))
    rgba = np.empty_like(colours)
    rgba[:] = (0.93, 0.93, 0.93, 1.0)
    for (i, j), r in cells.items():
        if r.status == "ok":
            rgba[i, j] = colours[i, j]
            if not r.q_value <= 0.05:
                rgba[i, j, :3] = 0.3 * colours[i, j, :3] + 0.7
    return rgba


def heatmap_plot(
    rows: Sequence[UpliftRow], by: Sequence[str], *, title: str | None = None
) -> bytes:
    """Segment × campaign heat map of the value uplift per decision: cells whose uplift is not
    significant (q > 0.05) are painted pale, so only the findings stand out; unmeasurable cells
    are grey."""
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import TwoSlopeNorm

    campaigns = list(dict.fromkeys(r.campaign for r in rows))
    segs = list(dict.fromkeys(r.segment_label for r in rows))
    grid = np.full((len(segs), len(campaigns)), np.nan)
    cells: dict[tuple[int, int], UpliftRow] = {}
    for r in rows:
        i, j = segs.index(r.segment_label), campaigns.index(r.campaign)
        cells[(i, j)] = r
        if r.status == "ok":
            grid[i, j] = r.uplift
    finite = grid[np.isfinite(grid)]
    span = float(np.abs(finite).max()) if len(finite) else 1.0
    span = span or 1.0
    fig, ax = plt.subplots(
        figsize=(max(5.0, 1.3 * len(campaigns) + 3), max(2.5, 0.45 * len(segs) + 1.5))
    )
    ax.set_facecolor("#eeeeee")
    norm = TwoSlopeNorm(vmin=-span, vcenter=0.0, vmax=span)
    cmap = colormaps["RdYlGn"]
    ax.imshow(heat_colours(grid, cells, cmap, norm), aspect="auto")
    image = ScalarMappable(norm=norm, cmap=cmap)
    for (i, j), r in cells.items():
        if r.status == "ok":
            star = " *" if r.q_value <= 0.05 else ""
            text = f"{r.uplift:+.2f}{star}"
        else:
            text = "n/a"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="#222222")
    ax.set_xticks(range(len(campaigns)))
    ax.set_xticklabels(campaigns, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(len(segs)))
    ax.set_yticklabels(segs, fontsize=9)
    fig.colorbar(image, ax=ax, label="uplift per decision")
    ax.set_title(
        title
        or f"Uplift per decision by {' × '.join(by)} (* q ≤ 0.05, pale: not significant; "
        "n/a: too small)",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )
    return _png(fig)


def timeline_plot(timeline: Timeline, *, top: int = 6) -> bytes:
    """Cumulative incremental value over decision dates: the total with its band, top campaigns."""
    plt = _pyplot()
    days = np.array(timeline.days, dtype="datetime64[D]")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.fill_between(
        days, timeline.total_low, timeline.total_high, color="#555555", alpha=0.15, lw=0
    )
    ax.plot(days, timeline.total, color="#222222", lw=2.5, label="all campaigns (95% band)")
    measured = np.isfinite(timeline.incremental).any(axis=1)
    last = np.array(
        [
            row[np.isfinite(row)][-1] if ok else 0.0
            for row, ok in zip(timeline.incremental, measured, strict=True)
        ]
    )
    pick = [i for i in np.argsort(-np.abs(last), kind="stable") if measured[i]][:top]
    palette = plt.get_cmap("tab10")
    for k, i in enumerate(pick):
        ax.plot(
            days,
            timeline.incremental[i],
            lw=1.4,
            color=palette(k % 10),
            label=timeline.campaigns[i],
        )
    ax.axhline(0, color="#444444", lw=1, ls="--")
    ax.set_ylabel("incremental value (money)")
    ax.set_title(
        "Cumulative incremental value by decision date", loc="left", fontsize=11, fontweight="bold"
    )
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    ax.set_xlim(days[0], days[-1])  # the first decision date, not a margin before it
    fig.autofmt_xdate()
    return _png(fig)


def persona_plot(report: PersonaReport) -> bytes:
    """The persona tree: each node's group, honest uplift and interval; leaves by label."""
    plt = _pyplot()
    nodes = report.tree.nodes
    leaves = [n for n in nodes if n.is_leaf]
    x: dict[int, float] = {}
    for k, leaf in enumerate(leaves):
        x[leaf.id] = float(k)
    for node in reversed(nodes):
        if node.children:
            x[node.id] = (x[node.children[0]] + x[node.children[1]]) / 2
    depth = max(n.depth for n in nodes)
    # A tree that did not split is one box: a small figure, not a large empty one around it.
    height = 1.9 * (depth + 1) + 0.6 if depth else 1.5
    fig, ax = plt.subplots(figsize=(max(6.0, 3.1 * len(leaves)), height))
    for node in nodes:
        if node.parent is not None:
            parent = nodes[node.parent]
            ax.plot(
                [x[parent.id], x[node.id]],
                [-parent.depth, -node.depth],
                color="#888888",
                lw=1,
                zorder=1,
            )
    for node in nodes:
        colour = LABEL_COLOURS.get(node.label, "#ffffff") if node.is_leaf else "#deebf7"
        ci = f"[{node.low:+.2f}, {node.high:+.2f}]" if np.isfinite(node.low) else "[n/a]"
        lines = [
            node.branch or f"{report.campaign}: everyone",
            f"uplift {node.effect:+.2f} {ci}",
            f"{node.n_test:,} test / {node.n_control:,} control",
        ]
        if node.is_leaf:
            lines.append(node.label.upper())
        ax.text(
            x[node.id],
            -node.depth,
            "\n".join(lines),
            ha="center",
            va="center",
            fontsize=8,
            zorder=2,
            bbox={"boxstyle": "round,pad=0.5", "fc": colour, "ec": "#555555", "lw": 0.8},
        )
    ax.set_xlim(-0.7, len(leaves) - 0.3)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    what = report.campaign + (f" / {report.treatment}" if report.treatment else "")
    ax.set_title(
        f"Sub-personas of {what}: honest uplift per decision (95% interval)"
        + ("" if depth else "\nno split: the effect looks the same for everyone"),
        loc="center",
        fontsize=11,
        fontweight="bold",
    )
    return _png(fig)


def value_plot(report: FutureValueReport) -> bytes:
    """Mean predicted future value per layer with its 95% interval, the overall mean marked."""
    plt = _pyplot()
    rows = [r for r in report.rows if np.isfinite(r.mean)]
    height = max(2.2, 0.42 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        if np.isfinite(row.ci_low):
            ax.plot([row.ci_low, row.ci_high], [yi, yi], color="#4575b4", lw=2.5)
        ax.plot(row.mean, yi, "o", color="#4575b4", ms=8)
        ax.annotate(
            f"{row.customers:,} customers",
            (1.01, yi),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
        )
    ax.axvline(report.overall.mean, color="#444444", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([" · ".join(r.labels.values()) for r in rows], fontsize=9)
    ax.set_xlabel("predicted future value per customer, 95% interval (dashed: everyone)")
    ax.set_title(
        f"Future value by {', '.join(report.by)}", loc="left", fontsize=11, fontweight="bold"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    return _png(fig)
