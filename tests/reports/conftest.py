"""A programme database built once per module and backend (reports only read it, and maturing
rewards is idempotent)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pytest
import sqlalchemy as sa

from orchestrator.storage.db import init_schema, make_engine
from tests.conftest import BACKENDS, PG_URL, _pg_schema_url
from tests.reports.builders import Programme, build_programme

AS_OF = date(2026, 6, 1)


@dataclass
class Built:
    engine: sa.Engine
    url: str
    programme: Programme


@pytest.fixture(scope="module", params=BACKENDS)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'orch.db'}"
        schema = None
    else:
        assert PG_URL is not None
        schema = f"r_{uuid.uuid4().hex[:12]}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        url = _pg_schema_url(PG_URL, schema)
    engine = make_engine(url)
    init_schema(engine)
    programme = build_programme(engine, 3000, seed=1)
    try:
        yield Built(engine, url, programme)
    finally:
        engine.dispose()
        if schema:
            admin = make_engine(PG_URL or "")
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()
