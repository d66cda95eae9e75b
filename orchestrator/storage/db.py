"""Engines, sessions and schema management (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session

from orchestrator.errors import InputError, SchemaNotInitialized

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: loading it costs about 0.2 s, and every command but
# `orch init` only compares the database's revision with this one.
SCHEMA_HEAD = "0009"  # the newest migration's revision (a test checks it against the scripts)

MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, *, echo: bool = False) -> sa.Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    url = normalize_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InputError(f"ORCH_DATABASE_URL: cannot parse {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, echo=echo, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, echo=echo, pool_pre_ping=True)


def is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(engine: sa.Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = None
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: sa.Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    """The database's schema revision (Alembic's version table), or None before `orch init`."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def init_schema(engine: sa.Engine) -> tuple[str | None, str | None]:
    """Create or upgrade the schema to the newest migration; return (before, after)."""
    from alembic import command

    before = current_revision(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, current_revision(engine)


def require_schema(engine: sa.Engine) -> None:
    """Refuse to work on a database whose schema is missing or not the newest."""
    current, head = current_revision(engine), SCHEMA_HEAD
    if current is None:
        raise SchemaNotInitialized("the database has no schema yet: run `orch init` first")
    if current != head:
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory.from_config(alembic_config(engine))
        known = {rev.revision for rev in scripts.walk_revisions()}
        if current not in known:
            raise SchemaNotInitialized(
                f"the database schema ({current}) is newer than this version of orch knows: "
                "upgrade orch"
            )
        raise SchemaNotInitialized(
            f"the database schema ({current}) is older than this version ({head}): "
            "run `orch init` to upgrade it"
        )


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
