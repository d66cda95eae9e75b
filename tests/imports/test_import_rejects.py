"""``skip_invalid``: good rows are written, bad ones go to a reject file with line and reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa

from orchestrator.imports import import_customers, import_events
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import CustomerAttribute


def read_rejects(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_customers_rejects_next_to_the_input(engine, files, stored) -> None:
    with session_scope(engine) as session:
        session.add(CustomerAttribute(name="score", dtype="number", origin="plan"))
    text = (
        "customer_id,score,city\n"
        "c1,1,Paris\n"
        "c2, lots ,Rome\n"  # line 3: not a number
        ",2,Nice\n"  # line 4: empty id
        "c1,3,Lyon\n"  # line 5: duplicate
        "c5,5\n"  # line 6: a field short
        "c6,6,Oslo\n"
    )
    path = files.text("customers.csv.gz.csv", text)
    report = import_customers(engine, path, skip_invalid=True)

    assert (report.rows_read, report.inserted, report.rejected) == (6, 2, 4)
    assert report.rejects_path == str(files.root / "customers.csv.gz.rejects.csv")
    assert stored.customers() == {
        "c1": {"score": 1, "city": "Paris"},
        "c6": {"score": 6, "city": "Oslo"},
    }
    assert read_rejects(report.rejects_path) == [
        {
            "customer_id": "c2",
            "score": " lots ",
            "city": "Rome",
            "line": "3",
            "reason": "field 'score': ' lots ' is not a number",
        },
        {
            "customer_id": "",
            "score": "2",
            "city": "Nice",
            "line": "4",
            "reason": "field 'customer_id': is empty",
        },
        {
            "customer_id": "c1",
            "score": "3",
            "city": "Lyon",
            "line": "5",
            "reason": "field 'customer_id': duplicate customer_id 'c1' (first on line 2)",
        },
        {
            "customer_id": "c5",
            "score": "5",
            "city": "",
            "line": "6",
            "reason": "expected 3 fields, got 2",
        },
    ]


def test_events_rejects_to_a_chosen_path(engine, files, stored) -> None:
    text = (
        "customer_id,occurred_at,type,amount,reason\n"
        "c1,2024-01-01,buy,1,gift\n"
        "c1,someday,buy,2,\n"
        "c2,2024-01-02,buy,3,x,extra\n"
        "c3,2024-01-03,buy,4,\n"
    )
    target = files.root / "out" / "bad.csv"
    report = import_events(
        engine, files.text("events.csv", text), skip_invalid=True, rejects_path=target
    )

    assert (report.rows_read, report.inserted, report.rejected) == (4, 2, 2)
    assert report.rejects_path == str(target)
    assert [r["customer_id"] for r in stored.events()] == ["c1", "c3"]
    assert read_rejects(target) == [
        {
            "customer_id": "c1",
            "occurred_at": "someday",
            "type": "buy",
            "amount": "2",
            "reason": "",
            "line": "3",
            "_reason": "field 'occurred_at': 'someday' is not a date or datetime",
        },
        {
            "customer_id": "c2",
            "occurred_at": "2024-01-02",
            "type": "buy",
            "amount": "3",
            "reason": "x",
            "line": "4",
            "_reason": "expected 5 fields, got 6 (extra: 'extra')",
        },
    ]


def test_unreadable_json_lines_are_rejected_whole(engine, files, stored) -> None:
    good = {"customer_id": "c1", "occurred_at": "2024-01-01", "type": "buy", "amount": 1}
    text = json.dumps(good) + "\n{oops\n" + json.dumps(good | {"amount": "n/a"}) + "\n"
    report = import_events(engine, files.text("e.jsonl", text), skip_invalid=True)

    assert (report.inserted, report.rejected) == (1, 2)
    rejects = read_rejects(report.rejects_path or "")
    assert [r["line"] for r in rejects] == ["2", "3"]
    assert rejects[0]["reason"].startswith("not valid JSON (")
    assert rejects[0]["reason"].endswith("): {oops")
    assert rejects[1]["reason"] == "field 'amount': 'n/a' is not a number"


def test_parquet_rejects_show_values_as_text(engine, files) -> None:
    table = pa.table(
        {
            "customer_id": ["c1", "c2"],
            "occurred_at": pa.array([1_700_000_000_000_000, None], pa.timestamp("us")),
            "type": ["buy", "buy"],
            "amount": [1.5, 2.0],
        }
    )
    report = import_events(engine, files.parquet("e.parquet", table), skip_invalid=True)
    assert read_rejects(report.rejects_path or "") == [
        {
            "customer_id": "c2",
            "occurred_at": "",
            "type": "buy",
            "amount": "2",
            "line": "2",
            "reason": "field 'occurred_at': is empty",
        }
    ]


def test_no_reject_file_without_rejects(engine, files) -> None:
    path = files.text("events.csv", "customer_id,occurred_at,type,amount\nc1,2024-01-01,a,1\n")
    report = import_events(engine, path, skip_invalid=True)
    assert (report.rejected, report.rejects_path) == (0, None)
    assert not (files.root / "events.rejects.csv").exists()


def test_a_rejected_row_names_every_bad_field_not_only_the_first(engine, files) -> None:
    import pytest

    from orchestrator.errors import ImportFileError

    text = (
        "event_id,customer_id,occurred_at,type,amount,discount\n"
        "e1,c1,2026-01-05,purchase,10,0\n"
        "e2,c1,yesterday,purchase,abc,0.1\n"  # line 3: two bad fields
    )
    path = files.text("events.csv", text)
    with pytest.raises(ImportFileError) as exc:
        import_events(engine, path)
    message = str(exc.value)
    assert "line 3" in message and "'occurred_at'" in message and "'amount'" in message
    assert "\n" not in message
    report = import_events(engine, path, skip_invalid=True)
    (row,) = read_rejects(report.rejects_path)
    assert row["line"] == "3"
    assert "field 'occurred_at'" in row["reason"] and "field 'amount': 'abc'" in row["reason"]


def test_the_help_names_the_reject_file_the_import_writes() -> None:
    from pathlib import Path as P

    from typer.testing import CliRunner

    from orchestrator.cli.main import app
    from orchestrator.imports.source import default_rejects_path

    shown = CliRunner().invoke(app, ["events", "import", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "events.csv -> events.rejects.csv" in shown.output
    assert default_rejects_path(P("events.csv")).name == "events.rejects.csv"
