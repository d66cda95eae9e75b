"""`orch report uplift | programme | personas | customers` and `orch decisions import`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from orchestrator.cli.common import (
    console,
    day_or_today,
    err_console,
    get_engine,
    new_app,
    parse_day,
    print_json,
)
from orchestrator.errors import InputError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from orchestrator.reports.uplift import UpliftReport

report_app = new_app(
    "Reports: uplift per campaign, treatment and segment; the whole programme; sub-personas."
)
decisions_app = new_app("The decision log: bring in past test/control experiments.")

UPLIFT_FORMATS = ("table", "json", "csv", "html", "png")
PERSONA_FORMATS = ("table", "json", "html", "png")
PROGRAMME_FORMATS = ("table", "json")
CUSTOMERS_FORMATS = ("table", "json", "csv")

CAMPAIGN = typer.Option(None, "--campaign", help="Only this campaign.")
TREATMENT = typer.Option(
    None, "--treatment", help="Only this treatment of --campaign (rows per treatment)."
)
SINCE = typer.Option(None, "--since", help="First decision date YYYY-MM-DD (default: the first).")
UNTIL = typer.Option(None, "--until", help="Last decision date YYYY-MM-DD (default: the last).")
AS_OF = typer.Option(
    None,
    "--as-of",
    help="Measure as of this date: windows ending by then are closed (default: today in the "
    "plan's time zone).",
)
OUT = typer.Option(
    None, "--out", help="Write to this file (png: files named after it, or into a folder)."
)


def _choice(value: str, choices: tuple[str, ...], option: str = "--format") -> str:
    if value not in choices:
        raise InputError(f"{option}: {value!r} is not one of {', '.join(choices)}")
    return value


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _write(text: str, out: str | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    Path(out).write_text(text, encoding="utf-8")
    err_console.print(f"wrote {out}")


def _write_rich(renderable: object, out: str | None) -> None:
    if isinstance(renderable, str):
        _write(renderable, out)
        return
    if out is None:
        console.print(renderable)
        return
    with open(out, "w", encoding="utf-8") as f:
        Console(file=f, width=200, color_system=None, highlight=False).print(renderable)
    err_console.print(f"wrote {out}")


def _need_out(fmt: str, out: str | None) -> None:
    if fmt == "png" and out is None:
        raise InputError("--format png writes files: give --out FILE.png or --out FOLDER/")


def _png_paths(out: str | None, stem: str, names: list[str]) -> list[Path]:
    _need_out("png", out)
    assert out is not None
    base = Path(out)
    if out.endswith(("/", "\\")) or base.is_dir():
        base.mkdir(parents=True, exist_ok=True)
        return [base / f"{stem}-{name}.png" for name in names]
    base.parent.mkdir(parents=True, exist_ok=True)
    return [base.with_name(f"{base.stem}-{name}.png") for name in names]


@report_app.command("uplift")
def uplift(
    campaign: str | None = CAMPAIGN,
    treatment: str | None = TREATMENT,
    by: str | None = typer.Option(
        None,
        "--by",
        help="Split rows by these fields, comma-separated: treatment, step (of a journey), "
        "lifecycle or rfm (the segment on the decision date), a computed feature or a "
        "customer attribute.",
    ),
    journey: str | None = typer.Option(
        None, "--journey", help="Only this journey's steps (use --by step for one row per step)."
    ),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    fmt: str = typer.Option("table", "--format", help="table, json, csv, html or png."),
    out: str | None = OUT,
    as_of: str | None = AS_OF,
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="Table columns, comma-separated, from: customers, customers_test, "
        "customers_control, conversion_test, conversion_control, conversion_uplift, value_test, "
        "value_control, uplift, relative, incremental, q, verdict, note (default: customers, "
        "uplift, incremental, verdict).",
    ),
    wide: bool = typer.Option(False, "--wide", help="Every table column."),
) -> None:
    """What each campaign added over its random control group, with 95% intervals.

    Per row: customers and decisions in test and control, conversion rates, value per decision
    (revenue in its measurement window minus treatment cost), absolute and relative uplift with
    customers as clusters, incremental value (uplift × test decisions), p-values and
    Benjamini-Hochberg q-values. Rows too small to measure are shown and marked. Outcomes of
    closed windows are matured first.
    """
    from orchestrator.reports.uplift import uplift_report

    _choice(fmt, UPLIFT_FORMATS)
    from orchestrator.reports.render import pick_columns

    pick_columns(_split(columns), wide=wide)  # a bad name is refused before any work
    today = day_or_today(as_of, option="--as-of")
    first = parse_day(since, option="--since")
    last = parse_day(until, option="--until")
    _need_out(fmt, out)
    engine = get_engine()
    detail = fmt in ("html", "png")
    with err_console.status("measuring uplift"):
        report = uplift_report(
            engine,
            as_of=today,
            campaign=campaign,
            treatment=treatment,
            by=_split(by),
            since=first,
            until=last,
            detail=detail,
            journey=journey,
        )
    if fmt == "json":
        _write_json(report.as_dict(), out)
    elif fmt == "csv":
        from orchestrator.reports.render import uplift_csv

        _write(uplift_csv(report), out)
    elif fmt == "table":
        from orchestrator.reports.render import uplift_table

        _write_rich(uplift_table(report, _split(columns), wide=wide), out)
    else:
        _uplift_visual(engine, report, fmt, out)


def _uplift_visual(
    engine: sa.Engine,
    report: UpliftReport,
    fmt: str,
    out: str | None,
    extra: Sequence[str] = (),
) -> None:
    from orchestrator.reports import html, plots
    from orchestrator.reports.page import page_parts

    parts = page_parts(engine, report, status=err_console.status)
    programme, programme_note, personas = parts.programme, parts.programme_note, parts.personas
    if fmt == "html":
        _write(
            html.uplift_html(
                report,
                programme=programme,
                personas=personas,
                programme_note=programme_note,
                extra=extra,
                customers=parts.customers,
            ),
            out,
        )
        return
    figures: list[tuple[str, bytes]] = [
        ("campaigns", plots.uplift_plot(report.campaign_rows or report.rows))
    ]
    if report.heatmap_rows:
        figures.append(("heatmap", plots.heatmap_plot(report.heatmap_rows, report.heatmap_by)))
    if report.timeline is not None and len(report.timeline.days) > 1:
        figures.append(("timeline", plots.timeline_plot(report.timeline)))
    if personas is not None:
        figures.append(("personas", plots.persona_plot(personas)))
    _write_pngs(out, "uplift", figures)


def _write_pngs(out: str | None, stem: str, figures: list[tuple[str, bytes]]) -> None:
    paths = _png_paths(out, stem, [name for name, _ in figures])
    for path, (_, png) in zip(paths, figures, strict=True):
        path.write_bytes(png)
        err_console.print(f"wrote {path}")


def _write_json(data: object, out: str | None) -> None:
    if out is None:
        print_json(data)
        return
    import json

    Path(out).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    err_console.print(f"wrote {out}")


@report_app.command("programme")
def programme(
    since: str | None = typer.Option(
        None, "--since", help="First day YYYY-MM-DD (default: the first decision date)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Last day YYYY-MM-DD (default: the day before --as-of)."
    ),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    out: str | None = OUT,
    as_of: str | None = AS_OF,
) -> None:
    """What all campaigns together added: everyone against the global control group.

    Value per customer over the period is revenue (all events) minus send costs; the global
    control group never gets anything, so the difference is the programme's uplift.
    """
    from orchestrator.reports.programme import programme_uplift
    from orchestrator.reports.render import programme_table

    _choice(fmt, PROGRAMME_FORMATS)
    today = day_or_today(as_of, option="--as-of")
    report = programme_uplift(
        get_engine(),
        as_of=today,
        since=parse_day(since, option="--since"),
        until=parse_day(until, option="--until"),
    )
    if fmt == "json":
        _write_json(report.as_dict(), out)
    else:
        _write_rich(programme_table(report), out)


@report_app.command("personas")
def personas(
    campaign: str = typer.Option(..., "--campaign", help="The campaign to explain."),
    treatment: str | None = TREATMENT,
    since: str | None = SINCE,
    until: str | None = UNTIL,
    features: str | None = typer.Option(
        None,
        "--features",
        help="Split only on these fields, comma-separated (default: every attribute, computed "
        "feature and lifecycle/rfm segment).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random halves."),
    min_leaf: int = typer.Option(
        100, "--min-leaf", help="Fewest test and fewest control customers a group may have."
    ),
    max_depth: int = typer.Option(3, "--max-depth", help="Most conditions in a group (1-8)."),
    criterion: str = typer.Option(
        "interaction", "--criterion", help="Split criterion: interaction or transformed."
    ),
    fmt: str = typer.Option("table", "--format", help="table, json, html or png."),
    as_plan: bool = typer.Option(
        False,
        "--as-plan",
        help="Write the plan split by the personas instead (YAML for `orch plan diff/apply`): "
        "the campaign keeps the groups where it works, a paused copy <id>_rest takes the rest.",
    ),
    out: str | None = OUT,
    as_of: str | None = AS_OF,
) -> None:
    """The sub-groups where a campaign works well, somewhat, not at all, or does harm.

    An honest uplift tree: groups are chosen on one random half of the customers and their
    effects estimated on the other half, each with its 95% interval, a label and a plain
    recommendation.
    """
    from orchestrator.reports.personas import persona_report

    _choice(fmt, PERSONA_FORMATS)
    today = day_or_today(as_of, option="--as-of")
    first = parse_day(since, option="--since")
    last = parse_day(until, option="--until")
    _need_out(fmt, out)
    with err_console.status(f"finding the sub-personas of {campaign}"):
        report = persona_report(
            get_engine(),
            campaign=campaign,
            treatment=treatment,
            as_of=today,
            since=first,
            until=last,
            features=_split(features) or None,
            seed=seed,
            min_leaf=min_leaf,
            max_depth=max_depth,
            criterion=criterion,
        )
    if as_plan:
        from orchestrator.reports.persona_plan import split_plan_yaml

        _write(split_plan_yaml(get_engine(), report, today=today), out)
        return
    if fmt == "json":
        _write_json(report.as_dict(), out)
    elif fmt == "table":
        from orchestrator.reports.render import persona_tree

        _write_rich(persona_tree(report), out)
    elif fmt == "html":
        from orchestrator.reports.html import persona_html

        _write(persona_html(report), out)
    else:
        from orchestrator.reports.plots import persona_plot

        _write_pngs(out, "personas", [("tree", persona_plot(report))])


@report_app.command("customers")
def customers(
    by: str = typer.Option(
        "lifecycle_stage",
        "--by",
        help="Layers, comma-separated: bands (discount_band, order_value_band, the plan's "
        "settings.bands), computed features, attributes.",
    ),
    tree: bool = typer.Option(
        True, "--tree/--no-tree", help="Also show what separates high from low future value."
    ),
    features: str | None = typer.Option(
        None,
        "--features",
        help="The tree's candidate fields, comma-separated (default: bands, attributes, "
        "segments and behaviour; not the value model's own inputs).",
    ),
    min_leaf: int = typer.Option(100, "--min-leaf", help="Fewest customers in a tree group."),
    max_depth: int = typer.Option(3, "--max-depth", help="Most conditions in a tree group (1-8)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random halves."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv (the layers)."),
    out: str | None = OUT,
) -> None:
    """Predicted future value (with 95% intervals) and customer counts by any layers.

    Uses the latest segmentation refresh (`orch segments refresh`); the tree's groups are found
    on one random half of the customers and valued on the other.
    """
    from orchestrator.reports.future_value import future_value_report
    from orchestrator.reports.render import customers_csv, customers_tables
    from orchestrator.storage.plan_repo import read_plan

    _choice(fmt, CUSTOMERS_FORMATS)
    if not 1 <= max_depth <= 8:
        raise InputError(f"--max-depth: must be 1-8, got {max_depth}")
    if min_leaf < 1:
        raise InputError(f"--min-leaf: must be at least 1, got {min_leaf}")
    from sqlmodel import Session

    engine = get_engine()
    with Session(engine) as session:
        bands = read_plan(session).settings.bands
    with err_console.status("predicted future value by layer"):
        report = future_value_report(
            engine,
            by=_split(by),
            bands=bands,
            tree=tree and fmt != "csv",
            tree_features=_split(features) or None,
            min_leaf=min_leaf,
            depth=max_depth,
            seed=seed,
        )
    if fmt == "json":
        _write_json(report.as_dict(), out)
    elif fmt == "csv":
        _write(customers_csv(report), out)
    else:
        _write_rich(customers_tables(report), out)


@decisions_app.command("import")
def decisions_import(
    file: str = typer.Argument(
        ...,
        help="CSV, Parquet or JSONL: customer_id, campaign_id, treatment_id, group, "
        "decision_date[, propensity, window_end, measurement_days, channel].",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="csv, parquet or jsonl (default: from the extension)."
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Write the good rows; put bad ones in a reject file."
    ),
    rejects: str | None = typer.Option(
        None, "--rejects", help="Reject file (default: FILE.rejects.csv)."
    ),
    new_campaigns: bool = typer.Option(
        False,
        "--new-campaigns",
        help="Accept campaigns and treatments the plan never had (historical tests).",
    ),
    measurement_days: int | None = typer.Option(
        None,
        "--measurement-days",
        help="Window length for lines without window_end or measurement_days whose campaign "
        "is not in the plan.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import past test/control decisions so their uplift can be reported.

    Campaigns must be in the plan unless --new-campaigns. Importing the same file twice adds
    nothing; a line contradicting a known decision (same customer and date) is an error. Their
    outcomes are computed from the events of their windows when a report runs.
    """
    from orchestrator.cli.common import progress_bar
    from orchestrator.decisions_import import import_decisions

    with progress_bar("decisions") as update:
        report = import_decisions(
            get_engine(),
            file,
            today=date.today(),
            fmt=fmt,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            new_campaigns=new_campaigns,
            measurement_days=measurement_days,
            progress=update,
        )
    if as_json:
        print_json(report.__dict__)
        return
    console.print(
        f"[green]imported[/green] decisions from {report.path}: {report.rows_read:,} rows read, "
        f"{report.inserted:,} new, {report.unchanged_or_duplicate:,} already known, "
        f"{report.rejected:,} rejected ({report.seconds:.1f} s)"
    )
    if report.new_campaigns:
        console.print(f"campaigns not in the plan: {', '.join(report.new_campaigns)}")
    if report.rejected:
        console.print(f"[yellow]rejected rows with reasons:[/yellow] {report.rejects_path}")
