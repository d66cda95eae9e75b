"""`orch` with the report and decisions groups, for tests run before they are wired in main.

``python -m tests.reports.orch_entry ARGS`` behaves as ``orch ARGS``; once
``orchestrator/cli/main.py`` registers the groups this adds nothing.
"""

from __future__ import annotations

from orchestrator.cli import main as cli_main
from orchestrator.cli import report_cmds


def run() -> None:
    names = {group.name for group in cli_main.app.registered_groups}
    if "report" not in names:
        cli_main.app.add_typer(report_cmds.report_app, name="report")
    if "decisions" not in names:
        cli_main.app.add_typer(report_cmds.decisions_app, name="decisions")
    cli_main.run()


if __name__ == "__main__":
    run()
