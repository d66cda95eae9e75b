"""Bad input: one line naming file, line and field, and the database exactly as before."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from orchestrator.errors import ImportFileError, InputError
from orchestrator.imports import import_customers, import_events
from orchestrator.storage import bulk
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import CustomerAttribute

EVENTS_HEADER = "customer_id,occurred_at,type,amount\n"
GOOD_EVENT = "c1,2024-01-01,purchase,1\n"


@pytest.fixture
def seeded(engine, files, monkeypatch) -> sa.Engine:
    """A database with some customers, events and a registered attribute; cwd = the files."""
    with session_scope(engine) as session:
        session.add(CustomerAttribute(name="score", dtype="number", origin="plan"))
    import_customers(engine, files.text("seed.csv", "customer_id,score,city\nc1,1,Paris\n"))
    import_events(engine, files.text("seed_events.csv", EVENTS_HEADER + GOOD_EVENT))
    monkeypatch.chdir(files.root)
    return engine


Case = tuple[Callable[..., object], Callable[[Path], object], str]


def _events(text: str) -> Callable[[Path], object]:
    return lambda root: (root / "events.csv").write_text(text, encoding="utf-8")


def _customers(text: str) -> Callable[[Path], object]:
    return lambda root: (root / "customers.csv").write_text(text, encoding="utf-8")


def _parquet(name: str, table: pa.Table) -> Callable[[Path], object]:
    import pyarrow.parquet as pq

    return lambda root: pq.write_table(table, root / name)


def _raw(name: str, content: bytes) -> Callable[[Path], object]:
    return lambda root: (root / name).write_bytes(content)


CASES: dict[str, tuple[str, Callable[[Path], object], str, str]] = {
    "file not found": ("events", lambda root: None, "events.csv", "events.csv: file not found"),
    "a directory": ("events", lambda root: (root / "d.csv").mkdir(), "d.csv", "d.csv: not a file"),
    "unknown extension": (
        "events",
        _raw("events.txt", b"x"),
        "events.txt",
        "events.txt: unknown format (name the file .csv, .csv.gz, .parquet, .jsonl or "
        ".ndjson, or give the format)",
    ),
    "empty file": ("events", _events(""), "events.csv", "events.csv: empty file"),
    "wrong field count": (
        "events",
        _events(EVENTS_HEADER + GOOD_EVENT + "c2,2024-01-01,purchase,1,9\n"),
        "events.csv",
        "events.csv line 3: expected 4 fields, got 5 (extra: '9')",
    ),
    "not utf-8": (
        "events",
        _raw("events.csv", (EVENTS_HEADER + GOOD_EVENT).encode() + b"c\xe9,2024-01-01,a,1\n"),
        "events.csv",
        "events.csv line 3: not UTF-8 text (save the file as UTF-8)",
    ),
    "not gzip": (
        "events",
        _raw("events.csv.gz", b"customer_id\n"),
        "events.csv.gz",
        "events.csv.gz: cannot read as CSV",
    ),
    "not parquet": (
        "events",
        _raw("events.parquet", b"PAR1 not really"),
        "events.parquet",
        "events.parquet: cannot read as Parquet",
    ),
    "bad json line": (
        "events",
        _raw(
            "events.jsonl",
            b'{"customer_id": "c1", "occurred_at": "2024-01-01", "type": "a", "amount": 1}\n'
            b'{"customer_id": \n',
        ),
        "events.jsonl",
        "events.jsonl line 2: not valid JSON",
    ),
    "json line not an object": (
        "customers",
        _raw("customers.jsonl", b'["c1", 2]\n'),
        "customers.jsonl",
        "customers.jsonl line 1: expected a JSON object",
    ),
    "event in a wrong year": (
        "events",
        _events(EVENTS_HEADER + GOOD_EVENT + "c1,2099-01-01,purchase,5\n"),
        "events.csv",
        "events.csv line 3, field 'occurred_at': 2099-01-01 00:00 is in the future (events up to ",
    ),
    "amount beyond any purchase": (
        "events",
        _events(EVENTS_HEADER + GOOD_EVENT + "c1,2024-01-02,purchase,1e308\n"),
        "events.csv",
        "events.csv line 3, field 'amount': 1e+308 is beyond ±1,000,000,000",
    ),
    "negative discount": (
        "events",
        _events(
            "customer_id,occurred_at,type,amount,discount\nc1,2024-01-02,purchase,10,0.2\n"
            "c1,2024-01-03,purchase,10,-1\n"
        ),
        "events.csv",
        "events.csv line 3, field 'discount': -1 is negative",
    ),
    "missing columns": (
        "events",
        _events("customer_id,occurred_at\nc1,2024-01-01\n"),
        "events.csv",
        "events.csv: missing required columns 'type', 'amount' "
        "(columns found: customer_id, occurred_at)",
    ),
    "missing customer_id": (
        "customers",
        _customers("id,score\n1,2\n"),
        "customers.csv",
        "customers.csv: missing required column 'customer_id' (columns found: id, score)",
    ),
    "duplicate column": (
        "customers",
        _customers("customer_id,a, a\nc1,1,2\n"),
        "customers.csv",
        "customers.csv: column 'a' appears twice",
    ),
    "empty customer_id": (
        "customers",
        _customers("customer_id,score\nc2,1\n  ,2\n"),
        "customers.csv",
        "customers.csv line 3, field 'customer_id': is empty",
    ),
    "duplicate customer_id": (
        "customers",
        _customers("customer_id,score\nc7,1\nc8,2\nc7,3\n"),
        "customers.csv",
        "customers.csv line 4, field 'customer_id': duplicate customer_id 'c7' (first on line 2)",
    ),
    "customer_id too long": (
        "customers",
        _customers(f"customer_id\n{'x' * 129}\n"),
        "customers.csv",
        f"customers.csv line 2, field 'customer_id': '{'x' * 129}' is longer than 128 characters",
    ),
    "registered type": (
        "customers",
        _customers("customer_id,score\nc2,1\nc3,high\n"),
        "customers.csv",
        "customers.csv line 3, field 'score': 'high' is not a number",
    ),
    "amount not a number": (
        "events",
        _events(EVENTS_HEADER + GOOD_EVENT * 15 + "c1,2024-01-01,purchase,abc\n"),
        "events.csv",
        "events.csv line 17, field 'amount': 'abc' is not a number",
    ),
    "unparseable occurred_at": (
        "events",
        _events(EVENTS_HEADER + "c1,yesterday,purchase,1\n"),
        "events.csv",
        "events.csv line 2, field 'occurred_at': 'yesterday' is not a date or datetime",
    ),
    "impossible date": (
        "events",
        _events(EVENTS_HEADER + "c1,2024-01-01Z,a,1\nc1,2023-02-29T10:00:00Z,a,1\n"),
        "events.csv",
        "events.csv line 3, field 'occurred_at': '2023-02-29T10:00:00Z' is not a date or datetime",
    ),
    "empty occurred_at": (
        "events",
        _events(EVENTS_HEADER + "c1,,purchase,1\n"),
        "events.csv",
        "events.csv line 2, field 'occurred_at': is empty",
    ),
    "empty type": (
        "events",
        _events(EVENTS_HEADER + "c1,2024-01-01,,1\n"),
        "events.csv",
        "events.csv line 2, field 'type': is empty",
    ),
    "parquet row": (
        "events",
        _parquet(
            "events.parquet",
            pa.table(
                {
                    "customer_id": ["c1", "c2"],
                    "occurred_at": ["2024-01-01", "2024-01-02"],
                    "type": ["buy", "buy"],
                    "amount": ["1", "x"],
                }
            ),
        ),
        "events.parquet",
        "events.parquet row 2, field 'amount': 'x' is not a number",
    ),
    "unsupported type": (
        "customers",
        _parquet("customers.parquet", pa.table({"customer_id": ["c1"], "tags": [[1, 2]]})),
        "customers.parquet",
        "customers.parquet: column 'tags' has unsupported type list<element: int64> "
        "(expected text, numbers, booleans, dates or timestamps)",
    ),
    "unsupported extra": (
        "events",
        _raw(
            "events.jsonl",
            b'{"customer_id": "c1", "occurred_at": "2024-01-01", "type": "a", "amount": 1, '
            b'"meta": {"k": 1}}\n',
        ),
        "events.jsonl",
        "events.jsonl: column 'meta' has unsupported type struct<k: int64>",
    ),
    "earliest error first": (
        "events",
        _events(EVENTS_HEADER + GOOD_EVENT + "c1,2024-01-01,a,x\nc1,2024-01-01,a,1,2\n"),
        "events.csv",
        "events.csv line 3, field 'amount': 'x' is not a number",
    ),
    "earliest error is malformed": (
        "events",
        _events(EVENTS_HEADER + "c1,2024-01-01,a,1,2\nc1,2024-01-01,a,x\n"),
        "events.csv",
        "events.csv line 2: expected 4 fields, got 5 (extra: '2')",
    ),
    "first field in column order": (
        "events",
        _events(EVENTS_HEADER + ",2024-13-01,a,x\n"),
        "events.csv",
        "events.csv line 2, field 'customer_id': is empty",
    ),
    "one event_id for two different events": (
        "events",
        _events(
            "event_id,customer_id,occurred_at,type,amount\n"
            "E1,c1,2024-01-01,purchase,10\nE2,c1,2024-01-02,purchase,20\n"
            "E1,c1,2024-01-01,purchase,999\n"
        ),
        "events.csv",
        "events.csv line 2 and line 4: event_id 'E1' is given to two different events; "
        "give each event its own id",
    ),
    "a NUL character in a customer cell": (
        "customers",
        _customers("customer_id,city\nc9,Par\x00is\n"),
        "customers.csv",
        "customers.csv line 2, field 'city': 'Par\\x00is' is not text without NUL characters",
    ),
    "a Parquet amount of NaN": (
        "events",
        _parquet(
            "events.parquet",
            pa.table(
                {
                    "customer_id": ["c1"],
                    "occurred_at": ["2024-01-03"],
                    "type": ["purchase"],
                    "amount": pa.array([float("nan")], pa.float64()),
                }
            ),
        ),
        "events.parquet",
        "events.parquet row 1, field 'amount': is NaN: leave the cell empty (null) for no amount",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line_and_writes_nothing(seeded, snapshot, case: str) -> None:
    kind, make, name, message = CASES[case]
    make(Path.cwd())
    before = snapshot(seeded)
    run = import_events if kind == "events" else import_customers
    with pytest.raises(ImportFileError) as exc:
        run(seeded, name)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, InputError) and exc.value.exit_code == 2
    assert snapshot(seeded) == before


def test_unknown_format_argument(seeded) -> None:
    Path("e.csv").write_text(EVENTS_HEADER, encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"^e.csv: unknown format 'xml' \(choose one of"):
        import_events(seeded, "e.csv", fmt="xml")


def test_error_in_a_late_chunk_rolls_back_earlier_chunks_and_indexes(
    seeded, snapshot, monkeypatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 2)
    monkeypatch.setattr(bulk, "DEFER_MIN_ROWS", 1)
    rows = "".join(f"c{i},2024-01-01,purchase,{i}\n" for i in range(9))
    Path("events.csv").write_text(EVENTS_HEADER + rows + "c1,2024-01-01,a,oops\n")
    before = snapshot(seeded)
    with pytest.raises(ImportFileError, match=r"^events.csv line 11, field 'amount'"):
        import_events(seeded, "events.csv")
    assert snapshot(seeded) == before
    names = {ix["name"] for ix in sa.inspect(seeded).get_indexes("event")}
    assert {"ix_event_customer_time", "ix_event_occurred_at"} <= names


def test_gzip_csv_errors_name_lines_too(seeded) -> None:
    content = (EVENTS_HEADER + GOOD_EVENT + "c1,2024-01-01,a,x\n").encode()
    Path("events.csv.gz").write_bytes(gzip.compress(content))
    with pytest.raises(ImportFileError, match=r"^events.csv.gz line 3, field 'amount'"):
        import_events(seeded, "events.csv.gz")


def test_blank_lines_and_multiline_cells_keep_line_numbers_right(seeded) -> None:
    text = EVENTS_HEADER + "\n" + 'c1,2024-01-01,"two\nlines",1\n' + "\n" + "c1,2024-01-01,a,x\n"
    Path("events.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"^events.csv line 6, field 'amount': 'x'"):
        import_events(seeded, "events.csv")


def test_a_simulated_clock_moves_the_future_along(seeded) -> None:
    """The tolerance is a day after ``now``: a simulation imports its own days' events."""
    from datetime import datetime

    Path("e.csv").write_text(EVENTS_HEADER + "c1,2030-05-01T12:00,purchase,5\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="is in the future"):
        import_events(seeded, "e.csv")
    assert import_events(seeded, "e.csv", now=datetime(2030, 5, 1)).inserted == 1
