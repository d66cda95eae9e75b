"""Helpers for the import tests: write input files, read back what was stored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from orchestrator.storage.models import metadata


@dataclass
class Files:
    """Writes input files into a test's temporary directory."""

    root: Path

    def text(self, name: str, content: str) -> Path:
        path = self.root / name
        path.write_text(content, encoding="utf-8")
        return path

    def raw(self, name: str, content: bytes) -> Path:
        path = self.root / name
        path.write_bytes(content)
        return path

    def parquet(self, name: str, table: pa.Table) -> Path:
        path = self.root / name
        pq.write_table(table, path)
        return path


@dataclass
class Stored:
    """Reads back the rows the imports wrote."""

    engine: sa.Engine

    def _rows(self, table: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(metadata.tables[table]))]

    def customers(self) -> dict[str, dict[str, Any]]:
        return {r["customer_id"]: r["attributes"] for r in self._rows("customer")}

    def customer_rows(self) -> dict[str, dict[str, Any]]:
        return {r["customer_id"]: r for r in self._rows("customer")}

    def registry(self) -> dict[str, tuple[str, str]]:
        return {r["name"]: (r["dtype"], r["origin"]) for r in self._rows("customer_attribute")}

    def events(self) -> list[dict[str, Any]]:
        rows = self._rows("event")
        for row in rows:
            del row["id"], row["imported_at"]
        return sorted(rows, key=lambda r: (r["customer_id"], r["occurred_at"], r["type"]))

    def keys(self) -> set[str]:
        return {r["source_event_id"] for r in self._rows("event")}


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def stored(engine: sa.Engine) -> Stored:
    return Stored(engine)
