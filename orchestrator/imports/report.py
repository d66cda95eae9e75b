"""What an import did, for the CLI to print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[int, int | None], None]
"""``progress(rows_done, total_or_None)``, called as chunks are written."""


@dataclass
class ImportReport:
    """Counts of one import.

    ``rows_read == inserted + updated + unchanged_or_duplicate + rejected``.
    """

    path: str
    rows_read: int
    inserted: int
    updated: int
    unchanged_or_duplicate: int
    rejected: int
    rejects_path: str | None
    seconds: float
    new_attributes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said, not refused: one line each
    unknown_customer_events: int = 0  # new events of customers not in the customer table
