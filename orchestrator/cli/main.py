"""The `orch` entry point: wiring, global options, and one-line errors with exit codes."""

from __future__ import annotations

import os
import sys

import typer

from orchestrator import __version__
from orchestrator.cli import (
    admin_cmds,
    daemon_cmds,
    data_cmds,
    journey_cmds,
    learn_cmds,
    plan_cmds,
    report_cmds,
    run_cmds,
    segments_cmds,
    simulate_cmds,
)
from orchestrator.cli.common import console, err_console, get_engine, new_app, set_database_url

app = new_app(
    "Campaign orchestration: manual rules first, a contextual bandit for everyone else.\n\n"
    "The database is ORCH_DATABASE_URL (default sqlite:///orch.db)."
)


def _print_version(value: bool) -> None:
    if value:  # eager: before click asks for a command
        console.print(f"orch {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    database_url: str | None = typer.Option(
        None, "--database-url", help="Override ORCH_DATABASE_URL for this command."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
        expose_value=False,
    ),
) -> None:
    """Campaign orchestration engine."""
    set_database_url(database_url)


@app.command("init")
def init() -> None:
    """Create the database schema, or upgrade it to this version."""
    from orchestrator.storage.db import init_schema

    engine = get_engine(schema=False)
    before, after = init_schema(engine)
    url = engine.url.render_as_string(hide_password=True)
    if before == after:
        console.print(f"schema already up to date ({after}) on {url}")
    elif before is None:
        console.print(f"[green]created[/green] schema {after} on {url}")
    else:
        console.print(f"[green]upgraded[/green] schema {before} -> {after} on {url}")


app.add_typer(plan_cmds.app, name="plan")
app.add_typer(admin_cmds.campaigns_app, name="campaigns")
app.add_typer(admin_cmds.priority_app, name="priority")
app.add_typer(admin_cmds.exclusions_app, name="exclusions")
app.add_typer(admin_cmds.caps_app, name="caps")
app.add_typer(data_cmds.customers_app, name="customers")
app.add_typer(data_cmds.events_app, name="events")
app.add_typer(journey_cmds.journeys_app, name="journeys")
app.command("run")(run_cmds.run)
app.command("explain")(run_cmds.explain)
app.command("export")(run_cmds.export)
app.command("learn")(learn_cmds.learn)
app.command("evaluate")(learn_cmds.evaluate)
app.add_typer(learn_cmds.policy_app, name="policy")
app.add_typer(learn_cmds.logs_app, name="logs")
app.add_typer(segments_cmds.segments_app, name="segments")
app.add_typer(report_cmds.report_app, name="report")
app.add_typer(report_cmds.decisions_app, name="decisions")
app.command("daemon")(daemon_cmds.daemon)
app.command("status")(daemon_cmds.status)
app.command("audit")(admin_cmds.audit)
app.command("simulate")(simulate_cmds.simulate)
app.command("scenarios")(simulate_cmds.list_scenarios)
app.command("demo")(simulate_cmds.demo)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: errors become one line on stderr and an exit code (2 bad input)."""
    from orchestrator.errors import OrchestratorError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("ORCH_DEBUG") == "1"
    try:
        # Not standalone: a usage error (a bad option value, a missing argument) becomes one
        # line like every other bad input, instead of click's "Usage:" block.
        result = app(args=args, prog_name="orch", standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except OrchestratorError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if code is not None and not hasattr(exc, "format_message"):  # typer.Exit(n)
            sys.exit(code)
        if type(exc).__name__ == "Abort":
            err_console.print("aborted", markup=False)
            sys.exit(1)
        if code is not None:  # click's usage errors (typer vendors click: match by shape)
            message = exc.format_message()  # type: ignore[attr-defined]
            if type(exc).__name__ == "NoArgsIsHelpError":
                err_console.print(message, markup=False, soft_wrap=True)
                sys.exit(code)
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            err_console.print(f"error: {where}{message}", markup=False, soft_wrap=True)
            sys.exit(code)
        if debug:
            raise
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    run()
