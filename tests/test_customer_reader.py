"""The run's columnar customer reader (a child process on ADBC's drivers) against the row
path: the same columns for any data, the row path's errors for values of another type, and the
row path again when the child dies."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from orchestrator import admin
from orchestrator.engine.columns import build_columns
from orchestrator.engine.hashing import customer_keys
from orchestrator.errors import InputError
from orchestrator.features import rule_schema
from orchestrator.rules.columns import BoolColumn, DateColumn, NumberColumn, StringColumn
from orchestrator.run import run_daily
from orchestrator.storage.customer_reader import CustomerReader, _address
from orchestrator.storage.db import make_engine
from orchestrator.storage.models import ContactState, Customer, CustomerFeatures, utcnow
from orchestrator.storage.run_repo import RawBatch
from tests.conftest import BACKENDS
from tests.helpers import seed_customers
from tests.test_run import DAY, PLAN, decisions

ATTRIBUTES = {"age": "number", "vip": "bool", "country": "string", "birth_date": "date"}
FEATURES = ["recency_days", "frequency", "monetary", "lifecycle_stage", "p_alive"]
FIELDS = [*ATTRIBUTES, *FEATURES, "days_to_birthday"]

finite = st.floats(allow_nan=False, allow_infinity=False)
VALUES = {
    "age": st.one_of(st.none(), st.integers(-(2**53), 2**53), finite),
    "vip": st.one_of(st.none(), st.booleans()),
    "country": st.one_of(  # text a file can hold (UTF-8), and PostgreSQL (no NUL)
        st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
    ),
    "birth_date": st.one_of(st.none(), st.dates().map(date.isoformat)),
}
customer = st.fixed_dictionaries(
    {},
    optional={name: strategy for name, strategy in VALUES.items()},  # missing keys too
)
features = st.fixed_dictionaries(
    {},
    optional={
        "recency_days": st.one_of(st.none(), finite),
        "frequency": st.one_of(st.none(), st.integers(0, 10**6)),
        "monetary": st.one_of(st.none(), finite),
        "lifecycle_stage": st.one_of(st.none(), st.sampled_from(["new", "active", "lapsed"])),
        "p_alive": st.one_of(st.none(), st.floats(0, 1)),
    },
)
state = st.one_of(st.none(), st.binary(min_size=1, max_size=40))


def write(engine: sa.Engine, rows: list[tuple[dict, dict | None, bytes | None]]) -> list[str]:
    ids = [f"C{i:05d}" for i in range(len(rows))]
    now = utcnow()
    with engine.begin() as conn:
        for table in (ContactState, CustomerFeatures, Customer):
            conn.execute(sa.delete(table))
        customers = [
            {"customer_id": c, "attributes": a, "created_at": now, "updated_at": now}
            for c, (a, _, _) in zip(ids, rows, strict=True)
        ]
        if customers:
            conn.execute(sa.insert(Customer), customers)
        feats = [
            {
                "customer_id": c,
                "as_of": date(2026, 11, 1),
                "updated_at": now,
                **dict.fromkeys(FEATURES),
                **f,
            }
            for c, (_, f, _) in zip(ids, rows, strict=True)
            if f is not None
        ]
        if feats:
            conn.execute(sa.insert(CustomerFeatures), feats)
        states = [
            {"customer_id": c, "state": s}
            for c, (_, _, s) in zip(ids, rows, strict=True)
            if s is not None
        ]
        if states:
            conn.execute(sa.insert(ContactState), states)
    return ids


def read_all(
    reader: CustomerReader,
    engine: sa.Engine,
    limit: int,
    *,
    with_state: bool = True,
    upto: str | None = None,
) -> list[RawBatch]:
    out, after = [], None
    with engine.connect() as conn:
        while True:
            batch = reader.load(conn, after=after, limit=limit, with_state=with_state, upto=upto)
            conn.rollback()
            if not batch.ids:
                return out
            out.append(batch)
            after = batch.ids[-1]


def columns_of(batch: RawBatch, fields: list[str] = FIELDS) -> dict:
    schema = rule_schema(ATTRIBUTES)
    cols = build_columns(
        batch.attributes, batch.features, schema, fields, date(2026, 11, 23), len(batch)
    )
    out = {}
    for name, col in cols.items():
        if isinstance(col, NumberColumn):
            out[name] = col.values.tobytes()  # exact, NaN equal to NaN
        elif isinstance(col, BoolColumn):
            out[name] = (col.values & col.known).tolist(), col.known.tolist()
        elif isinstance(col, StringColumn):
            out[name] = [None if k < 0 else col.categories[k] for k in col.codes.tolist()]
        else:
            assert isinstance(col, DateColumn)
            out[name] = col.values.tolist()
    return out


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(customer, st.one_of(st.none(), features), state), max_size=40),
    limit=st.integers(1, 17),
    attributes=st.lists(st.sampled_from(sorted(ATTRIBUTES)), unique=True),  # none too
    feature_names=st.lists(st.sampled_from(FEATURES), unique=True),
    with_state=st.booleans(),
    upto=st.one_of(st.none(), st.integers(0, 40).map(lambda i: f"C{i:05d}")),
    salt=st.one_of(st.none(), st.just("pepper")),
)
def test_columnar_batches_equal_the_row_path(
    engine: sa.Engine, rows, limit, attributes, feature_names, with_state, upto, salt
) -> None:
    ids = write(engine, rows)
    types = {name: ATTRIBUTES[name] for name in attributes}
    fields = [*attributes, *feature_names]
    kw = {"with_state": with_state, "upto": upto}
    with CustomerReader(engine, types, feature_names, salt=salt) as fast:
        assert fast.columnar
        got = read_all(fast, engine, limit, **kw)
    with CustomerReader(engine, types, feature_names, columnar=False) as slow:
        want = read_all(slow, engine, limit, **kw)
    assert [b.ids for b in got] == [b.ids for b in want]
    assert [i for b in got for i in b.ids] == [i for i in ids if upto is None or i <= upto]
    assert [b.states for b in got] == [b.states for b in want]
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if k:  # the first batch is read row by row while the reader starts
            assert all(isinstance(v, pa.Array) for v in g.attributes.values())
            if salt is None:
                assert g.keys is None
            else:
                assert g.keys is not None and g.key_salt == salt
                assert g.keys.tolist() == customer_keys(g.ids, salt).tolist()
        assert columns_of(g, fields) == columns_of(w, fields)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"age": "41"}, "a number column cannot hold str values such as '41'"),
        ({"age": True}, "a number column cannot hold bool values such as True"),
        ({"vip": 1}, "a bool column cannot hold int values such as 1"),
        ({"country": 34}, "a string column cannot hold int values such as 34"),
    ],
)
def test_a_value_of_another_type_gets_the_row_paths_error(
    engine: sa.Engine, bad: dict, message: str
) -> None:
    rows = [({"age": 30, "vip": True, "country": "ES"}, None, None)] * 9
    rows[7] = (bad, None, None)
    write(engine, rows)
    with CustomerReader(engine, ATTRIBUTES, FEATURES) as reader:
        _, second, third = read_all(reader, engine, 3)
    assert isinstance(second.attributes["age"], pa.Array)  # a batch without it is columnar
    assert isinstance(third.attributes["age"], list)  # the one with it was read row by row
    columns_of(second)
    with pytest.raises(InputError, match=message):
        columns_of(third)


def test_the_row_path_takes_over_when_the_reader_process_dies(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    write(engine, [({"age": i, "vip": i % 2 == 0}, {"monetary": i / 3}, None) for i in range(9)])
    with CustomerReader(engine, ATTRIBUTES, FEATURES, columnar=False) as slow:
        want = [columns_of(b) for b in read_all(slow, engine, 4)]
    with CustomerReader(engine, ATTRIBUTES, FEATURES) as reader, engine.connect() as conn:
        first = reader.load(conn, after=None, limit=4)
        child = reader._child
        assert child is not None
        child.kill()
        child.wait()
        with caplog.at_level(logging.WARNING, logger="orch.run"):
            second = reader.load(conn, after=first.ids[-1], limit=4)
        third = reader.load(conn, after=second.ids[-1], limit=4)
    assert not reader.columnar and "reading row by row" in caplog.text
    assert [columns_of(b) for b in (first, second, third)] == want


def test_the_reader_process_starts_for_a_second_batch_and_ends_with_the_reader(
    engine: sa.Engine,
) -> None:
    write(engine, [({"age": 1}, None, None)] * 5)
    with CustomerReader(engine, ATTRIBUTES, FEATURES) as reader, engine.connect() as conn:
        reader.load(conn, after=None, limit=10)  # all of them: no reader needed
        assert reader._child is None
        reader.load(conn, after=None, limit=2)  # and the next batch is being read ahead
        child = reader._child
    assert child is not None and child.poll() == 0


class Counting(CustomerReader):
    """A reader that counts the batches that came as Arrow columns."""

    arrow = 0

    def load(self, *args, **kwargs) -> RawBatch:
        batch = super().load(*args, **kwargs)
        Counting.arrow += any(isinstance(v, pa.Array) for v in batch.attributes.values())
        return batch


def test_a_run_decides_the_same_through_either_reader(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.apply_plan_file(engine, PLAN, actor="test")
    seed_customers(engine, 700, seed=3)
    monkeypatch.setattr("orchestrator.run.CustomerReader", Counting)
    runs, arrow = [], []
    for setting in ("true", "false"):
        monkeypatch.setenv("ORCH_BATCH_READER", setting)
        Counting.arrow = 0
        run_daily(engine, day=DAY, batch_size=97, force=True)
        run_daily(engine, day=DAY + timedelta(days=1), batch_size=97, force=True)
        runs.append(decisions(engine))
        arrow.append(Counting.arrow)
    assert arrow[0] >= 10 and arrow[1] == 0  # two runs of 8 batches; the first of each by row
    assert runs[0] == runs[1] and len(runs[0]) > 100
    assert len({d[2] for d in runs[0]}) > 2  # campaigns and no send


def test_the_reader_gets_a_postgresql_url_as_libpq_reads_it() -> None:
    url = "postgresql://ann:a%20b+c%252x@db.example:6543/shop?options=-c%20search_path%3Ds1"
    kind, _, conninfo = (_address(make_engine(url)) or "").partition(":")
    assert kind == "postgresql"
    assert conninfo_to_dict(conninfo) == {
        "host": "db.example",
        "port": "6543",
        "dbname": "shop",
        "user": "ann",
        "password": "a b+c%2x",
        "options": "-c search_path=s1",
    }


@pytest.mark.parametrize("db_url", [b for b in BACKENDS if b == "postgresql"], indirect=True)
def test_a_postgresql_url_with_spaces_reaches_the_reader(engine: sa.Engine) -> None:
    options = engine.url.query["options"]
    assert isinstance(options, str) and options.startswith("-csearch_path=")
    spaced = make_engine(
        engine.url.update_query_dict({"options": "-c " + options[2:]}).render_as_string(
            hide_password=False
        )
    )
    write(spaced, [({"age": i}, None, None) for i in range(5)])
    with CustomerReader(spaced, ATTRIBUTES, FEATURES) as reader:
        batches = read_all(reader, spaced, 2)
    assert reader._url is not None  # it did not give up on the reader
    assert [isinstance(b.attributes["age"], pa.Array) for b in batches] == [False, True, True]
    spaced.dispose()


@pytest.mark.parametrize(("setting", "columnar"), [("false", False), ("true", True)])
def test_orch_batch_reader_chooses_the_reader(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, setting: str, columnar: bool
) -> None:
    admin.apply_plan_file(engine, PLAN, actor="test")
    seed_customers(engine, 50)
    made: list[CustomerReader] = []

    def spy(*args, **kwargs) -> CustomerReader:
        made.append(CustomerReader(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("orchestrator.run.CustomerReader", spy)
    monkeypatch.setenv("ORCH_BATCH_READER", setting)
    run_daily(engine, day=DAY, batch_size=20)
    assert made and all(r.columnar is columnar for r in made)
