"""Text renderers of the reports: rich tables and trees, CSV and JSON-ready dicts."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.reports.personas import PersonaReport
from orchestrator.reports.programme import ProgrammeReport
from orchestrator.reports.uplift import UpliftReport, UpliftRow

VERDICT_STYLES = {
    "gain": "bold green",
    "loss": "bold red",
    "no clear effect": "",
    "too small to say": "yellow",
    "no control group": "yellow",
    "no conversions": "yellow",
}
LABEL_STYLES = {
    "highly effective": "bold green",
    "somewhat effective": "green",
    "not effective": "",
    "harmful": "bold red",
    "too small to say": "yellow",
}


def money(x: float, *, sign: bool = False) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:+,.2f}" if sign else f"{x:,.2f}"


def pct(x: float, *, sign: bool = False) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%"


def interval(est: str, low: float, high: float, fmt: Any) -> str:
    if not np.isfinite(low) or not np.isfinite(high):
        return est
    return f"{est} ({fmt(low, sign=True)} to {fmt(high, sign=True)})"


def p_text(p: float) -> str:
    if not np.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def relative_text(row: UpliftRow) -> str:
    if not np.isfinite(row.relative):
        return "n/a"
    est = pct(row.relative, sign=True)
    if row.status != "ok":
        return est
    if not np.isfinite(row.relative_low):
        return f"{est} (unbounded)"
    return f"{est} ({pct(row.relative_low, sign=True)} to {pct(row.relative_high, sign=True)})"


UPLIFT_COLUMNS = (
    "customers test",
    "customers control",
    "conv. test",
    "conv. control",
    "conv. uplift (95% CI)",
    "value test",
    "value control",
    "uplift / decision (95% CI)",
    "relative",
    "incremental value (95% CI)",
    "q",
    "verdict",
)


def uplift_cells(row: UpliftRow) -> list[str]:
    return [
        f"{row.n_test:,}",
        f"{row.n_control:,}",
        pct(row.conversion_test),
        pct(row.conversion_control),
        interval(pct(row.conversion_diff, sign=True), row.conversion_low, row.conversion_high, pct),
        money(row.value_test),
        money(row.value_control),
        interval(money(row.uplift, sign=True), row.uplift_low, row.uplift_high, money),
        relative_text(row),
        interval(
            money(row.incremental, sign=True), row.incremental_low, row.incremental_high, money
        ),
        p_text(row.q_value),
        row.verdict + (f" ({row.note})" if row.note and row.status != "no_control" else ""),
    ]


PLAIN_ABOVE = 200
"""Tables with more rows are laid out as plain text: rich takes ~5 ms a row to lay out."""


def _header(report: UpliftReport) -> str:
    what = f"campaign {report.campaign}" if report.campaign else "all campaigns"
    if report.treatment:
        what += f", treatment {report.treatment}"
    return (
        f"Uplift of {what}: decisions {report.since} to {report.until}, measured as of "
        f"{report.as_of} ({report.decisions:,} decisions, {report.customers:,} customers); "
        "value is per decision: the revenue inside its measurement window minus the treatment cost"
    )


def uplift_table(report: UpliftReport) -> Group | str:
    """The report as a rich table with a header line and notes (plain text when very long)."""
    if len(report.rows) > PLAIN_ABOVE:
        return plain_uplift_table(report)
    table = Table(header_style="bold", show_lines=False)
    table.add_column("campaign")
    for name in report.by:
        table.add_column(name)
    for name in UPLIFT_COLUMNS:
        table.add_column(name, justify="left" if name == "verdict" else "right")
    for row in report.rows:
        cells = uplift_cells(row)
        style = VERDICT_STYLES.get(row.verdict, "")
        table.add_row(
            row.campaign,
            *row.segment.values(),
            *cells[:-1],
            Text(cells[-1], style=style),
        )
    notes = [Text(f"note: {n}", style="dim") for n in report.notes]
    return Group(Text(_header(report), style="bold"), table, *notes)


def plain_uplift_table(report: UpliftReport) -> str:
    """The same table as fixed-width text, for reports with thousands of rows."""
    head = ["campaign", *report.by, *UPLIFT_COLUMNS]
    body = [[row.campaign, *row.segment.values(), *uplift_cells(row)] for row in report.rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    left = set(range(1 + len(report.by))) | {len(head) - 1}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [_header(report), "", line(head), rule, *(line(r) for r in body), ""]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def uplift_csv(report: UpliftReport) -> str:
    """One line per row, every figure in its own column (empty where undefined)."""
    rows = [r.as_dict() for r in report.rows]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def programme_table(report: ProgrammeReport) -> Group:
    head = Text(
        f"Programme uplift {report.since} to {report.until} (as of {report.as_of}): everyone "
        f"against the global control group ({report.fraction:.0%} of customers, never "
        "contacted)",
        style="bold",
    )
    table = Table(header_style="bold", show_header=True)
    table.add_column("")
    table.add_column("global control", justify="right")
    table.add_column("everyone else", justify="right")
    table.add_column("uplift (95% CI)", justify="right")
    table.add_row("customers", f"{report.n_control:,}", f"{report.n_rest:,}", "")
    table.add_row(
        "value per customer",
        money(report.value_control),
        money(report.value_rest),
        interval(money(report.uplift, sign=True), report.uplift_low, report.uplift_high, money),
    )
    table.add_row(
        "bought something",
        pct(report.conversion_control),
        pct(report.conversion_rest),
        interval(
            pct(report.conversion_diff, sign=True),
            report.conversion_low,
            report.conversion_high,
            pct,
        ),
    )
    table.add_row(
        "incremental value",
        "",
        "",
        interval(
            money(report.incremental, sign=True),
            report.incremental_low,
            report.incremental_high,
            money,
        ),
    )
    foot = Text(
        f"p-value {p_text(report.p_value)}; everyone else's value is revenue "
        f"{money(report.revenue_rest)} minus send costs {money(report.cost_rest)} per customer",
        style="dim",
    )
    return Group(head, table, foot, *(Text(f"note: {n}", style="dim") for n in report.notes))


def node_line(node: Any, *, root_name: str) -> Text:
    ci = (
        f" ({money(node.low, sign=True)} to {money(node.high, sign=True)})"
        if np.isfinite(node.low)
        else ""
    )
    text = Text(node.branch or root_name, style="bold")
    text.append(
        f": uplift {money(node.effect, sign=True)}{ci} per decision, "
        f"{node.n_test:,} test / {node.n_control:,} control"
    )
    if node.is_leaf:
        text.append(f" — {node.label}", style=LABEL_STYLES.get(node.label, ""))
    return text


def persona_tree(report: PersonaReport) -> Group:
    """The tree as a rich tree, then the leaves with their recommendations."""
    what = report.campaign + (f" / {report.treatment}" if report.treatment else "")
    tree = report.tree
    head = Text(
        f"Sub-personas of {what}: {report.customers:,} customers, decisions {report.since} to "
        f"{report.until}; splits chosen on {tree.n_train:,} customers, effects estimated on the "
        f"other {tree.n_estimate:,} (seed {tree.seed}, criterion {tree.criterion}, at least "
        f"{tree.min_leaf} customers per group in a leaf)",
        style="bold",
    )
    nodes = tree.nodes
    rich_nodes: dict[int, Tree] = {}
    root = Tree(node_line(nodes[0], root_name="everyone"))
    rich_nodes[0] = root
    for node in nodes[1:]:
        assert node.parent is not None
        rich_nodes[node.id] = rich_nodes[node.parent].add(node_line(node, root_name=""))
    table = Table(header_style="bold", title="What to do", title_justify="left")
    table.add_column("group")
    table.add_column("customers", justify="right")
    table.add_column("label")
    table.add_column("recommendation")
    for leaf in tree.leaves:
        table.add_row(
            leaf.description,
            f"{leaf.n_test + leaf.n_control:,}",
            Text(leaf.label, style=LABEL_STYLES.get(leaf.label, "")),
            leaf.recommendation,
        )
    parts: list[Any] = [head, root, table]
    if len(tree.leaves) == 1:
        parts.append(
            Text(
                "note: no split was significant: the effect looks the same for everyone "
                "(or the data is too small to tell groups apart)",
                style="dim",
            )
        )
    if report.still_open:
        parts.append(
            Text(f"note: {report.still_open:,} decisions are still open, not counted", style="dim")
        )
    return Group(*parts)
