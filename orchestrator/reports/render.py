"""Text renderers of the reports: rich tables and trees, CSV and JSON-ready dicts."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestrator.reports.future_value import FutureValueReport
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


def compact_money(x: float, *, sign: bool = False) -> str:
    """Money in at most about seven characters: 1,234.56, 12.3k, 4.56M (never cut by a table).

    >>> [compact_money(v, sign=True) for v in (3.14159, -1234.5, 32652.17, 4.56e6)]
    ['+3.14', '-1,234', '+32.7k', '+4.56M']
    """
    if not np.isfinite(x):
        return "n/a"
    a, s = abs(x), ("+" if x >= 0 else "-") if sign else ("-" if x < 0 else "")
    if a < 1000:
        return f"{s}{a:.2f}"
    if a < 10_000:
        return f"{s}{a:,.0f}"
    if a < 1e6:
        return f"{s}{a / 1e3:.1f}k"
    if a < 1e9:
        return f"{s}{a / 1e6:.2f}M"
    return f"{s}{a / 1e9:.2f}G"


def bracketed(est: str, low: float, high: float, fmt: Any, center: float | None = None) -> str:
    """``est [low, high]``; ``est ± half`` when the interval is symmetric about ``center``
    (a difference of means: shorter, and the same information).

    >>> bracketed("+3.36", 2.2, 4.52, compact_money, center=3.36)
    '+3.36 ± 1.16'
    >>> bracketed("+40%", 0.08, 0.99, pct, center=0.4)
    '+40% [+8.0%, +99.0%]'
    """
    if not np.isfinite(low) or not np.isfinite(high):
        return est
    if center is not None and np.isfinite(center):
        half = (high - low) / 2
        if abs((low + high) / 2 - center) <= 1e-6 * max(1.0, abs(half)):
            return f"{est} ± {fmt(half)}"
    return f"{est} [{fmt(low, sign=True)}, {fmt(high, sign=True)}]"


@dataclass(frozen=True)
class Column:
    key: str  # what --columns names
    header: str
    cell: Callable[[UpliftRow], str]
    left: bool = False


COLUMNS = {
    c.key: c
    for c in (
        Column("customers", "customers\ntest/ctrl", lambda r: f"{r.n_test:,}/{r.n_control:,}"),
        Column("customers_test", "customers test", lambda r: f"{r.n_test:,}"),
        Column("customers_control", "customers control", lambda r: f"{r.n_control:,}"),
        Column("conversion_test", "conv. test", lambda r: pct(r.conversion_test)),
        Column("conversion_control", "conv. control", lambda r: pct(r.conversion_control)),
        Column(
            "conversion_uplift",
            "conv. uplift [95% CI]",
            lambda r: bracketed(
                pct(r.conversion_diff, sign=True), r.conversion_low, r.conversion_high, pct
            ),
        ),
        Column("value_test", "value test", lambda r: money(r.value_test)),
        Column("value_control", "value control", lambda r: money(r.value_control)),
        Column(
            "uplift",
            "uplift per\ndecision ±95%",
            lambda r: bracketed(
                compact_money(r.uplift, sign=True),
                r.uplift_low,
                r.uplift_high,
                compact_money,
                r.uplift,
            ),
        ),
        Column("relative", "relative", relative_text),
        Column(
            "incremental",
            "incremental\nvalue ±95%",
            lambda r: bracketed(
                compact_money(r.incremental, sign=True),
                r.incremental_low,
                r.incremental_high,
                compact_money,
                r.incremental,
            ),
        ),
        Column("q", "q", lambda r: p_text(r.q_value)),
        Column("verdict", "verdict", lambda r: r.verdict, left=True),
        Column(
            "note",
            "note",
            lambda r: r.note if r.note and r.status != "no_control" else "",
            left=True,
        ),
    )
}
DEFAULT_COLUMNS = ("customers", "uplift", "incremental", "verdict")
"""Fit 100 characters with a campaign id and one segment: the figures a marketer acts on."""
WIDE_COLUMNS = (
    "customers_test",
    "customers_control",
    "conversion_test",
    "conversion_control",
    "conversion_uplift",
    "value_test",
    "value_control",
    "uplift",
    "relative",
    "incremental",
    "q",
    "verdict",
    "note",
)


HTML_COLUMNS = (
    "customers_test",
    "customers_control",
    "conversion_uplift",
    "uplift",
    "relative",
    "incremental",
    "q",
    "verdict",
)
"""The HTML tables: every figure to act on fits a page's width (the rest is in --format csv)."""


