"""Event imports: conversions, extras, idempotence and stable content keys."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
import sqlalchemy as sa

from orchestrator.errors import ImportFileError
from orchestrator.imports import import_events
from orchestrator.storage import bulk

PARIS = dt.timezone(dt.timedelta(hours=1))
STAMP_MS_PARIS = pa.timestamp("ms", "+01:00")

EVENTS = """customer_id,occurred_at,type,amount,discount,category,channel,store,promo
c1,2024-03-01,purchase,10.50,,shoes,web,12,
c1,2024-03-01T10:15:00,purchase,5,1.5,,store,,SPRING
c2,2024-03-01 23:30:00.250,visit,,,,,,
c2,2024-03-02T01:00:00+02:00,refund,-3,,bags,app,7,X
ghost,2024-03-02T08:00:00Z,purchase,1e2,,,,,
"""


def test_csv_round_trip(engine, files, stored) -> None:
    report = import_events(engine, files.text("events.csv", EVENTS))

    assert (report.rows_read, report.inserted, report.updated) == (5, 5, 0)
    assert (report.unchanged_or_duplicate, report.rejected) == (0, 0)
    rows = stored.events()
    for row in rows:
        assert row.pop("source_event_id").startswith("h:")
    assert rows == [
        {
            "customer_id": "c1",
            "occurred_at": dt.datetime(2024, 3, 1),
            "type": "purchase",
            "amount": 10.5,
            "discount": None,
            "category": "shoes",
            "channel": "web",
            "extra": {"store": "12"},
        },
        {
            "customer_id": "c1",
            "occurred_at": dt.datetime(2024, 3, 1, 10, 15),
            "type": "purchase",
            "amount": 5.0,
            "discount": 1.5,
            "category": None,
            "channel": "store",
            "extra": {"promo": "SPRING"},
        },
        {
            "customer_id": "c2",
            "occurred_at": dt.datetime(2024, 3, 1, 23, 0),
            "type": "refund",
            "amount": -3.0,
            "discount": None,
            "category": "bags",
            "channel": "app",
            "extra": {"promo": "X", "store": "7"},
        },
        {
            "customer_id": "c2",
            "occurred_at": dt.datetime(2024, 3, 1, 23, 30, 0, 250000),
            "type": "visit",
            "amount": 0.0,
            "discount": None,
            "category": None,
            "channel": None,
            "extra": None,
        },
        {
            "customer_id": "ghost",
            "occurred_at": dt.datetime(2024, 3, 2, 8, 0),
            "type": "purchase",
            "amount": 100.0,
            "discount": None,
            "category": None,
            "channel": None,
            "extra": None,
        },
    ]


def test_second_import_adds_nothing(engine, files, stored) -> None:
    path = files.text("events.csv", EVENTS)
    import_events(engine, path)
    keys = stored.keys()
    report = import_events(engine, path)

    assert (report.inserted, report.unchanged_or_duplicate) == (0, 5)
    assert stored.keys() == keys


def test_duplicates_within_a_file_count_once(engine, files, stored) -> None:
    text = "customer_id,occurred_at,type,amount\nc1,2024-01-01,purchase,10.5\n"
    text += "c1,2024-01-01T00:00:00,purchase,10.50\nc1,2024-01-01,purchase,11\n"
    report = import_events(engine, files.text("e.csv", text))

    assert (report.rows_read, report.inserted, report.unchanged_or_duplicate) == (3, 2, 1)
    assert len(stored.events()) == 2


def test_event_id_is_the_key_when_given(engine, files, stored) -> None:
    text = "event_id,customer_id,occurred_at,type,amount\n"
    # The id is the key: a repeat of T-1 is the same event (one id for two *different* events
    # is refused: see test_import_errors).
    text += (
        "T-1,c1,2024-01-01,purchase,1\n,c1,2024-01-02,purchase,2\nT-1,c1,2024-01-01,purchase,1\n"
    )
    report = import_events(engine, files.text("e.csv", text))

    assert (report.inserted, report.unchanged_or_duplicate) == (2, 1)
    keys = stored.keys()
    assert "T-1" in keys
    assert len([k for k in keys if k.startswith("h:")]) == 1


# The key of one row, pinned: a change here re-imports every event a user has already loaded.
PINNED_ROW = "c1,2024-03-01T10:15:00,purchase,5,1.5,,store,,SPRING"
# blake2b-128 of "c1␟2024-03-01 10:15:00.000000␟purchase␟5␟1.5␟␟store␟{"promo":"SPRING"}" (␟ = 0x1F)
PINNED_KEY = "h:c6cb08d07d48b090bc422915c78f4567"


def test_hash_keys_are_stable(engine, files, stored) -> None:
    header = EVENTS.splitlines()[0]
    import_events(engine, files.text("e.csv", header + "\n" + PINNED_ROW + "\n"))
    assert stored.keys() == {PINNED_KEY}


def test_hash_keys_ignore_formatting_and_column_order(engine, files, stored) -> None:
    a = "customer_id,occurred_at,type,amount,extra_b,extra_a\nc1,2024-03-01,buy,10.50,x,1\n"
    b = "extra_a,type,amount,extra_b,occurred_at,customer_id\n1,buy,10.5,x,2024-03-01T00:00Z,c1\n"
    import_events(engine, files.text("a.csv", a))
    report = import_events(engine, files.text("b.csv", b))
    assert report.inserted == 0
    assert len(stored.keys()) == 1


def test_same_events_in_every_format_get_the_same_keys(engine, files, stored) -> None:
    csv_text = "customer_id,occurred_at,type,amount,channel\nc1,2024-03-01T10:00:00,buy,10.5,web\n"
    import_events(engine, files.text("e.csv", csv_text))
    table = pa.table(
        {
            "customer_id": ["c1"],
            "occurred_at": pa.array([dt.datetime(2024, 3, 1, 11, tzinfo=PARIS)], STAMP_MS_PARIS),
            "type": ["buy"],
            "amount": [10.5],
            "channel": ["web"],
        }
    )
    report = import_events(engine, files.parquet("e.parquet", table))
    assert report.inserted == 0
    line: dict[str, object] = {"customer_id": "c1", "occurred_at": "2024-03-01T10:00:00Z"}
    line |= {"type": "buy", "amount": 10.5, "channel": "web"}
    report = import_events(engine, files.text("e.jsonl", json.dumps(line) + "\n"))
    assert report.inserted == 0
    assert len(stored.keys()) == 1


def test_typed_extras_keep_their_types(engine, files, stored) -> None:
    table = pa.table(
        {
            "customer_id": ["c1", "c2"],
            "occurred_at": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2)], pa.date32()),
            "type": ["buy", "buy"],
            "amount": pa.array([1, 2], pa.int32()),
            "qty": pa.array([3, None], pa.int64()),
            "gift": pa.array([True, False]),
            "ship": pa.array([dt.date(2024, 1, 5), None], pa.date32()),
            "seen": pa.array([dt.datetime(2024, 1, 1, 9, 30, 0, 500), None]),
            "note": pa.array(['a "quoted" note', None]),
        }
    )
    import_events(engine, files.parquet("e.parquet", table))
    extras = [row["extra"] for row in stored.events()]
    assert extras == [
        {
            "qty": 3,
            "gift": True,
            "ship": "2024-01-05",
            "seen": "2024-01-01T09:30:00.000500",
            "note": 'a "quoted" note',
        },
        {"gift": False},
    ]


def test_jsonl_round_trip(engine, files, stored) -> None:
    lines: list[dict[str, object]] = [
        {"customer_id": "c1", "occurred_at": "2024-01-01T10:00:00+01:00", "type": "buy"},
        {"customer_id": "c2", "occurred_at": "2024-01-02", "type": "visit", "page": "/home"},
    ]
    lines[0] |= {"amount": 9.99, "discount": 1}
    lines[1] |= {"amount": 0}
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    report = import_events(engine, files.text("e.jsonl", text))

    assert report.inserted == 2
    rows = stored.events()
    assert [r["occurred_at"] for r in rows] == [dt.datetime(2024, 1, 1, 9), dt.datetime(2024, 1, 2)]
    assert [r["discount"] for r in rows] == [1.0, None]
    assert [r["extra"] for r in rows] == [None, {"page": "/home"}]


def test_many_chunks_overlapping_a_previous_import(engine, files, stored, monkeypatch) -> None:
    """Chunked writes, index deferral and the PostgreSQL key pre-check, on a small file."""
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 4)
    monkeypatch.setattr(bulk, "DEFER_MIN_ROWS", 1)
    header = "customer_id,occurred_at,type,amount\n"
    first = "".join(f"c{i},2024-01-{1 + i % 28:02d},buy,{i}\n" for i in range(0, 30, 3))
    assert import_events(engine, files.text("a.csv", header + first)).inserted == 10
    second = "".join(f"c{i},2024-01-{1 + i % 28:02d},buy,{i}\n" for i in range(30))
    second += "c1,2024-01-02,buy,1\n"  # a duplicate in a later chunk
    report = import_events(engine, files.text("b.csv", header + second))

    assert (report.rows_read, report.inserted, report.unchanged_or_duplicate) == (31, 20, 11)
    assert len(stored.events()) == 30
    names = {ix["name"] for ix in sa.inspect(engine).get_indexes("event")}
    assert {"ix_event_customer_time", "ix_event_occurred_at"} <= names


def test_progress_counts_file_rows(engine, files) -> None:
    calls: list[tuple[int, int | None]] = []
    import_events(
        engine,
        files.text("e.csv", EVENTS),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01", dt.datetime(2024, 3, 1)),
        ("2024-03-01T10:15", dt.datetime(2024, 3, 1, 10, 15)),
        ("2024-03-01 10:15:30.123456789", dt.datetime(2024, 3, 1, 10, 15, 30, 123456)),
        ('"2024-03-01T10:15:30,5Z"', dt.datetime(2024, 3, 1, 10, 15, 30, 500000)),
        ("2024-03-01T00:30:00+0100", dt.datetime(2024, 2, 29, 23, 30)),
        ("2024-03-01T23:30:00-05:30", dt.datetime(2024, 3, 2, 5, 0)),
        ("2024-03-01 10:00 +01", dt.datetime(2024, 3, 1, 9, 0)),
    ],
)
def test_occurred_at_forms(engine, files, stored, text: str, expected: dt.datetime) -> None:
    body = f"customer_id,occurred_at,type,amount\nc1,{text},buy,1\n"
    import_events(engine, files.text("e.csv", body))
    assert [row["occurred_at"] for row in stored.events()] == [expected]


def test_events_with_ids_already_stored_without_ids_are_warned_about(engine, files) -> None:
    """The same purchases, first without event ids (keyed by content), then with ids: they are
    stored twice, and the import says so."""
    from orchestrator.imports import import_customers

    import_customers(engine, files.text("customers.csv", "customer_id\nc1\nc2\nc3\n"))
    rows = "c1,2026-11-20T10:00:00,purchase,30\nc2,2026-11-21T11:00:00,purchase,12.5\n"
    first = import_events(
        engine, files.text("a.csv", "customer_id,occurred_at,type,amount\n" + rows)
    )
    assert first.inserted == 2 and first.warnings == []
    with_ids = "".join(f"e{i}," + line + "\n" for i, line in enumerate(rows.splitlines()))
    again = import_events(
        engine, files.text("b.csv", "event_id,customer_id,occurred_at,type,amount\n" + with_ids)
    )
    assert again.inserted == 2
    assert len(again.warnings) == 1 and again.warnings[0].startswith("2 of 2 events given with an")
    fresh = import_events(
        engine,
        files.text(
            "c.csv", "event_id,customer_id,occurred_at,type,amount\ne9,c3,2026-11-22,purchase,1\n"
        ),
    )
    assert fresh.warnings == []


def test_a_corrected_event_is_refused_unless_update(engine, files, snapshot) -> None:
    """A known event_id with another amount: refused naming the line and what differs, and
    nothing written; with ``update`` the stored event takes the file's content."""
    header = "event_id,customer_id,occurred_at,type,amount,category\n"
    import_events(
        engine,
        files.text(
            "a.csv",
            header + "e1,c1,2026-11-20T10:00,purchase,30,shoes\ne2,c1,2026-11-21,purchase,5,\n",
        ),
    )
    corrected = files.text(
        "b.csv",
        header + "e1,c1,2026-11-20T10:00,purchase,999,shoes\ne3,c2,2026-11-22,purchase,7,\n",
    )
    before = snapshot(engine)
    with pytest.raises(ImportFileError) as exc:
        import_events(engine, corrected)
    message = str(exc.value)
    assert "b.csv line 2: event_id 'e1' is stored already with other content" in message
    assert "amount 30.0 -> 999.0" in message and "--update" in message and "\n" not in message
    assert snapshot(engine) == before
    report = import_events(engine, corrected, update=True)
    assert (report.inserted, report.updated, report.unchanged_or_duplicate) == (1, 1, 0)
    with engine.connect() as conn:
        amounts = dict(conn.execute(sa.text("SELECT source_event_id, amount FROM event")).all())
    assert amounts == {"e1": 999.0, "e2": 5.0, "e3": 7.0}
    again = import_events(engine, corrected)  # the same file once more: nothing to do
    assert (again.inserted, again.updated, again.unchanged_or_duplicate) == (0, 0, 2)


def test_events_of_unknown_customers_are_counted_or_refused(engine, files, stored) -> None:
    from orchestrator.imports import import_customers

    import_customers(engine, files.text("customers.csv", "customer_id\nc1\nc2\n"))
    path = files.text("events.csv", EVENTS)
    refused_before = stored.events()
    with pytest.raises(ImportFileError, match=r"events.csv line 6: 1 new event\(s\) of 1 "):
        import_events(engine, path, known_customers_only=True)
    assert stored.events() == refused_before == []  # nothing written
    report = import_events(engine, path)
    assert report.inserted == 5 and report.unknown_customer_events == 1
    assert any("not in the customer table (first: 'ghost')" in w for w in report.warnings)
    again = import_events(engine, path)  # nothing new: nothing to count again
    assert again.unknown_customer_events == 0 and not again.warnings
