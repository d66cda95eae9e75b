"""`orch segments`: the typer group in-process, and the real command line in a subprocess.

Until the group is registered in ``orchestrator/cli/main.py`` the subprocess runs ``orch``'s own
``run()`` with the group added (same error handling, exit codes and output); once registered it
runs the installed ``orch`` entry point itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers_segments import add_customers, add_events, simulated_shop
from typer.testing import CliRunner

from orchestrator.cli import main
from orchestrator.cli.segments_cmds import segments_app
from orchestrator.errors import InputError

ORCH = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"
assert any(group.name == "segments" for group in main.app.registered_groups)


def orch(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": db_url, "COLUMNS": "200"}
    return subprocess.run(
        [ORCH, "segments", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def shop(engine: sa.Engine) -> sa.Engine:
    add_customers(engine, ["NOBODY"])
    add_events(engine, simulated_shop(300, date(2025, 4, 1), 365, seed=5))
    return engine


def invoke(db_url: str, *args: str):
    runner = CliRunner()
    return runner.invoke(segments_app, list(args), env={"ORCH_DATABASE_URL": db_url})


def test_refresh_model_and_transitions_in_process(shop: sa.Engine, db_url: str) -> None:
    first = invoke(db_url, "refresh", "--as-of", "2025-12-31")
    assert first.exit_code == 0, first.output
    assert "refreshed segments as of 2025-12-31" in first.output
    assert "Lifecycle stages" in first.output and "RFM cells" in first.output
    second = invoke(db_url, "refresh", "--as-of", "2026-03-31", "--json")
    assert second.exit_code == 0, second.output
    data = json.loads(second.stdout)
    assert data["as_of"] == "2026-03-31" and data["customers"] == 301
    assert set(data["history_changes"]) == {"lifecycle", "rfm", "micro"}
    assert "Micro-segments" in first.output
    shown = invoke(db_url, "model")
    assert shown.exit_code == 0, shown.output
    for text in (
        "BG/NBD",
        "alpha",
        "Gamma-Gamma",
        "observed vs expected",
        "log-likelihood",
        "micro_segment",
        "what it says",
        "times a year",
    ):
        assert text in shown.output
    model = json.loads(invoke(db_url, "model", "--json").stdout)
    assert model["as_of"] == "2026-03-31" and model["bgnbd"]["converged"]
    labels = [
        c["label"] for st in model["micro_segments"]["stages"].values() for c in st["clusters"]
    ]
    assert labels and all(label in shown.output for label in labels)  # every cluster listed
    matrix = invoke(
        db_url, "transitions", "--from", "2025-12-31", "--to", "2026-03-31", "--kind", "rfm"
    )
    assert matrix.exit_code == 0, matrix.output
    assert "customers moved" in matrix.output and "champions" in matrix.output
    as_json = json.loads(
        invoke(db_url, "transitions", "--from", "2025-12-31", "--to", "2026-03-31", "--json").stdout
    )
    assert as_json["kind"] == "lifecycle" and as_json["total"] == 301


def test_options_reach_the_settings(shop: sa.Engine, db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "segments.yaml"
    config.write_text("lifecycle:\n  new_days: 60\nmodel:\n  horizon_days: 30\n")
    result = invoke(
        db_url,
        "refresh",
        "--as-of",
        "2026-03-31",
        "--config",
        str(config),
        "--horizon-days",
        "180",
        "--time-unit",
        "weeks",
        "--json",
    )
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)["model"]
    assert stored["config"]["lifecycle"]["new_days"] == 60
    assert stored["horizon_days"] == 180 and stored["time_unit"] == "weeks"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["refresh", "--as-of", "2026-02-30"], "--as-of: '2026-02-30' is not a date"),
        (["refresh", "--time-unit", "months"], "--time-unit: Input should be 'days' or 'weeks'"),
        (["refresh", "--horizon-days", "0"], "--horizon-days: Input should be greater than"),
        (["refresh", "--as-of", "2020-01-01"], "no events up to 2020-01-01"),
        (["transitions", "--from", "2026-01-01", "--to", "2026-02-01", "--kind", "x"], "unknown"),
        (["model"], "no segmentation yet"),
        (["refresh", "--config", "/nonexistent/segments.yaml"], "--config: cannot read"),
        (["transitions", "--from", "2026-03-01", "--to", "2026-02-01"], "is after"),
    ],
)
def test_bad_input_is_an_input_error_in_process(
    shop: sa.Engine, db_url: str, args: list[str], message: str
) -> None:
    result = invoke(db_url, *args)
    assert isinstance(result.exception, InputError), result.output
    assert message in str(result.exception)


def test_the_command_line_reports_bad_input_in_one_line(
    shop: sa.Engine, db_url: str, snapshot, tmp_path: Path
) -> None:
    before = snapshot(shop)
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("rfm:\n  cells: []\n")
    # The rest of the bad inputs are checked in process above; these go through the real
    # error handling (one line on stderr, exit code 2).
    for args, message in [
        (["refresh", "--as-of", "yesterday"], "error: --as-of: 'yesterday' is not a date"),
        (["refresh", "--config", str(bad_config)], "bad.yaml: rfm: cells leave 25 score pairs"),
        (["transitions", "--from", "2026-01-01", "--to", "2026-02-01", "--kind", "tier"], "tier"),
        (["model"], "error: no segmentation yet: run `orch segments refresh` first"),
    ]:
        result = orch(db_url, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert snapshot(shop) == before


def test_the_command_line_end_to_end(shop: sa.Engine, db_url: str) -> None:
    first = orch(db_url, "refresh", "--as-of", "2025-12-31")
    assert first.returncode == 0, first.stderr
    again = orch(db_url, "refresh", "--as-of", "2025-11-30")
    assert again.returncode == 2 and "before the last refresh" in again.stderr
    assert orch(db_url, "refresh").returncode == 0  # the latest event's day
    model = json.loads(orch(db_url, "model", "--json").stdout)
    assert model["bgnbd"]["n_customers"] == model["purchasers"]
    matrix = orch(db_url, "transitions", "--from", "2025-12-31", "--to", model["as_of"])
    assert matrix.returncode == 0 and "prospect" in matrix.stdout
    empty = orch(db_url, "transitions", "--from", "2020-01-01", "--to", "2020-02-01", "--json")
    assert json.loads(empty.stdout)["total"] == 0


def test_refresh_defaults_to_today_not_to_the_latest_event(shop: sa.Engine, db_url: str) -> None:
    """A plain refresh is as of today in the plan's time zone: an event dated by mistake far
    ahead cannot move "now" for every customer (imports refuse such events anyway)."""
    from sqlmodel import Session

    from orchestrator.storage.plan_repo import plan_today

    result = invoke(db_url, "refresh", "--json")
    assert result.exit_code == 0, result.output
    with Session(shop) as session:
        assert json.loads(result.stdout)["as_of"] == plan_today(session).isoformat()
