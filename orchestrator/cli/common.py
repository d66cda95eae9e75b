"""What every command shares: the engine, consoles, tables and JSON output."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from orchestrator.config import Settings, get_settings

# Piped output (a log, a file) gets room for wide tables instead of rich's 80 columns, unless
# COLUMNS says how wide.
console = Console(
    highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
)
err_console = Console(stderr=True, highlight=False)

_state: dict[str, Any] = {"database_url": None, "debug": False}


def new_app(help_text: str) -> typer.Typer:
    """A sub-command group with plain (not rich-boxed) help, so docs are generated verbatim."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        rich_markup_mode=None,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
    )


def workers_option(what: str) -> Any:
    """``--workers N``: ``what`` on a local Dask cluster of N worker processes (PostgreSQL)."""
    return typer.Option(
        None,
        "--workers",
        min=1,
        help=f"{what} on a local Dask cluster of N worker processes (PostgreSQL).",
    )


def scheduler_option(what: str) -> Any:
    """``--scheduler ADDRESS`` (or ``ORCH_DASK_SCHEDULER``): a running Dask scheduler."""
    return typer.Option(
        None,
        "--scheduler",
        envvar="ORCH_DASK_SCHEDULER",
        help=f"Address of a running Dask scheduler to {what}, e.g. tcp://10.0.0.5:8786.",
    )


def set_database_url(url: str | None) -> None:
    _state["database_url"] = url


def settings() -> Settings:
    """The settings, with the --database-url override applied."""
    s = get_settings()
    if _state["database_url"]:
        s = s.model_copy(update={"database_url": _state["database_url"]})
    return s


def get_engine(*, schema: bool = True) -> sa.Engine:
    """The engine on ORCH_DATABASE_URL (or --database-url); checks the schema unless told not."""
    from orchestrator.storage.db import make_engine, require_schema

    s = settings()
    engine = make_engine(s.database_url, echo=s.echo_sql)
    if schema:
        require_schema(engine)
    return engine


def actor() -> str:
    return str(settings().actor)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False) + "\n")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str = "nothing to show",
    justify: dict[str, str] | None = None,
) -> None:
    if not rows:
        console.print(f"[dim]{title}: {empty}[/dim]")
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        table.add_column(name, justify=(justify or {}).get(name, "left"))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def print_changes(changes: Sequence[Any], *, none_message: str = "no changes") -> None:
    if not changes:
        console.print(f"[green]{none_message}[/green]")
        return
    styles = {"+": "green", "-": "red", "~": "yellow"}
    for change in changes:
        text = str(change)
        console.print(text, style=styles.get(text[:1], ""), markup=False, soft_wrap=True)


class PlainProgress:
    """Progress as plain lines, for a stderr that is not a terminal (a log file, a pipe), where
    a live bar would leave blank lines: one line when a task starts, at each tenth of its
    total, at least every ``every`` seconds while it moves, and when it is done.

    >>> lines = []
    >>> p = PlainProgress(lines.append, every=1e9)
    >>> for done in range(0, 21):
    ...     p("run", done, 20)
    >>> [line.split(" (")[0] for line in lines[:3]], lines[-1].split(" (")[0], len(lines)
    (['run: 0/20', 'run: 2/20', 'run: 4/20'], 'run: 20/20 done', 11)
    """

    def __init__(self, write: Callable[[str], None], *, every: float = 10.0) -> None:
        self.write, self.every = write, every
        self.started: dict[str, float] = {}
        self.last: dict[str, tuple[float, int]] = {}  # name -> (time, tenth) last written

    def __call__(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        start = self.started.setdefault(name, now)
        tenth = int(10 * done / total) if total else -1
        last = self.last.get(name)
        finished = total is not None and done >= total
        if last is not None and not finished and tenth == last[1] and now - last[0] < self.every:
            return
        if last is not None and finished and last[1] == 10:
            return
        self.last[name] = (now, 10 if finished else tenth)
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        elapsed = f" ({now - start:.0f} s)" if last is not None else ""
        self.write(f"{name}: {count}{' done' if finished else ''}{elapsed}")


def plain_progress() -> PlainProgress | None:
    """A :class:`PlainProgress` on stderr when it is not a terminal, else None (draw bars)."""
    if err_console.is_terminal:
        return None
    return PlainProgress(lambda line: err_console.print(line, markup=False, soft_wrap=True))


@contextmanager
def progress_bar(
    description: str, total: int | None = None
) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr (plain lines when stderr is not a terminal); yields
    ``update(done, total)``."""
    plain = plain_progress()
    if plain is not None:

        def line(done: int, total_: int | None = None) -> None:
            plain(description, done, total_ if total_ is not None else total)

        yield line
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total_: int | None = None) -> None:
            progress.update(task, completed=done, total=total_ if total_ is not None else total)

        yield update


def parse_day(value: str | None, *, option: str) -> date | None:
    """Parse a YYYY-MM-DD option, with a one-line error naming the option."""
    if value is None:
        return None
    from orchestrator.errors import InputError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None


def day_or_today(value: str | None, *, option: str, engine: sa.Engine | None = None) -> date:
    """The option's date, or today in the plan's time zone (the date the daemon runs)."""
    day = parse_day(value, option=option)
    if day is not None:
        return day
    from orchestrator.storage.db import session_scope
    from orchestrator.storage.plan_repo import plan_today

    with session_scope(engine or get_engine()) as session:
        return plan_today(session)
