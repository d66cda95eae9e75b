"""The bulk writers the imports (and later the daily run) use, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.storage import bulk
from orchestrator.storage.models import metadata

COLUMNS = [
    "source_event_id",
    "customer_id",
    "occurred_at",
    "type",
    "amount",
    "extra",
    "imported_at",
]
NOW = dt.datetime(2024, 6, 1, 12, 0, 0)


def _row(key: str, when: dt.datetime, extra: dict[str, object] | None = None) -> tuple:
    return (key, "c1", when, "buy", 1.5, extra, NOW)


def _events(engine: sa.Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(metadata.tables["event"])).all()
    return {r.source_event_id: dict(r._mapping) for r in rows}


def test_bulk_insert_skips_existing_and_repeated_keys(engine) -> None:
    with engine.begin() as conn:
        first = bulk.bulk_insert(conn, "event", COLUMNS, [_row("a", NOW)])
        rows = [
            _row("a", NOW),
            _row("b", dt.datetime(2024, 1, 1, 8, 30), {"k": [1, "x"]}),
            _row("b", NOW),
            _row("c", dt.datetime(2024, 1, 2)),
        ]
        second = bulk.bulk_insert(
            conn, "event", COLUMNS, rows, on_conflict_do_nothing=("source_event_id",), chunk_rows=2
        )
    assert (first, second) == (1, 2)
    stored = _events(engine)
    assert sorted(stored) == ["a", "b", "c"]
    assert stored["b"]["occurred_at"] == dt.datetime(2024, 1, 1, 8, 30)
    assert stored["b"]["extra"] == {"k": [1, "x"]}
    assert stored["c"]["extra"] is None
    with engine.connect() as conn:  # stored the way the ORM stores, so SQL comparisons agree
        later = conn.execute(
            sa.select(sa.func.count()).where(metadata.tables["event"].c.occurred_at >= NOW)
        ).scalar_one()
    assert later == 1


def test_insert_arrow_chunks_and_progress(engine) -> None:
    n = 7
    data = pa.table(
        {
            "source_event_id": [f"k{i}" for i in range(n)],
            "customer_id": ["c1"] * n,
            "occurred_at": pa.array(np.arange(n) * 1_000_000, pa.timestamp("us")),
            "type": ["buy"] * n,
            "amount": [float(i) for i in range(n)],
            "extra": ['{"i":1}'] + [None] * (n - 1),
            "imported_at": pa.array([NOW] * n, pa.timestamp("us")),
        }
    )
    seen: list[int] = []
    with engine.begin() as conn:
        inserted = bulk.insert_arrow(
            conn,
            "event",
            data,
            on_conflict_do_nothing=("source_event_id",),
            chunk_rows=3,
            progress=seen.append,
        )
        again = bulk.insert_arrow(conn, "event", data, on_conflict_do_nothing=("source_event_id",))
    assert (inserted, again, seen) == (7, 0, [3, 6, 7])
    stored = _events(engine)
    assert stored["k2"]["occurred_at"] == dt.datetime(1970, 1, 1, 0, 0, 2)
    assert stored["k0"]["extra"] == {"i": 1}


@pytest.mark.parametrize("fail", [False, True])
def test_deferred_indexes_come_back(engine, fail: bool) -> None:
    def names() -> set[str]:
        return {ix["name"] for ix in sa.inspect(engine).get_indexes("event")}

    before = names()
    assert {"ix_event_customer_time", "ix_event_occurred_at"} <= before
    try:
        with engine.begin() as conn, bulk.deferred_indexes(conn, "event"):
            left = {ix["name"] for ix in sa.inspect(conn).get_indexes("event")}
            assert not left & {"ix_event_customer_time", "ix_event_occurred_at"}
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        assert fail
    assert names() == before


def test_worth_deferring_only_when_the_table_is_small(engine) -> None:
    with engine.begin() as conn:
        bulk.bulk_insert(conn, "event", COLUMNS, [_row(f"k{i}", NOW) for i in range(3)])
        assert bulk.worth_deferring(conn, "event", bulk.DEFER_MIN_ROWS)
        assert not bulk.worth_deferring(conn, "event", 10)
        assert bulk.count_up_to(conn, "event", 2) == 2


def test_existing_keys(engine) -> None:
    with engine.begin() as conn:
        bulk.bulk_insert(conn, "event", COLUMNS, [_row("a'b", NOW), _row('q"', NOW)])
        found = bulk.existing_keys(conn, "event", "source_event_id", ["a'b", "zz", 'q"'])
    assert found == {"a'b", 'q"'}


@given(st.lists(st.sampled_from(["a", "b", "c", "d", ""]), max_size=30))
def test_first_of_each_matches_a_plain_loop(keys: list[str]) -> None:
    expected: dict[str, int] = {}
    for i, key in enumerate(keys):
        expected.setdefault(key, i)
    found = bulk.first_of_each(pa.array(keys, pa.string()))
    assert found.tolist() == sorted(expected.values())
