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
    batch_reader: bool = Field(
        default=True,
        description="The daily run reads its batches as Arrow columns in a child process, one "
        "batch ahead (about 190 MB; up to one more core per run or Dask worker); false reads "
        "them row by row in the run's own process.",
    )
    import_chunk_rows: int = Field(
        default=100_000, ge=1, description="Rows per write chunk when importing files."
    )
    echo_sql: bool = Field(default=False, description="Log every SQL statement (debugging).")
    stale_after_seconds: float = Field(
        default=60.0,
        ge=15,
        description="A running run (or partition) whose heartbeat is older than this is taken "
        "as dead, and another process may resume it. Runs beat every 10 s.",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Daemon leader lease: a standby takes over at most this long (plus a third "
        "of it) after the leader stops renewing it.",
    )
    retry_base_seconds: float = Field(
        default=60.0, gt=0, description="Daemon: first wait before retrying a failed day."
    )
    retry_max_seconds: float = Field(
        default=1800.0, gt=0, description="Daemon: longest wait between two retries."
    )
    retry_attempts: int = Field(
        default=8, ge=0, description="Daemon: retries of a failed day before the next day."
    )
    drop_folder: str | None = Field(
        default=None,
        description="Daemon: folder watched for customers*/events* files (csv, parquet, jsonl); "
        "each is imported before the run, then moved to imported/ (or rejected/ with the error).",
    )
    export_folder: str | None = Field(
        default=None,
        description="Daemon: the day's send lists are written here, one folder per channel.",
    )
    report_folder: str | None = Field(
        default=None, description="Daemon: the HTML uplift report is written here every day."
    )
    log_format: str = Field(
        default="text", pattern="^(text|json)$", description="Logs as text or JSON lines."
    )


def get_settings() -> Settings:
    """Read the settings from the environment (not cached: tests change the environment)."""
    return Settings()
