"""`orch segments refresh | model | transitions`: customer segmentation and its history."""

from __future__ import annotations

from typing import Any

import typer

from orchestrator.cli.common import (
    console,
    day_or_today,
    err_console,
    get_engine,
    new_app,
    parse_day,
    print_json,
    print_table,
    progress_bar,
)

segments_app = new_app(
    "Customer segments: RFM, lifecycle stages, predicted value (BG/NBD, Gamma-Gamma), behaviour."
)

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of tables.")


@segments_app.command("refresh")
def refresh(
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Use events up to the end of this day (default: today in the plan's time zone).",
    ),
    horizon_days: int | None = typer.Option(
        None, "--horizon-days", help="Horizon of expected purchases and value (default 90)."
    ),
    time_unit: str | None = typer.Option(
        None, "--time-unit", help="Time unit of the BG/NBD fit: days or weeks (default days)."
    ),
    config_file: str | None = typer.Option(
        None, "--config", help="YAML or JSON file with segmentation settings (docs/segments.md)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Compute every customer's features as of a day; record lifecycle and RFM changes."""
    from sqlmodel import Session

    from orchestrator.segments import refresh_segments
    from orchestrator.segments.config import load_config
    from orchestrator.segments.refresh import STEPS
    from orchestrator.storage.plan_repo import plan_segments

    engine = get_engine()
    with Session(engine) as session:
        base = plan_segments(session)
    config = load_config(config_file, horizon_days=horizon_days, time_unit=time_unit, base=base)
    day = day_or_today(as_of, option="--as-of", engine=engine)
    with progress_bar("segments", total=len(STEPS)) as update:
        result = refresh_segments(engine, as_of=day, config=config, progress=update)
    if as_json:
        print_json(result.__dict__)
        return
    seconds = sum(result.timings.values())
    changes = ", ".join(f"{k} {v:,}" for k, v in result.history_changes.items())
    console.print(
        f"[green]refreshed[/green] segments as of {result.as_of}: {result.customers:,} customers, "
        f"{result.purchasers:,} with purchases, {result.repeat_customers:,} repeat "
        f"({seconds:.1f} s)"
    )
    console.print(f"customers entering a new segment: {changes}")
    _counts_table("Lifecycle stages", result.lifecycle, result.customers)
    _counts_table("RFM cells", result.rfm, result.purchasers)
    _micro_stages(result.model)
    _model_summary(result.model)


def _micro_stages(model: dict[str, Any]) -> None:
    """Clusters per stage, as the refresh chose them."""
    stages = (model.get("micro_segments") or {}).get("stages") or {}
    if not stages:
        return
    print_table(
        "Micro-segments (behaviour clusters inside each stage; `orch segments model` names them)",
        ["stage", "clusters", "silhouette", "largest"],
        [
            (
                stage,
                str(fit["k"]),
                "" if fit["silhouette"] is None else f"{fit['silhouette']:.2f}",
                max(fit["clusters"], key=lambda c: c["size"])["name"] if fit["clusters"] else "",
            )
            for stage, fit in stages.items()
        ],
        justify={"clusters": "right", "silhouette": "right"},
    )


def _micro_clusters(model: dict[str, Any]) -> None:
    """Every micro-segment: its label (for rules and reports), name and size."""
    stages = (model.get("micro_segments") or {}).get("stages") or {}
    rows = [
        (c["label"], c["name"], f"{c['size']:,}")
        for fit in stages.values()
        for c in fit["clusters"]
    ]
    if rows:
        print_table(
            "Micro-segments (rule field micro_segment, report --by micro)",
            ["micro_segment", "what sets it apart in its stage", "customers"],
            rows,
            justify={"customers": "right"},
        )


def _counts_table(title: str, counts: dict[str, int], total: int) -> None:
    print_table(
        title,
        ["segment", "customers", "share"],
        [(k, f"{v:,}", f"{v / total:.1%}" if total else "") for k, v in counts.items()],
        justify={"customers": "right", "share": "right"},
    )


def _model_summary(model: dict[str, Any]) -> None:
    bg, gg = model.get("bgnbd"), model.get("gamma_gamma")
    if bg:
        console.print(
            f"BG/NBD ({model['time_unit']}): r={bg['r']:.4g} alpha={bg['alpha']:.4g} "
            f"a={bg['a']:.4g} b={bg['b']:.4g}"
            + ("" if bg["converged"] else " [yellow](not converged)[/yellow]")
        )
    if gg:
        console.print(
            f"Gamma-Gamma: p={gg['p']:.4g} q={gg['q']:.4g} v={gg['v']:.4g}"
            + ("" if gg["converged"] else " [yellow](not converged)[/yellow]")
        )
    for note in model.get("notes", []):
        err_console.print(f"warning: {note}", markup=False, soft_wrap=True)


MEANINGS = {
    "r": "shape of the purchase rates across customers (Gamma): small = very unequal",
    "alpha": "scale of the rates: the mean rate is r / alpha purchases per time unit",
    "a": "dropout after a purchase (Beta(a, b)): the mean chance is a / (a + b)",
    "b": "with a: large a + b = customers drop out alike",
    "p": "shape of one customer's order values (Gamma): large = steady orders",
    "q": "shape of the spread of mean order values across customers: must exceed 1",
    "v": "scale of that spread: the mean order value is p v / (q - 1)",
}


def _params_table(title: str, fit: dict[str, Any], names: tuple[str, ...]) -> None:
    errors = fit.get("standard_errors") or {}
    print_table(
        title,
        ["parameter", "value", "std. error", "what it says"],
        [(name, _num(fit[name]), _num(errors.get(name)), MEANINGS[name]) for name in names],
        justify={"value": "right", "std. error": "right"},
    )


def _bgnbd_summary(bg: dict[str, Any], unit: str) -> str:
    """The BG/NBD fit in words: the mean purchase rate and the mean dropout chance."""
    rate = bg["r"] / bg["alpha"]
    drop = bg["a"] / (bg["a"] + bg["b"])
    per_year = rate * (365.0 if unit == "days" else 52.0)
    return (
        f"in words: an active customer buys on average {per_year:.2g} times a year "
        f"({rate:.3g} per {unit[:-1]}), and after each purchase leaves for good with a chance "
        f"of {drop:.1%} on average"
    )


def _fit_line(fit: dict[str, Any], who: str) -> None:
    converged = (
        "converged" if fit["converged"] else f"[yellow]NOT converged[/yellow] ({fit['message']})"
    )
    console.print(
        f"log-likelihood {fit['log_likelihood']:,.2f} on {fit['n_customers']:,} {who}; "
        f"{converged} after {fit['iterations']} iterations"
    )


def _money(value: float | None) -> str:
    return "unbounded (q <= 1)" if value is None else f"{value:,.2f}"


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


@segments_app.command("model")
def model(as_json: bool = JSON_OPT) -> None:
    """Show the fitted BG/NBD and Gamma-Gamma parameters and fit diagnostics (no refit)."""
    from orchestrator.segments.model_store import require_model

    with get_engine().connect() as conn:
        stored = require_model(conn)
    if as_json:
        print_json(stored)
        return
    console.print(
        f"segmentation as of {stored['as_of']}: {stored['customers']:,} customers, "
        f"{stored['purchasers']:,} with purchases, {stored['repeat_customers']:,} repeat; "
        f"time unit {stored['time_unit']}, horizon {stored['horizon_days']} days"
    )
    bg = stored.get("bgnbd")
    if bg:
        _params_table(
            f"BG/NBD (rates per {stored['time_unit'][:-1]})", bg, ("r", "alpha", "a", "b")
        )
        _fit_line(bg, "customers")
        console.print(_bgnbd_summary(bg, stored["time_unit"]))
        print_table(
            "Customers by repeat purchases: observed vs expected",
            ["repeat purchases", "observed", "expected", "difference"],
            [
                (
                    b["repeat_purchases"],
                    f"{b['observed']:,.0f}",
                    "" if b["expected"] is None else f"{b['expected']:,.1f}",
                    "" if b["expected"] is None else f"{b['observed'] - b['expected']:+,.1f}",
                )
                for b in stored.get("frequency_buckets", [])
            ],
            justify={"observed": "right", "expected": "right", "difference": "right"},
        )
    gg = stored.get("gamma_gamma")
    if gg:
        _params_table("Gamma-Gamma (order values)", gg, ("p", "q", "v"))
        _fit_line(gg, "repeat customers")
        console.print(
            f"mean order value {_money(gg['population_mean_order_value'])}; correlation of "
            f"frequency and order value {gg['frequency_value_correlation']:+.3f} "
            "(the model assumes none)"
        )
    _micro_clusters(stored)
    for note in stored.get("notes", []):
        err_console.print(f"warning: {note}", markup=False, soft_wrap=True)


@segments_app.command("transitions")
def transitions(
    start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--to", help="Second day (YYYY-MM-DD)."),
    kind: str = typer.Option(
        "lifecycle", "--kind", help="lifecycle, rfm or micro (micro-segments)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Migration matrix: customers by segment on --from (rows) and on --to (columns)."""
    from orchestrator.segments import transition_matrix
    from orchestrator.segments.history import check_kind

    check_kind(kind)
    first = parse_day(start, option="--from")
    second = parse_day(end, option="--to")
    assert first is not None and second is not None
    with get_engine().connect() as conn:
        matrix = transition_matrix(conn, kind, first, second)
    if as_json:
        print_json(matrix.to_dict())
        return
    # Columns are numbered (the rows say which number is which segment) so that eleven RFM
    # cells still fit a terminal.
    labels = [*matrix.rows, *(c for c in matrix.columns if c not in matrix.rows)]
    number = {label: str(i + 1) for i, label in enumerate(labels)}
    totals = matrix.counts.sum(axis=1)
    rows = [
        (
            f"{number[label]} {label}",
            *(f"{c:,}" if c else "." for c in matrix.counts[i]),
            f"{int(totals[i]):,}",
        )
        for i, label in enumerate(matrix.rows)
    ]
    column_totals = matrix.counts.sum(axis=0)
    rows.append(("total", *(f"{int(c):,}" for c in column_totals), f"{matrix.total:,}"))
    columns = [f"on {first}", *(number[c] for c in matrix.columns), "total"]
    _print_wide_table(
        f"{kind} on {first} (rows) and on {second} (columns): {matrix.moved:,} of "
        f"{matrix.total:,} customers moved",
        columns,
        rows,
    )
    missing = [f"{number[c]} {c}" for c in matrix.columns if c not in matrix.rows]
    if missing:
        console.print("columns only: " + ", ".join(missing))


def _print_wide_table(title: str, columns: list[str], rows: list[tuple[str, ...]]) -> None:
    """A table that is not squeezed into 80 columns when the output is not a terminal."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    widths = [max(len(str(r[i])) for r in [tuple(columns), *rows]) for i in range(len(columns))]
    needed = sum(widths) + 3 * len(widths) + 1
    if console.is_terminal or needed <= console.width:
        console.print(table)
        return
    from rich.console import Console

    Console(width=needed, highlight=False).print(table)
