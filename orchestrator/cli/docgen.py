"""Generate docs/cli.md from the commands' own --help (a test checks it is current).

Run ``python -m orchestrator.cli.docgen > docs/cli.md`` (or ``make docs``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import typer

WIDTH = 100


def _walk(command: Any, name: str, parent: Any) -> Iterator[tuple[str, str]]:
    """Yield (command path, help text) for a command and all its sub-commands."""
    ctx = command.make_context(
        name,
        [],
        parent=parent,
        resilient_parsing=True,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    yield ctx.command_path, command.get_help(ctx).rstrip()
    for sub in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
        yield from _walk(command.get_command(ctx, sub), sub, ctx)


def render() -> str:
    """The whole CLI reference as Markdown."""
    os.environ["COLUMNS"] = str(WIDTH)
    from orchestrator.cli.main import app

    parts = [
        "# CLI reference\n",
        "Generated from `orch --help` by `python -m orchestrator.cli.docgen` (`make docs`); "
        "`tests/test_docs.py` fails when it drifts from the code.\n",
        "Exit codes: 0 success, 1 runtime failure, 2 bad input (nothing written).\n",
    ]
    for path, text in _walk(typer.main.get_command(app), "orch", None):
        level = "#" * min(path.count(" ") + 2, 4)
        parts.append(f"{level} `{path}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
