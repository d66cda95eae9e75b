"""The fitted segmentation model, kept between refreshes in ``plan_setting`` (key
``segments_model``) so `orch segments model` can show it without refitting.

The stored value is JSON: ``version``, ``as_of``, the ``config`` used, customer counts, and the
model report of :func:`orchestrator.segments.value.model_report`. A version newer than this code
knows is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa

from orchestrator.errors import NotFound, StateVersionError
from orchestrator.storage.models import PlanSetting

MODEL_KEY = "segments_model"
MODEL_VERSION = 1


def load_model(conn: sa.Connection) -> dict[str, Any] | None:
    """The model stored by the last refresh, or None before the first one."""
    table = PlanSetting.__table__  # type: ignore[attr-defined]
    value = conn.execute(sa.select(table.c.value).where(table.c.key == MODEL_KEY)).scalar()
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StateVersionError(f"plan_setting {MODEL_KEY!r} is not a segmentation model")
    version = int(value.get("version", 0))
    if version > MODEL_VERSION:
        raise StateVersionError(
            f"the stored segmentation model has version {version}, newer than this orch "
            f"understands ({MODEL_VERSION}): upgrade orch"
        )
    return value


def require_model(conn: sa.Connection) -> dict[str, Any]:
    model = load_model(conn)
    if model is None:
        raise NotFound("no segmentation yet: run `orch segments refresh` first")
    return model


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSONB refuses NaN and infinities)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def store_model(conn: sa.Connection, value: dict[str, Any]) -> None:
    value = json_safe(value)
    table = PlanSetting.__table__  # type: ignore[attr-defined]
    exists = conn.execute(sa.select(table.c.key).where(table.c.key == MODEL_KEY)).first()
    if exists:
        conn.execute(table.update().where(table.c.key == MODEL_KEY).values(value=value))
    else:
        conn.execute(table.insert().values(key=MODEL_KEY, value=value))
