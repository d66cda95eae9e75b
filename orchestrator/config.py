"""Settings read once at start-up from ``ORCH_*`` environment variables."""

from __future__ import annotations

import getpass
import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "unknown")


class Settings(BaseSettings):
    """Engine settings; every field can be set as ``ORCH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///orch.db",
        description="SQLAlchemy URL of the system of record (SQLite file or PostgreSQL).",
    )
    actor: str = Field(
        default_factory=_default_actor,
        description="Name recorded in the audit log for admin changes.",
    )
    batch_size: int = Field(
        default=50_000, ge=1, description="Customers per batch in the daily run."
    )
    import_chunk_rows: int = Field(
        default=100_000, ge=1, description="Rows per write chunk when importing files."
    )
    echo_sql: bool = Field(default=False, description="Log every SQL statement (debugging).")


def get_settings() -> Settings:
    """Read the settings from the environment (not cached: tests change the environment)."""
    return Settings()
