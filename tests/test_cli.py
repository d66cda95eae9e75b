"""The `orch` command through its installed entry point, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.storage.db import make_engine

SMALL = Path(__file__).parent / "data" / "plan_small.yaml"
ORCH = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"


def orch(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": db_url, "ORCH_ACTOR": "tester", "COLUMNS": "200"}
    return subprocess.run(
        [ORCH, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def cli_db(db_url: str) -> str:
    assert orch(db_url, "init").returncode == 0
    return db_url


def test_init_apply_export_diff_round_trip(cli_db: str) -> None:
    first = orch(cli_db, "plan", "apply", str(SMALL))
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout and "+ campaign birthday" in first.stdout
    exported = orch(cli_db, "plan", "export")
    assert exported.returncode == 0
    diff = orch(cli_db, "plan", "diff", "-", stdin=exported.stdout)
    assert diff.returncode == 0, diff.stderr
    assert "no changes" in diff.stdout
    again = orch(cli_db, "init")
    assert "already up to date" in again.stdout


def test_listings_have_json(cli_db: str) -> None:
    orch(cli_db, "plan", "apply", str(SMALL))
    camps = json.loads(orch(cli_db, "campaigns", "list", "--json").stdout)
    assert [c["id"] for c in camps] == ["birthday", "discount", "winback"]
    assert json.loads(orch(cli_db, "caps", "list", "--json").stdout)[0]["max"] == 3
    assert json.loads(orch(cli_db, "exclusions", "list", "--json").stdout)[0]["days"] == 30
    shown = json.loads(orch(cli_db, "campaigns", "show", "discount", "--json").stdout)
    assert shown["treatments"][0]["payload"] == {"template": "spring-20"}
    table = orch(cli_db, "campaigns", "list")
    assert "Spring discount" in table.stdout and "2026-03-01" in table.stdout


def test_admin_edits_land_in_the_audit_log(cli_db: str) -> None:
    orch(cli_db, "plan", "apply", str(SMALL))
    assert orch(cli_db, "campaigns", "pause", "discount").returncode == 0
    assert orch(cli_db, "priority", "set", "winback", "5").returncode == 0
    assert orch(cli_db, "exclusions", "add", "birthday", "winback", "--days", "10").returncode == 0
    assert (
        orch(cli_db, "caps", "set", "--channel", "sms", "--max", "1", "--per-days", "14").returncode
        == 0
    )
    audit = json.loads(orch(cli_db, "audit", "--json").stdout)
    assert [a["action"] for a in audit] == [
        "plan.apply",
        "campaign.pause",
        "priority.set",
        "exclusion.add",
        "cap.set",
    ]
    assert all(a["actor"] == "tester" for a in audit)
    assert audit[2]["changes"] == ["+ campaign winback.priority: 5"]


def _snapshot(url: str) -> dict[str, list[tuple]]:
    from tests.conftest import table_snapshot

    engine = make_engine(url)
    try:
        return table_snapshot(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("campaigns", "pause", "ghost"), "error: no campaign with id 'ghost'"),
        (("priority", "set", "discount", "1"), "priority 1 is already given to 'birthday'"),
        (("exclusions", "add", "winback", "winback", "--days", "3"), "cannot exclude itself"),
        (("caps", "set", "--max", "-1", "--per-days", "7"), "greater than or equal to 1"),
        (("audit", "--since", "yesterday"), "--since: 'yesterday' is not a date"),
        (("plan", "apply", "/nonexistent.yaml"), "/nonexistent.yaml: no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    cli_db: str, args: tuple[str, ...], message: str
) -> None:
    orch(cli_db, "plan", "apply", str(SMALL))
    before = _snapshot(cli_db)
    result = orch(cli_db, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert _snapshot(cli_db) == before


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("command", ["run", "learn"])
def test_workers_on_sqlite_are_one_line_exit_2(cli_db: str, command: str) -> None:
    orch(cli_db, "plan", "apply", str(SMALL))
    before = _snapshot(cli_db)
    result = orch(cli_db, command, "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert "need PostgreSQL" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(cli_db) == before


def test_bad_plan_file_points_at_the_line(cli_db: str, tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text(SMALL.read_text().replace("control_fraction: 0.15", "control_fraction: 1.5"))
    result = orch(cli_db, "plan", "apply", str(bad))
    assert result.returncode == 2
    assert f"{bad}:42: campaigns[2] (winback).control_fraction" in result.stderr
    valid = orch(cli_db, "plan", "validate", str(bad))
    assert valid.returncode == 2 and "control_fraction" in valid.stderr
    assert orch(cli_db, "plan", "validate", str(SMALL)).stdout.startswith("ok")


def test_uninitialized_database_says_what_to_do(tmp_path: Path) -> None:
    result = orch(f"sqlite:///{tmp_path / 'new.db'}", "campaigns", "list")
    assert result.returncode == 1
    assert "run `orch init` first" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = subprocess.run([ORCH, "plan", "apply"], capture_output=True, text=True)
    assert result.returncode == 2 and "Missing argument" in result.stderr


def test_dates_default_to_today_in_the_plans_time_zone(cli_db: str, tmp_path: Path) -> None:
    """After a daemon run in the plan's time zone, a plain `orch run` is the same date."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    import sqlalchemy as sa
    import yaml

    from tests.helpers import seed_customers

    utc_today = datetime.now(UTC).date()
    zone = next(
        z
        for z in ("Pacific/Kiritimati", "Etc/GMT+12")
        if datetime.now(ZoneInfo(z)).date() != utc_today
    )
    plan = tmp_path / "plan.yaml"
    data = yaml.safe_load(SMALL.read_text())
    data["settings"]["timezone"] = zone
    plan.write_text(yaml.safe_dump(data))
    assert orch(cli_db, "plan", "apply", str(plan)).returncode == 0
    engine = make_engine(cli_db)
    seed_customers(engine, 20)
    done = orch(cli_db, "run")
    assert done.returncode == 0, done.stderr
    local = datetime.now(ZoneInfo(zone)).date()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT run_date FROM run")).scalar_one() in (local, str(local))
    engine.dispose()


