"""Customer imports: type inference, the attribute registry, merge and clear semantics."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from orchestrator.errors import ImportFileError
from orchestrator.imports import import_customers
from orchestrator.storage.db import session_scope
from orchestrator.storage.models import Customer, CustomerAttribute

CUSTOMERS = """customer_id,vip,score,signup,city,code
c1,yes,1.5,2024-01-02,Paris,007
c2,No,2,2024-02-29,"Lyon, FR",12
c3,TRUE,-3e2,,,
"""


def test_csv_round_trip_infers_and_registers_types(engine, files, stored) -> None:
    report = import_customers(engine, files.text("customers.csv", CUSTOMERS))

    assert (report.rows_read, report.inserted, report.updated) == (3, 3, 0)
    assert (report.unchanged_or_duplicate, report.rejected, report.rejects_path) == (0, 0, None)
    assert report.new_attributes == {
        "vip": "bool",
        "score": "number",
        "signup": "date",
        "city": "string",
        "code": "number",
    }
    assert stored.registry()["vip"] == ("bool", "import")
    assert stored.customers() == {
        "c1": {"vip": True, "score": 1.5, "signup": "2024-01-02", "city": "Paris", "code": 7},
        "c2": {"vip": False, "score": 2, "signup": "2024-02-29", "city": "Lyon, FR", "code": 12},
        "c3": {"vip": True, "score": -300},
    }
    assert isinstance(stored.customers()["c2"]["score"], int)  # integral numbers stay ints


def test_registered_types_win_over_inference(engine, files, stored) -> None:
    with session_scope(engine) as session:
        session.add(CustomerAttribute(name="code", dtype="string", origin="plan"))
        session.add(CustomerAttribute(name="vip", dtype="bool", origin="plan"))
    report = import_customers(engine, files.text("customers.csv", CUSTOMERS))

    assert "code" not in report.new_attributes and "vip" not in report.new_attributes
    assert stored.registry()["code"] == ("string", "plan")
    assert stored.customers()["c1"]["code"] == "007"


def test_value_not_of_the_registered_type_is_an_error(engine, files) -> None:
    with session_scope(engine) as session:
        session.add(CustomerAttribute(name="vip", dtype="bool", origin="plan"))
    path = files.text("customers.csv", "customer_id,vip\nc1,yes\nc2,1\n")
    with pytest.raises(ImportFileError) as exc:
        import_customers(engine, path)
    assert str(exc.value) == f"{path} line 3, field 'vip': '1' is not a boolean"


def test_second_import_merges_and_clears(engine, files, stored) -> None:
    import_customers(engine, files.text("customers.csv", CUSTOMERS))
    before = stored.customer_rows()
    update = "customer_id,score,city\nc1,1.5,Rome\nc2,2,\nc4,9,Nice\n"
    report = import_customers(engine, files.text("update.csv", update))

    assert (report.inserted, report.updated, report.unchanged_or_duplicate) == (1, 2, 0)
    assert report.new_attributes == {}
    after = stored.customer_rows()
    assert after["c1"]["attributes"] == {
        "vip": True,
        "score": 1.5,
        "signup": "2024-01-02",
        "city": "Rome",
        "code": 7,
    }
    assert after["c2"]["attributes"] == {
        "vip": False,
        "score": 2,
        "signup": "2024-02-29",
        "code": 12,
    }
    assert after["c4"]["attributes"] == {"score": 9, "city": "Nice"}
    assert after["c3"] == before["c3"]  # not in the file: untouched
    assert after["c1"]["updated_at"] > before["c1"]["updated_at"]
    assert after["c1"]["created_at"] == before["c1"]["created_at"]


def test_reimport_changes_nothing_and_keeps_updated_at(engine, files, stored) -> None:
    path = files.text("customers.csv", CUSTOMERS)
    import_customers(engine, path)
    before = stored.customer_rows()
    report = import_customers(engine, path)

    assert (report.inserted, report.updated, report.unchanged_or_duplicate) == (0, 0, 3)
    assert stored.customer_rows() == before


def test_empty_cell_removes_attributes_set_elsewhere(engine, files, stored) -> None:
    with session_scope(engine) as session:
        session.add(
            Customer(customer_id="c1", attributes={"a": 1, "b": "x", "nested": {"k": None}})
        )
        session.add(CustomerAttribute(name="a", dtype="number", origin="plan"))
    report = import_customers(engine, files.text("c.csv", "customer_id,a,b\nc1,,y\n"))

    assert (report.inserted, report.updated) == (0, 1)
    assert stored.customers() == {"c1": {"b": "y", "nested": {"k": None}}}


def test_a_column_without_values_registers_nothing_and_clears(engine, files, stored) -> None:
    import_customers(engine, files.text("a.csv", "customer_id,note\nc1,hello\n"))
    report = import_customers(engine, files.text("b.csv", "customer_id,note,other\nc1,,\nc2,,\n"))

    assert report.new_attributes == {}
    assert "other" not in stored.registry()
    assert stored.customers() == {"c1": {}, "c2": {}}


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (["yes", "no", "True", ""], "bool"),
        (["1", "0", "1"], "number"),
        (["1", "2.5", ".5", "-3E2", " 4 "], "number"),
        (["2024-01-01", "1999-12-31"], "date"),
        (["2024-01-01", "2024-02-30"], "string"),
        (["yes", "2"], "string"),
        (["nan", "inf"], "string"),
    ],
)
def test_csv_type_inference(engine, files, values: list[str], dtype: str) -> None:
    body = "".join(f"c{i},{v}\n" for i, v in enumerate(values))
    report = import_customers(engine, files.text("c.csv", "customer_id,x\n" + body))
    assert report.new_attributes == {"x": dtype}


def test_parquet_types_come_from_the_schema(engine, files, stored) -> None:
    table = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "flag": pa.array([True, None]),
            "count": pa.array([3, 4], pa.int32()),
            "ratio": pa.array([0.25, float("nan")]),
            "born": pa.array([dt.date(1990, 5, 17), None], pa.date32()),
            "signup": pa.array([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]),
            "seen": pa.array([dt.datetime(2024, 1, 1, 10, 30), None]),
            "city": pa.array(["Paris", "Rome"]).dictionary_encode(),
            "code": pa.array(["007", None]),
        }
    )
    report = import_customers(engine, files.parquet("c.parquet", table))

    assert report.new_attributes == {
        "flag": "bool",
        "count": "number",
        "ratio": "number",
        "born": "date",
        "signup": "date",
        "seen": "string",
        "city": "string",
        "code": "string",
    }
    assert stored.customers() == {
        "1": {
            "flag": True,
            "count": 3,
            "ratio": 0.25,
            "born": "1990-05-17",
            "signup": "2024-01-01",
            "seen": "2024-01-01T10:30:00",
            "city": "Paris",
            "code": "007",
        },
        "2": {"count": 4, "signup": "2024-01-02", "city": "Rome"},
    }


def test_jsonl_round_trip(engine, files, stored) -> None:
    lines = [
        '{"customer_id": "c1", "vip": true, "score": 2, "signup": "2024-01-02", "tag": "a"}',
        "",
        '{"customer_id": "c2", "vip": false, "score": 2.5, "signup": null, "tag": "2024-01-01"}',
    ]
    report = import_customers(engine, files.text("c.jsonl", "\n".join(lines) + "\n"))

    assert report.new_attributes == {
        "vip": "bool",
        "score": "number",
        "signup": "date",
        "tag": "string",
    }
    assert stored.customers() == {
        "c1": {"vip": True, "score": 2, "signup": "2024-01-02", "tag": "a"},
        "c2": {"vip": False, "score": 2.5, "tag": "2024-01-01"},
    }


def test_jsonl_with_mixed_json_types_is_checked_per_line(engine, files) -> None:
    with session_scope(engine) as session:
        session.add(CustomerAttribute(name="score", dtype="number", origin="plan"))
    lines = ['{"customer_id": "c1", "score": 2}', '{"customer_id": "c2", "score": "high"}']
    path = files.text("c.ndjson", "\n".join(lines) + "\n")
    with pytest.raises(ImportFileError) as exc:
        import_customers(engine, path)
    assert str(exc.value) == f"{path} line 2, field 'score': 'high' is not a number"


def test_awkward_strings_survive_as_json(engine, files, stored) -> None:
    text = 'customer_id,note\nc1,"say ""hi"" \\ then\ttab"\nc2,"two\nlines"\nc3,Zürich ✓\n'
    import_customers(engine, files.text("c.csv", text))
    assert stored.customers() == {
        "c1": {"note": 'say "hi" \\ then\ttab'},
        "c2": {"note": "two\nlines"},
        "c3": {"note": "Zürich ✓"},
    }


def test_gzipped_csv_and_explicit_format(engine, files, stored) -> None:
    import gzip

    path = files.raw("c.csv.gz", gzip.compress(b"customer_id,x\nc1,1\n"))
    import_customers(engine, path)
    other = files.text("c.data", "customer_id,x\nc2,2\n")
    import_customers(engine, other, fmt="csv")
    assert stored.customers() == {"c1": {"x": 1}, "c2": {"x": 2}}


def test_progress_reaches_the_total(engine, files) -> None:
    calls: list[tuple[int, int | None]] = []
    import_customers(
        engine,
        files.text("c.csv", CUSTOMERS),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)


def test_many_chunks_mixing_new_and_existing(engine, files, stored, monkeypatch) -> None:
    from orchestrator.storage import bulk

    monkeypatch.setattr(bulk, "CHUNK_ROWS", 3)
    first = "".join(f"c{i},{i}\n" for i in range(0, 10, 2))  # even ids
    import_customers(engine, files.text("a.csv", "customer_id,n\n" + first))
    second = "".join(f"c{i},{i * 10 + 1}\n" for i in range(10))
    report = import_customers(engine, files.text("b.csv", "customer_id,n\n" + second))

    assert (report.inserted, report.updated, report.unchanged_or_duplicate) == (5, 5, 0)
    assert stored.customers() == {f"c{i}": {"n": i * 10 + 1} for i in range(10)}
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM customer")).scalar_one()
    assert count == 10


@pytest.mark.parametrize(
    ("column", "message"),
    [
        ('"we""ird \\ name"', "column name 'we\"ird \\\\ name' cannot be used in rules"),
        ("first name", "column name 'first name' cannot be used in rules"),
        ("2fa", "column name '2fa' cannot be used in rules"),
        ("null", "column name 'null' cannot be used in rules"),
        ("monetary", "column 'monetary' has the name of a computed feature"),
    ],
)
def test_attribute_names_rules_cannot_use_are_refused(
    engine, files, stored, snapshot, column: str, message: str
) -> None:
    """A customer column becomes a rule field: a name a rule cannot write, or one a computed
    feature already has (rules would read the feature), is refused before anything is written."""
    before = snapshot(engine)
    with pytest.raises(ImportFileError) as exc:
        import_customers(engine, files.text("a.csv", f"customer_id,{column}\nc1,1\n"))
    assert message in str(exc.value) and "a.csv: " in str(exc.value)
    assert "\n" not in str(exc.value)
    assert snapshot(engine) == before


def test_gzipped_json_lines(engine, files, stored) -> None:
    import gzip

    path = files.raw("c.jsonl.gz", gzip.compress(b'{"customer_id": "c1", "n": 1}\n'))
    import_customers(engine, path)
    assert stored.customers() == {"c1": {"n": 1}}


def test_values_outside_a_declared_range_are_refused(engine, files, stored, snapshot) -> None:
    from orchestrator import admin
    from orchestrator.errors import PlanError

    plan = files.text(
        "plan.yaml",
        "version: 1\n"
        "settings:\n"
        "  attribute_ranges:\n"
        "    age: {min: 0, max: 120}\n"
        "    birth_date: {max: 2026-12-31}\n"
        "attributes: {age: number, birth_date: date, country: string}\n"
        "campaigns: []\n",
    )
    admin.apply_plan_file(engine, plan, actor="test")
    text = (
        "customer_id,age,birth_date,country\n"
        "c1,34,1992-05-01,ES\n"
        "c2,-5,1990-01-01,FR\n"  # line 3: age below 0
        "c3,40,2090-03-01,DE\n"  # line 4: born in 2090
        "c4,,,IT\n"  # nothing to check
    )
    path = files.text("customers.csv", text)
    before = snapshot(engine)
    with pytest.raises(ImportFileError) as exc:
        import_customers(engine, path)
    assert str(exc.value) == (
        f"{path} line 3, field 'age': '-5' is outside the declared range [0, 120] "
        "(plan settings.attribute_ranges)"
    )
    assert snapshot(engine) == before  # nothing written
    report = import_customers(engine, path, skip_invalid=True)
    assert (report.inserted, report.rejected) == (2, 2)
    assert set(stored.customers()) == {"c1", "c4"}
    # A range on a text attribute, or with bounds of the wrong kind, is refused at apply.
    bad = files.text("bad.yaml", plan.read_text().replace("birth_date: {max", "country: {max"))
    with pytest.raises(PlanError, match="'country' is no number or date attribute"):
        admin.apply_plan_file(engine, bad, actor="test")
    worse = files.text("worse.yaml", plan.read_text().replace("max: 120", "max: 2026-01-01"))
    with pytest.raises(PlanError, match="'age' is a number attribute: give number bounds"):
        admin.apply_plan_file(engine, worse, actor="test")