def pick_columns(columns: Sequence[str] | None = None, *, wide: bool = False) -> list[Column]:
    """The columns named (``--columns``), else all (``--wide``), else the default four; an
    unknown name is an InputError listing the names."""
    names = list(columns) if columns else list(WIDE_COLUMNS if wide else DEFAULT_COLUMNS)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        from orchestrator.errors import InputError

        raise InputError(
            f"--columns: unknown column {unknown[0]!r} (choose from {', '.join(COLUMNS)})"
        )
    return [COLUMNS[n] for n in names]


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
        + (f"; amounts in {report.currency}" if report.currency else "")
    )


def uplift_table(
    report: UpliftReport, columns: Sequence[str] | None = None, *, wide: bool = False
) -> Group | str:
    """The report as a rich table with a header line and notes (plain text when very long).

    Figures are never cut or wrapped: their columns are as wide as their widest cell, and ids
    fold onto a second line rather than lose their end. ``wide`` (every column) is laid out as
    fixed-width text as wide as it takes, for a file or a wide terminal."""
    chosen = pick_columns(columns, wide=wide)
    if len(report.rows) > PLAIN_ABOVE or wide:  # wide: as long a line as it takes, never cut
        return plain_uplift_table(report, chosen)
    table = Table(header_style="bold", show_lines=False, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("campaign", overflow="fold")
    for name in report.by:
        table.add_column(name, overflow="fold")
    cells = [[c.cell(row) for c in chosen] for row in report.rows]
    for i, c in enumerate(chosen):
        widest = max([len(r[i]) for r in cells] + [len(h) for h in c.header.split("\n")])
        table.add_column(  # as wide as its widest cell: a figure never wraps or is cut
            c.header,
            justify="left" if c.left else "right",
            width=widest if c.key != "note" else None,
            no_wrap=c.key != "note",
        )
    for row, values in zip(report.rows, cells, strict=True):
        style = VERDICT_STYLES.get(row.verdict, "")
        table.add_row(
            row.campaign,
            *row.segment.values(),
            *(
                Text(v, style=style) if c.key == "verdict" else v
                for c, v in zip(chosen, values, strict=True)
            ),
        )
    notes = [Text(f"note: {n}", style="dim") for n in report.notes]
    return Group(Text(_header(report), style="bold"), table, *notes)


def plain_uplift_table(report: UpliftReport, columns: Sequence[Column] | None = None) -> str:
    """The same table as fixed-width text, for reports with thousands of rows."""
    chosen = list(columns) if columns is not None else pick_columns()
    head = ["campaign", *report.by, *(c.header.replace("\n", " ") for c in chosen)]
    body = [
        [row.campaign, *row.segment.values(), *(c.cell(row) for c in chosen)] for row in report.rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    left = set(range(1 + len(report.by))) | {
        1 + len(report.by) + i for i, c in enumerate(chosen) if c.left
    }

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


def customers_tables(report: FutureValueReport) -> Group:
    """Future value by layer, then the honest tree's groups."""
    horizon = f" over {report.horizon_days} days" if report.horizon_days else ""
    as_of = f" as of {report.as_of}" if report.as_of else ""
    o = report.overall
    head = Text(
        f"Predicted future value{horizon}{as_of}: {report.customers:,} customers with a "
        f"prediction, {compact_money(o.mean)} each on average "
        f"[{compact_money(o.ci_low)}, {compact_money(o.ci_high)}], {compact_money(o.total)} in all",
        style="bold",
    )
    parts: list[Any] = [head]
    if report.rows:
        table = Table(header_style="bold", box=box.SIMPLE_HEAD)
        for name in report.by:
            table.add_column(name)
        for label in ("customers", "share", "future value each (95% CI)", "total"):
            table.add_column(label, justify="right")
        for r in report.rows:
            table.add_row(
                *(r.labels[name] for name in report.by),
                f"{r.customers:,}",
                f"{r.share:.1%}",
                bracketed(compact_money(r.mean), r.ci_low, r.ci_high, compact_money),
                compact_money(r.total),
            )
        parts.append(table)
    if report.tree:
        tree = Table(
            title="What separates high from low future value (groups found on one half of the "
            "customers, valued on the other)",
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
        )
        tree.add_column("group")
        tree.add_column("customers", justify="right")
        tree.add_column("future value each (95% CI)", justify="right")
        for leaf in report.tree:
            tree.add_row(
                leaf.rule,
                f"{leaf.customers:,}",
                bracketed(compact_money(leaf.mean), leaf.ci_low, leaf.ci_high, compact_money),
            )
        parts.append(tree)
    parts += [Text(f"note: {n}", style="yellow") for n in report.notes]
    return Group(*parts)


def customers_csv(report: FutureValueReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*report.by, "customers", "share", "mean", "ci_low", "ci_high", "total"])
    for r in report.rows:
        w.writerow(
            [*(r.labels[n] for n in report.by), r.customers, f"{r.share:.6f}"]
            + [f"{v:.6f}" for v in (r.mean, r.ci_low, r.ci_high, r.total)]
        )
    return buf.getvalue()
