from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from orchestrator.errors import SchemaNotInitialized
from orchestrator.storage.db import (
    SCHEMA_HEAD,
    current_revision,
    head_revision,
    init_schema,
    make_engine,
    require_schema,
)
from orchestrator.storage.models import metadata


def test_init_creates_every_table_and_is_idempotent(db_url: str) -> None:
    eng = make_engine(db_url)
    with pytest.raises(SchemaNotInitialized, match="orch init"):
        require_schema(eng)
    before, after = init_schema(eng)
    assert before is None and after == head_revision(eng)
    assert after == SCHEMA_HEAD, "a new migration: set SCHEMA_HEAD in storage/db.py to it"
    assert set(metadata.tables) <= set(sa.inspect(eng).get_table_names())
    assert init_schema(eng) == (after, after)
    require_schema(eng)


def test_migrations_match_the_models(engine: sa.Engine) -> None:
    """A model change without a migration fails here."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_newer_schema_is_refused_with_an_actionable_message(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    assert current_revision(engine) == "9999"
    with pytest.raises(SchemaNotInitialized, match="newer"):
        require_schema(engine)
