"""`orch customers show ID`: what the engine knows of one customer, in one place.

Attributes as imported, the computed features of the latest segmentation refresh, the segment
history, the latest decisions with their outcomes, and the latest events. A CRM marketer asked
"why did this customer get that?" starts here, then goes to `orch explain`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import NotFound
from orchestrator.storage.db import require_schema
from orchestrator.storage.models import (
    Customer,
    CustomerFeatures,
    Decision,
    Event,
    Reward,
    SegmentHistory,
)

FEATURE_FIELDS = [
    name
    for name in CustomerFeatures.model_fields
    if name not in ("customer_id", "as_of", "updated_at")
]


def customer_profile(engine: sa.Engine, customer_id: str, *, limit: int = 10) -> dict[str, Any]:
    """The profile of ``customer_id`` (``limit`` latest decisions and events); NotFound if the
    customer table does not hold it, with the events seen for that id, if any."""
    require_schema(engine)
    with Session(engine) as s:
        customer = s.get(Customer, customer_id)
        if customer is None:
            n_events = s.exec(
                select(sa.func.count()).select_from(Event).where(Event.customer_id == customer_id)
            ).one()
            extra = f" ({n_events:,} events carry this id)" if n_events else ""
            raise NotFound(f"customer {customer_id!r} is not in the customer table{extra}")
        features = s.get(CustomerFeatures, customer_id)
        history = s.exec(
            select(SegmentHistory)
            .where(SegmentHistory.customer_id == customer_id)
            .order_by(col(SegmentHistory.kind), col(SegmentHistory.valid_from).desc())
        ).all()
        decisions = s.exec(
            select(Decision, Reward)
            .join(Reward, col(Reward.decision_id) == col(Decision.id), isouter=True)
            .where(Decision.customer_id == customer_id)
            .order_by(col(Decision.run_date).desc(), col(Decision.id).desc())
            .limit(limit)
        ).all()
        events = s.exec(
            select(Event)
            .where(Event.customer_id == customer_id)
            .order_by(col(Event.occurred_at).desc())
            .limit(limit)
        ).all()
        counts = s.exec(
            select(sa.func.count(), sa.func.coalesce(sa.func.sum(Event.amount), 0.0))
            .select_from(Event)
            .where(Event.customer_id == customer_id)
        ).one()
    return {
        "customer_id": customer.customer_id,
        "attributes": dict(sorted(customer.attributes.items())),
        "features_as_of": features.as_of.isoformat() if features else None,
        "features": {f: getattr(features, f) for f in FEATURE_FIELDS} if features else {},
        "segments": [
            {
                "kind": h.kind,
                "value": h.value,
                "from": h.valid_from.isoformat(),
                "to": h.valid_to.isoformat() if h.valid_to else None,
            }
            for h in history
        ],
        "decisions": [
            {
                "run_date": d.run_date.isoformat(),
                "campaign": d.campaign_id,
                "treatment": d.treatment_id,
                "channel": d.channel,
                "group": d.group,
                "reason": d.reason,
                "window_end": d.window_end.isoformat() if d.window_end else None,
                "value": r.value if r else None,
                "converted": r.converted if r else None,
            }
            for d, r in decisions
        ],
        "events": [
            {
                "occurred_at": e.occurred_at.isoformat(sep=" "),
                "type": e.type,
                "amount": e.amount,
                "discount": e.discount,
                "category": e.category,
                "channel": e.channel,
            }
            for e in events
        ],
        "events_total": int(counts[0]),
        "amount_total": float(counts[1]),
    }
