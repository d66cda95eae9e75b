"""`orch export`: the send list of a run date (test group only), with each treatment's payload.

A payload value that names a customer field in braces (``category: "{next_category}"``) carries
each customer's own value of it: a cross-sell template gets the category to show.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import sqlalchemy as sa

from orchestrator.errors import InputError
from orchestrator.plan import payload_fields
from orchestrator.storage.db import require_schema

FORMATS = ("csv", "jsonl", "parquet")


def export_send_list(
    engine: sa.Engine,
    *,
    day: date,
    out: str | Path,
    fmt: str | None = None,
    channel: str | None = None,
) -> int:
    """Write the sends of ``day`` to ``out``; return the number of rows.

    Columns: customer_id, campaign_id, campaign_name, treatment_id, channel, send_date,
    window_end, then one ``payload_<key>`` column per payload key (and ``payload`` as JSON).
    """
    require_schema(engine)
    path = Path(out)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    with engine.connect() as conn:
        status = conn.execute(
            sa.text("SELECT status FROM run WHERE run_date = :d"), {"d": day}
        ).scalar()
        if status is None:
            raise InputError(f"no run for {day}: run `orch run --date {day}` first")
        if status != "done":
            raise InputError(f"the run for {day} is {status}, not done: resume it first")
        payload = "t.payload::text" if conn.dialect.name == "postgresql" else "t.payload"
        params: dict[str, object] = {"d": day}
        where = ""
        if channel:
            where, params["ch"] = " AND d.channel = :ch", channel
        rows = conn.execute(
            sa.text(
                "SELECT d.customer_id, d.campaign_id, c.name, d.treatment_id, d.channel, "
                f"d.run_date, d.window_end, {payload} FROM decision d "
                "JOIN campaign c ON c.id = d.campaign_id "
                "JOIN treatment t ON t.campaign_id = d.campaign_id AND t.id = d.treatment_id "
                f"WHERE d.run_date = :d AND d.\"group\" = 'test'{where} "
                "ORDER BY d.customer_id"
            ),
            params,
        ).all()
        payloads = _personalized(
            conn, [r[0] for r in rows], [orjson.loads(r[7]) if r[7] else {} for r in rows]
        )
    keys = sorted({k for p in payloads for k in p})
    columns: dict[str, list[object]] = {
        "customer_id": [r[0] for r in rows],
        "campaign_id": [r[1] for r in rows],
        "campaign_name": [r[2] for r in rows],
        "treatment_id": [r[3] for r in rows],
        "channel": [r[4] for r in rows],
        "send_date": [str(r[5]) for r in rows],
        "window_end": [str(r[6]) if r[6] is not None else None for r in rows],
    }
    for key in keys:
        columns[f"payload_{key}"] = [_scalar(p.get(key)) for p in payloads]
    columns["payload"] = [orjson.dumps(p).decode() for p in payloads]
    table = pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pa_csv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        with path.open("wb") as fh:
            for row in table.to_pylist():
                fh.write(orjson.dumps(row) + b"\n")
    return len(rows)


def _personalized(
    conn: sa.Connection, customers: list[str], payloads: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Payload values that name a customer field (``"{next_category}"``) replaced by each
    customer's value of it now (null where the customer has none)."""
    refs = {name for p in payloads for name in payload_fields(p).values()}
    if not refs:
        return payloads
    from orchestrator.reports.data import customer_columns

    ids = pa.array(customers, pa.string())
    values = {
        name: col.to_pylist()
        for name, (col, _) in customer_columns(conn, ids, sorted(refs)).items()
    }
    out = []
    for i, payload in enumerate(payloads):
        fields = payload_fields(payload)
        out.append({k: values[fields[k]][i] if k in fields else v for k, v in payload.items()})
    return out


def _scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