def test_a_value_too_long_for_its_column_is_refused_alike_on_both_backends(
    cli_db: str, tmp_path: Path
) -> None:
    plan = tmp_path / "long.yaml"
    plan.write_text(
        "version: 1\ncampaigns:\n  - id: c1\n    name: " + "N" * 300 + "\n    channel: "
        + "x" * 40 + "\n    treatments: [{id: t}]\n"
    )  # fmt: skip
    done = orch(cli_db, "plan", "apply", str(plan))
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert "campaigns[0] (c1).name: String should have at most 200 characters" in said
    assert "(and 1 more problem(s): run `orch plan validate`)" in said
    checked = " ".join(orch(cli_db, "plan", "validate", str(plan)).stderr.split())
    assert "campaigns[0] (c1).channel: String should have at most 32 characters" in checked
    assert json.loads(orch(cli_db, "campaigns", "list", "--json").stdout) == []


def test_plan_validate_and_apply_speak_json(cli_db: str, tmp_path: Path) -> None:
    ok = orch(cli_db, "plan", "validate", "--json", str(SMALL))
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["errors"] == [] and report["campaigns"] >= 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaigns: [\n")
    refused = orch(cli_db, "plan", "validate", "--json", str(bad))
    assert refused.returncode == 2
    errors = json.loads(refused.stdout)
    assert errors["ok"] is False and "bad.yaml:" in errors["errors"][0]
    dry = json.loads(orch(cli_db, "plan", "apply", "--json", "--dry-run", str(SMALL)).stdout)
    assert dry["dry_run"] is True and dry["revision_id"] is None and dry["changes"]
    applied = orch(cli_db, "plan", "apply", "--json", str(SMALL))
    assert applied.returncode == 0, applied.stderr
    result = json.loads(applied.stdout)
    assert result["revision_id"] is not None
    assert result["changes"] == dry["changes"]


def test_a_channel_typo_is_warned_with_the_channel_it_resembles(
    cli_db: str, tmp_path: Path
) -> None:
    text = SMALL.read_text()
    assert "channel: email" in text
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("channel: email", "channel: emial", 1))
    out = orch(cli_db, "plan", "validate", str(typo))
    assert out.returncode == 0, out.stderr
    assert "channel 'emial'" in out.stderr and "did you mean 'email'?" in out.stderr
    clean = orch(cli_db, "plan", "validate", str(SMALL))
    assert "emial" not in clean.stderr and "warning: campaign" not in clean.stderr


