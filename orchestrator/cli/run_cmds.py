"""`orch run`, `orch explain` and `orch export`: the daily decisions and what comes out of them."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import typer

from orchestrator.cli.common import (
    console,
    day_or_today,
    get_engine,
    parse_day,
    print_json,
    print_table,
    progress_bar,
    scheduler_option,
    settings,
    workers_option,
)

DATE_OPT = typer.Option(
    None, "--date", help="Run date YYYY-MM-DD (default: today in the plan's time zone)."
)


def _day(value: str | None) -> date:
    return day_or_today(value, option="--date")


def run(
    day: str | None = DATE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and report; write nothing."),
    force: bool = typer.Option(
        False, "--force", help="Redo a finished date, or run a date before the last run."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the policy's draws."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Customers per batch (default ORCH_BATCH_SIZE)."
    ),
    workers: int | None = workers_option("Decide the partitions"),
    scheduler: str | None = scheduler_option("decide on"),
    partition_size: int = typer.Option(
        250_000, "--partition-size", min=1, help="Customers per partition with --workers."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """Decide, for every customer, which campaign and treatment to send today, or none.

    Stages: target rules, global control, open measurement windows, cooldowns, exclusions,
    frequency caps, manual priorities, the policy, then the test/control split. Customers are
    decided in id-range partitions, batch by batch; each batch is committed with its
    partition's resume point, so a run that stopped resumes where it stopped. The same date and
    seed give the same decisions for any batch size and any number of workers.
    """
    from orchestrator.run import run_daily

    run_date = _day(day)
    size = batch_size or settings().batch_size
    with progress_bar(f"run {run_date}") as update:
        report = run_daily(
            get_engine(),
            day=run_date,
            dry_run=dry_run,
            force=force,
            seed=seed,
            batch_size=size,
            progress=update,
            workers=workers,
            scheduler=scheduler,
            partition_size=partition_size,
        )
    if as_json:
        print_json(report.__dict__)
        return
    if report.status == "already_done":
        console.print(
            f"the run for {run_date} is already done: nothing changed (use --force to redo it)"
        )
    show_summary(report)


def show_summary(report: Any) -> None:
    from orchestrator.engine.actions import NO_SEND_LABEL
    from orchestrator.engine.partition import RunCounts
    from orchestrator.engine.stages import STAGES

    c = report.counts
    if not c:
        return
    customers = c.get("customers", 0)
    gc = c.get("global_control", 0)
    head = "dry run (nothing written)" if report.status == "dry_run" else f"run {report.run_date}"
    resumed = (
        f", resumed after {report.resumed_after_batches} batches"
        if report.resumed_after_batches
        else ""
    )
    console.print(
        f"[bold]{head}[/bold]: {customers:,} customers, {c.get('targeted', 0):,} targeted by a "
        f"rule, {c.get('decided', 0):,} decisions, {gc:,} in the global control group "
        f"({gc / max(customers, 1):.1%}); policy {report.policy_name}{resumed}"
        + (
            f"; {report.partitions} partitions on {report.workers} workers"
            if getattr(report, "workers", 0)
            else ""
        )
        + (f"; {report.seconds:.1f} s" if report.seconds else "")
    )
    table: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
        lambda: {"test": 0, "control": 0}
    )
    by_action = RunCounts.from_json(c).by_action
    for (camp, treat, reason, group), n in by_action.items():
        table[(camp or NO_SEND_LABEL, treat, reason)][group] += n
    rows = [
        (
            camp,
            treat,
            reason,
            f"{v['test'] + v['control']:,}",
            # Sending nothing is no test: it has no control group to be compared with.
            *(
                ("-", "-", "-")
                if camp == NO_SEND_LABEL
                else (
                    f"{v['test']:,}",
                    f"{v['control']:,}",
                    f"{v['control'] / max(v['test'] + v['control'], 1):.1%}",
                )
            ),
        )
        for (camp, treat, reason), v in sorted(table.items())
    ]
    right = {k: "right" for k in ("decisions", "test", "control", "control share")}
    print_table(
        "Decisions",
        ["campaign", "treatment", "reason", "decisions", "test", "control", "control share"],
        rows,
        justify=right,
        empty="no decisions",
    )
    suppressed = c.get("suppressed", {})
    labels = {stage.name: stage.label for stage in STAGES}
    print_table(
        "Targeted by a rule but got nothing: the stage that removed the last option",
        ["stage", "customers"],
        [(labels.get(k, k), f"{v:,}") for k, v in suppressed.items()],
        justify={"customers": "right"},
        empty="none",
    )


def explain(
    customer_id: str = typer.Argument(..., help="Customer id."),
    day: str | None = DATE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show, for every campaign, why a customer could or could not get it, and the choice."""
    from orchestrator.explain import explain_customer

    x = explain_customer(get_engine(), customer_id, _day(day))
    if as_json:
        print_json(x.as_dict())
        return
    console.print(
        f"[bold]{x.customer_id}[/bold] on {x.day}: global control "
        f"{'yes (never contacted)' if x.in_global_control else 'no'}; measurement window "
        + (f"open until {x.window_open_until}" if x.window_open_until else "closed")
    )
    rows = []
    for line in x.campaigns:
        probs = ", ".join(
            f"{a['treatment']} {a['probability']:.0%}" for a in line.actions if a["probability"]
        )
        rows.append(
            (
                line.campaign_id,
                line.channel,
                line.priority,
                "yes" if line.possible else "no",
                "\n".join(line.why_not) or "-",
                probs or "-",
            )
        )
    print_table(
        "Campaigns live on this date",
        ["campaign", "channel", "priority", "possible", "why not", "probability"],
        rows,
    )
    if x.not_live:
        console.print(f"not live: {', '.join(x.not_live)}", soft_wrap=True)
    if x.no_send_probability is not None:
        console.print(f"probability of sending nothing: {x.no_send_probability:.0%}")
    if x.journeys:
        print_table(
            "Journeys",
            ["journey", "status", "entered", "next step", "group", "on this date"],
            [
                (
                    j["journey"],
                    j["status"],
                    j["entered_on"] or "-",
                    j["next_step"],
                    j["group"] or "-",
                    j["today"],
                )
                for j in x.journeys
            ],
        )
    console.print(f"the policy would choose now: {x.would_choose or 'nothing (no option)'}")
    if x.logged:
        lg = x.logged
        what = f"{lg['campaign']}/{lg['treatment']}" if lg["campaign"] else "(send nothing)"
        console.print(
            f"[bold]logged decision[/bold]: {what}, group {lg['group']}, reason {lg['reason']}, "
            f"propensity {lg['propensity']:.3f}"
            + (f", window until {lg['window_end']}" if lg["window_end"] else "")
        )
    else:
        console.print("logged decision: none for this date")


def export(
    out: str = typer.Argument(..., help="Output file (.csv, .jsonl or .parquet)."),
    day: str = typer.Option(..., "--date", help="Run date YYYY-MM-DD."),
    channel: str | None = typer.Option(None, "--channel", help="Only this channel."),
    fmt: str | None = typer.Option(
        None, "--format", help="csv, jsonl or parquet (default: from the extension)."
    ),
) -> None:
    """Write the send list of a run date (test group only) with each treatment's payload."""
    from orchestrator.export import export_send_list

    run_date = parse_day(day, option="--date")
    assert run_date is not None
    n = export_send_list(get_engine(), day=run_date, out=out, fmt=fmt, channel=channel)
    console.print(f"wrote {n:,} sends to {out}")
