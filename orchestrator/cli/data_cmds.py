"""`orch customers import|show` and `orch events import`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from orchestrator.cli.common import (
    console,
    get_engine,
    new_app,
    print_json,
    print_table,
    progress_bar,
)

customers_app = new_app("Customers and their attributes.")
events_app = new_app("Transactions and other events (the source of rewards and features).")

FMT = typer.Option(None, "--format", help="csv, parquet or jsonl (default: from the extension).")
SKIP = typer.Option(
    False, "--skip-invalid", help="Write the good rows; put bad ones in a reject file."
)
REJECTS = typer.Option(
    None,
    "--rejects",
    help="Reject file (default: beside FILE, named after it: events.csv -> events.rejects.csv).",
)
JSON_OPT = typer.Option(False, "--json", help="Print the import report as JSON.")


def _show(kind: str, report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.__dict__)
        return
    rate = report.rows_read / report.seconds if report.seconds > 0 else float("inf")
    console.print(
        f"[green]imported[/green] {kind} from {report.path}: {report.rows_read:,} rows read, "
        f"{report.inserted:,} new, {report.updated:,} updated, "
        f"{report.unchanged_or_duplicate:,} already known, {report.rejected:,} rejected "
        f"({report.seconds:.1f} s, {rate:,.0f} rows/s)"
    )
    if report.new_attributes:
        attrs = ", ".join(f"{k} ({v})" for k, v in report.new_attributes.items())
        console.print(f"new attributes: {attrs}")
    if report.rejected:
        console.print(f"[yellow]rejected rows with reasons:[/yellow] {report.rejects_path}")
    for warning in getattr(report, "warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)


def _import(
    kind: str,
    use_case: Callable[..., Any],
    file: str,
    fmt: str | None,
    skip_invalid: bool,
    rejects: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    with progress_bar(kind) as update:
        report = use_case(
            get_engine(),
            file,
            fmt=fmt,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            progress=update,
            **options,
        )
    _show(kind, report, as_json)


@customers_app.command("import")
def customers_import(
    file: str = typer.Argument(..., help="CSV, Parquet or JSONL with customer_id + attributes."),
    fmt: str | None = FMT,
    skip_invalid: bool = SKIP,
    rejects: str | None = REJECTS,
    as_json: bool = JSON_OPT,
) -> None:
    """Insert or update customers; attributes are merged, an empty cell clears one."""
    from orchestrator.imports import import_customers

    _import("customers", import_customers, file, fmt, skip_invalid, rejects, as_json)


@customers_app.command("show")
def customers_show(
    customer_id: str = typer.Argument(..., help="The customer's id."),
    limit: int = typer.Option(10, "--limit", min=1, help="Latest decisions and events shown."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
) -> None:
    """What the engine knows of one customer: attributes, segments, decisions, events."""
    from orchestrator.engine.actions import NO_SEND_LABEL
    from orchestrator.reports.customer import customer_profile

    p = customer_profile(get_engine(), customer_id, limit=limit)
    if as_json:
        print_json(p)
        return
    console.print(
        f"[bold]customer {p['customer_id']}[/bold]: {p['events_total']:,} events, "
        f"{p['amount_total']:,.2f} in amounts"
    )
    print_table("Attributes", ["attribute", "value"], list(p["attributes"].items()))
    shown = [(k, _cell(v)) for k, v in p["features"].items() if v is not None]
    print_table(
        f"Features (refresh as of {p['features_as_of']})",
        ["feature", "value"],
        shown,
        empty="none yet: run `orch segments refresh`",
    )
    print_table(
        "Segment history",
        ["kind", "segment", "from", "until"],
        [(h["kind"], h["value"], h["from"], h["to"] or "now") for h in p["segments"]],
        empty="none yet",
    )
    print_table(
        f"Latest decisions (at most {limit})",
        ["date", "campaign", "treatment", "channel", "group", "reason", "window end", "value"],
        [
            (
                d["run_date"],
                d["campaign"] or NO_SEND_LABEL,
                d["treatment"],
                d["channel"],
                d["group"],
                d["reason"],
                d["window_end"],
                "open" if d["value"] is None else f"{d['value']:,.2f}",
            )
            for d in p["decisions"]
        ],
        empty="none yet",
        justify={"value": "right"},
    )
    print_table(
        f"Latest events (at most {limit})",
        ["when", "type", "amount", "discount", "category", "channel"],
        [
            (
                e["occurred_at"][:16],
                e["type"],
                f"{e['amount']:,.2f}",
                e["discount"],
                e["category"],
                e["channel"],
            )
            for e in p["events"]
        ],
        empty="none",
        justify={"amount": "right"},
    )


def _cell(value: Any) -> str:
    return f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


@events_app.command("import")
def events_import(
    file: str = typer.Argument(
        ..., help="CSV, Parquet or JSONL: customer_id, occurred_at, type, amount[, event_id]."
    ),
    fmt: str | None = FMT,
    skip_invalid: bool = SKIP,
    rejects: str | None = REJECTS,
    update: bool = typer.Option(
        False,
        "--update",
        help="Correct stored events: an event_id already stored with other content takes the "
        "file's (without it, such a row is refused).",
    ),
    known_customers_only: bool = typer.Option(
        False,
        "--known-customers-only",
        help="Refuse the file if an event's customer is not in the customer table (without "
        "it, such events are imported and counted in a warning).",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Add events; importing the same file again adds nothing (keyed on event_id or content).

    An event_id already stored with other content (a corrected amount) is refused, naming its
    line, unless --update."""
    from orchestrator.imports import import_events

    _import(
        "events",
        import_events,
        file,
        fmt,
        skip_invalid,
        rejects,
        as_json,
        update=update,
        known_customers_only=known_customers_only,
    )
