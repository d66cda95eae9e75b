"""Shared fixtures: a fresh database per test on SQLite always, on PostgreSQL when configured.

Set ``ORCH_TEST_POSTGRES_URL`` (``.ci/run`` does) to run every ``db_url``/``engine`` test on
PostgreSQL too; each test gets its own schema there, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.storage.db import init_schema, make_engine, normalize_url

PG_URL = os.environ.get("ORCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _pg_schema_url(base: str, schema: str) -> str:
    url = sa.make_url(normalize_url(base))
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of an empty database (no schema) on each configured backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orch.db'}"
        return
    assert PG_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on a database with the newest schema."""
    eng = make_engine(db_url)
    init_schema(eng)
    yield eng
    eng.dispose()


def table_snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: compare before/after to prove nothing was written."""
    out: dict[str, list[tuple]] = {}
    meta = sa.MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            rows = conn.execute(sa.select(table)).all()
            out[name] = sorted(tuple(map(repr, r)) for r in rows)
    return out


@pytest.fixture
def snapshot():
    return table_snapshot