def test_progress_piped_to_a_file_is_plain_lines(cli_db: str, tmp_path: Path) -> None:
    assert orch(cli_db, "plan", "apply", str(SMALL)).returncode == 0
    rows = "\n".join(f"C{i},true,false,1990-01-0{1 + i % 9},ES" for i in range(30))
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("customer_id,email_opt_in,sms_opt_in,birth_date,country\n" + rows + "\n")
    out = orch(cli_db, "customers", "import", str(csv_file))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(line.strip() for line in lines), out.stderr  # no blank bar frames
    assert lines[-1].startswith("customers: 30/30 done")


def test_customers_show_tells_what_is_known_of_one_customer(cli_db: str, tmp_path: Path) -> None:
    assert orch(cli_db, "plan", "apply", str(SMALL)).returncode == 0
    people = tmp_path / "customers.csv"
    people.write_text(
        "customer_id,email_opt_in,sms_opt_in,birth_date,country\nC1,true,false,1990-01-01,ES\n"
    )
    assert orch(cli_db, "customers", "import", str(people)).returncode == 0
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,occurred_at,type,amount\nC1,2026-03-01,purchase,12.5\n"
        "C1,2026-03-04,purchase,7.5\nZ9,2026-03-04,purchase,1\n"
    )
    assert orch(cli_db, "events", "import", str(events)).returncode == 0
    assert orch(cli_db, "segments", "refresh", "--as-of", "2026-03-05").returncode == 0
    shown = orch(cli_db, "customers", "show", "C1", "--json")
    assert shown.returncode == 0, shown.stderr
    profile = json.loads(shown.stdout)
    assert profile["attributes"]["country"] == "ES"
    assert profile["events_total"] == 2 and profile["amount_total"] == 20.0
    assert profile["features"]["frequency"] == 1 and profile["features_as_of"] == "2026-03-05"
    assert {s["kind"] for s in profile["segments"]} == {"lifecycle", "rfm", "micro"}
    table = orch(cli_db, "customers", "show", "C1")
    assert table.returncode == 0 and "Segment history" in table.stdout
    unknown = orch(cli_db, "customers", "show", "Z9")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: customer 'Z9' is not in the customer table (1 events carry this id)"
    ]


def test_the_run_summary_counts_send_nothing_apart_from_test_and_control(
    cli_db: str, tmp_path: Path
) -> None:
    assert orch(cli_db, "plan", "apply", str(SMALL)).returncode == 0
    rows = "\n".join(f"C{i},true,true,1990-01-0{1 + i % 9},ES" for i in range(200))
    people = tmp_path / "customers.csv"
    people.write_text("customer_id,email_opt_in,sms_opt_in,birth_date,country\n" + rows + "\n")
    assert orch(cli_db, "customers", "import", str(people)).returncode == 0
    events = tmp_path / "events.csv"
    events.write_text(
        "customer_id,occurred_at,type,amount\n"
        + "".join(
            f"C{i},2026-01-1{i % 9},purchase,20\nC{i},2026-03-0{1 + i % 7},purchase,30\n"
            for i in range(200)
        )
    )
    assert orch(cli_db, "events", "import", str(events)).returncode == 0
    assert orch(cli_db, "segments", "refresh", "--as-of", "2026-03-09").returncode == 0
    out = orch(cli_db, "run", "--date", "2026-03-10")
    assert out.returncode == 0, out.stderr
    nothing = [line for line in out.stdout.splitlines() if "(send nothing)" in line]
    assert nothing, out.stdout
    cells = [c.strip() for c in nothing[0].strip("│ ").split("│")]
    assert int(cells[3].replace(",", "")) > 0 and cells[4:] == ["-", "-", "-"]
