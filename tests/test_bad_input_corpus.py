"""The bad-input corpus (issue 12): every case through the installed `orch`, as a careless or
hostile user would type it, on SQLite and PostgreSQL. Each must give exit code 2, one line on
stderr that says what is wrong (the expected text below), and leave every table exactly as it was.

One row per case: a name, the files it needs (written into a fresh folder; ``{dir}`` in the
arguments is that folder) and the expected words of the error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.storage.db import make_engine
from tests.conftest import table_snapshot

SMALL = Path(__file__).parent / "data" / "plan_small.yaml"
ORCH = shutil.which("orch", path=str(Path(sys.executable).parent)) or "orch"
PROGRESS = re.compile(r"[\w ]+: [\d,]+/[\d,]+( done)?( \(.*\))?")
EVENTS_HEAD = "event_id,customer_id,occurred_at,type,amount,discount\n"
CAMPAIGN = (
    "  - id: {id}\n    channel: {channel}\n    target: '{target}'\n    treatments: [{{id: a}}]\n"
)


def plan_with(**campaign: str) -> str:
    values = {"id": "x", "channel": "email", "target": "true", **campaign}
    return "version: 1\ncampaigns:\n" + CAMPAIGN.format(**values)


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    expect: str
    files: dict[str, str | bytes] = field(default_factory=dict)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)
DEEP = "(" * 200 + "true" + ")" * 200
NOTS = "not " * 200 + "true"
MINUS = "-" * 200 + "1 > 0"


def _nan_parquet() -> bytes:
    table = pa.table(
        {
            "event_id": ["p1"],
            "customer_id": ["C1"],
            "occurred_at": ["2026-03-01T10:00:00Z"],
            "type": ["purchase"],
            "amount": pa.array([float("nan")], pa.float64()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


CASES = [
    # --- plans
    Case("empty plan", ("plan", "apply", "{dir}/p.yaml"), "the plan is empty", {"p.yaml": ""}),
    Case("alias bomb", ("plan", "apply", "{dir}/p.yaml"), "through", {"p.yaml": BOMB}),
    Case(
        "200 nested parentheses",
        ("plan", "apply", "{dir}/p.yaml"),
        "target",
        {"p.yaml": plan_with(target=DEEP)},
    ),
    Case(
        "200 nested nots",
        ("plan", "apply", "{dir}/p.yaml"),
        "target",
        {"p.yaml": plan_with(target=NOTS)},
    ),
    Case(
        "200 unary minus signs",
        ("plan", "apply", "{dir}/p.yaml"),
        "target",
        {"p.yaml": plan_with(target=MINUS)},
    ),
    Case(
        "a 6 MB plan file",
        ("plan", "apply", "{dir}/p.yaml"),
        "5 MB",
        {"p.yaml": plan_with() + "# " + "x" * 6_000_000 + "\n"},
    ),
    Case(
        "a 40-character channel",
        ("plan", "apply", "{dir}/p.yaml"),
        "channel",
        {"p.yaml": plan_with(channel="e" * 40)},
    ),
    Case(
        "a 300-character campaign name",
        ("plan", "apply", "{dir}/p.yaml"),
        "name",
        {"p.yaml": plan_with().replace("    channel:", f"    name: {'n' * 300}\n    channel:")},
    ),
    Case(
        "an infinite cost",
        ("plan", "apply", "{dir}/p.yaml"),
        "cost",
        {"p.yaml": plan_with().replace("{id: a}", "{id: a, cost: .inf}")},
    ),
    Case(
        "an unknown field in a rule",
        ("plan", "apply", "{dir}/p.yaml"),
        "unknown field 'shoe_size'",
        {"p.yaml": plan_with(target="shoe_size > 40")},
    ),
    Case(
        "an attribute named like a computed feature",
        ("plan", "apply", "{dir}/p.yaml"),
        "built-in field",
        {"p.yaml": plan_with().replace("campaigns:", "attributes: {monetary: number}\ncampaigns:")},
    ),
    Case(
        "a declared type that contradicts the stored values",
        ("plan", "apply", "{dir}/p.yaml"),
        "declared number but the imported data holds string values",
        {"p.yaml": plan_with().replace("campaigns:", "attributes: {country: number}\ncampaigns:")},
    ),
    Case(
        "a band on a text field",
        ("plan", "apply", "{dir}/p.yaml"),
        "'country' is no number field",
        {
            "p.yaml": plan_with().replace(
                "campaigns:", "settings:\n  bands:\n    b: {field: country}\ncampaigns:"
            )
        },
    ),
    Case(
        "a payload naming a field the send list cannot carry",
        ("plan", "apply", "{dir}/p.yaml"),
        "names no stored customer field",
        {"p.yaml": plan_with().replace("{id: a}", "{id: a, payload: {n: '{days_to_birthday}'}}")},
    ),
    Case("a plan that is not YAML", ("plan", "validate", "{dir}/p.yaml"), "", {"p.yaml": "a: [\n"}),
    # --- runs and edits
    Case("run --seed -1", ("run", "--date", "2026-03-02", "--seed", "-1"), "--seed"),
    Case("run --date 9999-12-31", ("run", "--date", "9999-12-31"), "--date"),
    Case("run --batch-size -5", ("run", "--date", "2026-03-02", "--batch-size", "-5"), "batch"),
    Case("priority set X -1", ("priority", "set", "birthday", "-1"), "priority"),
    Case("an unknown campaign", ("campaigns", "pause", "ghost"), "no campaign with id 'ghost'"),
    # --- customers
    Case(
        "a NUL byte in a cell",
        ("customers", "import", "{dir}/c.csv"),
        "NUL",
        {"c.csv": "customer_id,country\nC9,E\x00S\n"},
    ),
    Case(
        "a column named like a computed feature",
        ("customers", "import", "{dir}/c.csv"),
        "computed feature",
        {"c.csv": "customer_id,monetary\nC9,3\n"},
    ),
    Case(
        "a column name with spaces",
        ("customers", "import", "{dir}/c.csv"),
        "cannot be used in rules",
        {"c.csv": "customer_id,shoe size\nC9,3\n"},
    ),
    Case(
        "a 100-character attribute name",
        ("customers", "import", "{dir}/c.csv"),
        "longer than",
        {"c.csv": f"customer_id,{'a' * 100}\nC9,3\n"},
    ),
    Case(
        "an age outside its declared range",
        ("customers", "import", "{dir}/c.csv"),
        "outside the declared range",
        {"c.csv": "customer_id,age\nC9,-5\n"},
    ),
    # --- events
    Case(
        "a duplicate event_id with other content",
        ("events", "import", "{dir}/e.csv"),
        "e1",
        {
            "e.csv": EVENTS_HEAD
            + "e1,C1,2026-03-01T10:00:00Z,purchase,10,0\n"
            + "e1,C1,2026-03-01T10:00:00Z,purchase,999,0\n"
        },
    ),
    Case(
        "a known event_id with a corrected amount",
        ("events", "import", "{dir}/e.csv"),
        "--update",
        {"e.csv": EVENTS_HEAD + "k1,C1,2026-02-01T10:00:00Z,purchase,55,0\n"},
    ),
    Case(
        "an event dated 2099",
        ("events", "import", "{dir}/e.csv"),
        "2099",
        {"e.csv": EVENTS_HEAD + "f1,C1,2099-01-01T10:00:00Z,purchase,10,0\n"},
    ),
    Case(
        "an amount of 1e308",
        ("events", "import", "{dir}/e.csv"),
        "amount",
        {"e.csv": EVENTS_HEAD + "f2,C1,2026-03-01T10:00:00Z,purchase,1e308,0\n"},
    ),
    Case(
        "a Parquet amount of NaN",
        ("events", "import", "{dir}/e.parquet"),
        "amount",
        {"e.parquet": _nan_parquet()},
    ),
    Case("a file that is not there", ("events", "import", "{dir}/none.csv"), "file not found"),
]


def orch(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_DATABASE_URL": db_url, "ORCH_ACTOR": "tester", "COLUMNS": "200"}
    return subprocess.run([ORCH, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per backend with a plan, customers (ages in a declared range) and events."""
    from tests.conftest import PG_URL, _pg_schema_url

    backend = request.param
    folder = tmp_path_factory.mktemp("corpus")
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'orch.db'}"
    else:
        import uuid

        schema = f"c_{uuid.uuid4().hex[:12]}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        url = _pg_schema_url(PG_URL, schema)
    plan = folder / "plan.yaml"
    plan.write_text(
        SMALL.read_text()
        .replace("settings:\n", "settings:\n  attribute_ranges: {age: {min: 0, max: 120}}\n")
        .replace("attributes:\n", "attributes:\n  age: number\n")
    )
    customers = folder / "customers.csv"
    customers.write_text("customer_id,country,age\nC1,ES,30\nC2,FR,41\n")
    events = folder / "events.csv"
    events.write_text(EVENTS_HEAD + "k1,C1,2026-02-01T10:00:00Z,purchase,50,0\n")
    for args in (
        ("init",),
        ("plan", "apply", str(plan)),
        ("customers", "import", str(customers)),
        ("events", "import", str(events)),
    ):
        done = orch(url, *args)
        assert done.returncode == 0, (args, done.stderr)
    yield url
    if schema is not None:
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _backends() -> list[str]:
    from tests.conftest import PG_URL

    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.mark.parametrize("shop", _backends(), indirect=True)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_the_database_unchanged(
    shop: str, case: Case, tmp_path: Path
) -> None:
    for name, content in case.files.items():
        target = tmp_path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    args = [a.replace("{dir}", str(tmp_path)) for a in case.args]
    engine = make_engine(shop)
    try:
        before = table_snapshot(engine)
        result = orch(shop, *args)
        after = table_snapshot(engine)
    finally:
        engine.dispose()
    assert after == before, ("the database changed", result.returncode, result.stderr[-800:])
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    # One error line; anything else on stderr is the progress of the work before it.
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if not PROGRESS.fullmatch(line)]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr[-1500:]
    assert errors[0].startswith("error: ") and "Traceback" not in result.stderr
    assert case.expect in errors[0], errors[0]


def test_the_corpus_names_every_case_once() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 25
    # Not in the corpus, because they are accepted: a rule of 500 `or` terms (it works), and
    # a discount of 5 (imported with a warning that counts such rows).
