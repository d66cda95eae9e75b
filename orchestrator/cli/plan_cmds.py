"""`orch plan ...`: the plan file as code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import sqlalchemy as sa

from orchestrator.cli.common import (
    actor,
    console,
    err_console,
    get_engine,
    new_app,
    print_changes,
    print_json,
)

app = new_app("Validate, diff, apply and export the plan file (campaigns, caps, exclusions).")


@app.command("validate")
def validate(
    file: str = typer.Argument(..., help="Plan YAML file, or - for standard input."),
    offline: bool = typer.Option(
        False, "--offline", help="Check the file alone, without the database."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print {ok, errors, warnings, counts} as JSON (exit code as without)."
    ),
) -> None:
    """Check a plan file; list every problem with its line (exit code 2 if any)."""
    from orchestrator.admin import plan_warnings, validate_plan_file
    from orchestrator.errors import PlanError

    engine = None if offline else _engine_if_initialized()
    try:
        plan = validate_plan_file(file, engine=engine)
    except PlanError as exc:
        problems = list(getattr(exc, "problems", [str(exc)]))
        if as_json:
            print_json({"file": file, "ok": False, "errors": problems, "warnings": []})
        else:
            for line in problems:
                err_console.print(f"error: {line}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    warnings = plan_warnings(plan, engine)
    n_t = sum(len(c.treatments) for c in plan.campaigns)
    if as_json:
        print_json(
            {
                "file": file,
                "ok": True,
                "errors": [],
                "warnings": warnings,
                "campaigns": len(plan.campaigns),
                "treatments": n_t,
                "caps": len(plan.caps),
                "exclusions": len(plan.exclusions),
                "journeys": len(plan.journeys),
            }
        )
        return
    for line in warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
    console.print(
        f"[green]ok[/green]: {file}: {len(plan.campaigns)} campaigns, {n_t} treatments, "
        f"{len(plan.caps)} caps, {len(plan.exclusions)} exclusions"
        + (f", {len(plan.journeys)} journeys" if plan.journeys else "")
    )


def _engine_if_initialized() -> sa.Engine | None:
    from orchestrator.storage.db import current_revision

    engine = get_engine(schema=False)
    try:
        return engine if current_revision(engine) is not None else None
    except Exception:  # no database file yet, or unreachable: validate the file alone
        return None


@app.command("diff")
def diff(
    file: str = typer.Argument(..., help="Plan YAML file, or - for standard input."),
    as_json: bool = typer.Option(False, "--json", help="Print the changes as JSON."),
) -> None:
    """Show what `orch plan apply FILE` would change."""
    from orchestrator.admin import diff_plan_file

    changes = diff_plan_file(get_engine(), file)
    if as_json:
        print_json([c.as_dict() for c in changes])
    else:
        print_changes(changes, none_message="no changes: the database already holds this plan")


@app.command("apply")
def apply(
    file: str = typer.Argument(..., help="Plan YAML file, or - for standard input."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the changes, write nothing."),
    as_json: bool = typer.Option(
        False, "--json", help="Print {changes, revision_id, dry_run, warnings} as JSON."
    ),
) -> None:
    """Make the stored plan equal to FILE in one transaction, with a revision and audit entry.

    Campaigns missing from FILE are archived (their history is kept), not deleted.
    """
    from orchestrator.admin import apply_plan_file, plan_warnings

    engine = get_engine()
    result = apply_plan_file(engine, file, actor=actor(), dry_run=dry_run)
    warnings = plan_warnings(result.plan, engine) if result.plan is not None else []
    if as_json:
        print_json(
            {
                "file": file,
                "changes": [c.as_dict() for c in result.changes],
                "revision_id": result.revision_id,
                "dry_run": dry_run,
                "warnings": warnings,
            }
        )
        return
    for line in warnings:
        err_console.print(f"warning: {line}", markup=False, soft_wrap=True)
    print_changes(result.changes, none_message="no changes: the database already holds this plan")
    if result.revision_id is not None:
        console.print(
            f"[green]applied[/green] {len(result.changes)} change(s) as plan revision "
            f"{result.revision_id}"
        )
    elif dry_run and result.changes:
        console.print("[dim]dry run: nothing written[/dim]")


@app.command("export")
def export(
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file, not stdout."),
    include_archived: bool = typer.Option(
        False, "--include-archived", help="Also list archived campaigns."
    ),
) -> None:
    """Print the stored plan as YAML (export, then apply, changes nothing)."""
    from orchestrator.admin import export_plan

    text = export_plan(get_engine(), include_archived=include_archived)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
