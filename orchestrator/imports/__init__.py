"""Data imports: customers and events from CSV (also gzipped), Parquet or JSON-lines files.

Files are read with Arrow and checked column by column (vectorized); rows are written in bulk
(COPY on PostgreSQL, executemany on SQLite) inside one transaction. Bad input raises
:class:`~orchestrator.errors.ImportFileError` naming the file, line and field, with nothing
written; with ``skip_invalid=True`` the bad rows go to a reject file instead.
"""

from __future__ import annotations

from orchestrator.imports.customers import import_customers
from orchestrator.imports.events import import_events
from orchestrator.imports.report import ImportReport, Progress

__all__ = ["ImportReport", "Progress", "import_customers", "import_events"]
