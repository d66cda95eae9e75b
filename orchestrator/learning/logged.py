"""Logged decisions with their rewards, contexts and eligible sets, as arrays per run date.

For each decision: the context the policy saw, the actions that were eligible, the action the
policy chose (its index in that date's action labels), the policy's own probability of it
(``propensity / split_share``), the logged propensity, the reward, and whether the customer is
in the evaluation holdout (a stable hash: never trained on, only evaluated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import sqlalchemy as sa

from orchestrator.engine.actions import (
    NO_SEND_FEATURES,
    NO_SEND_LABEL,
    hash_features,
    named_features,
)
from orchestrator.engine.hashing import customer_keys, label_key, uniform_draw
from orchestrator.storage.run_repo import load_contexts

HOLDOUT_LABEL = "__evaluation_holdout__"


@dataclass
class LoggedDay:
    """One run date: ``n`` matured decisions over that date's ``A`` actions."""

    run_date: date
    names: list[str]  # (d,) context names
    labels: list[str]  # (A,) action labels
    action_features: np.ndarray  # (A, k)
    customer_ids: list[str]  # (n,)
    contexts: np.ndarray  # (n, d)
    eligible: np.ndarray  # (n, A)
    action: np.ndarray  # (n,) chosen action index
    policy_prob: np.ndarray  # (n,) the policy's own probability of it
    propensity: np.ndarray  # (n,) logged: policy probability x split share
    reward: np.ndarray  # (n,)
    window_days: np.ndarray  # (n,) length of the decision's measurement window
    control: np.ndarray  # (n,) bool: control group (not contacted)
    by_policy: np.ndarray  # (n,) bool: chosen by the policy (not a manual priority)
    holdout: np.ndarray  # (n,) bool: evaluation holdout
    matured_at: np.ndarray  # (n,) datetime64[us]

    @property
    def n(self) -> int:
        return len(self.customer_ids)

    def subset(self, mask: np.ndarray) -> LoggedDay:
        idx = np.flatnonzero(mask)
        return LoggedDay(
            self.run_date,
            self.names,
            self.labels,
            self.action_features,
            [self.customer_ids[i] for i in idx.tolist()],
            self.contexts[idx],
            self.eligible[idx],
            self.action[idx],
            self.policy_prob[idx],
            self.propensity[idx],
            self.reward[idx],
            self.window_days[idx],
            self.control[idx],
            self.by_policy[idx],
            self.holdout[idx],
            self.matured_at[idx],
        )


def keep(days: Sequence[LoggedDay], mask_of: Callable[[LoggedDay], np.ndarray]) -> list[LoggedDay]:
    """Each day restricted to ``mask_of(day)``; days left empty are dropped."""
    return [sub for sub in (d.subset(mask_of(d)) for d in days) if sub.n]


def evaluation_days(days: Sequence[LoggedDay], *, latest: int | None = None) -> list[LoggedDay]:
    """The holdout's decisions that the policy chose (not manual priorities), optionally only
    the ``latest`` run dates among them: what off-policy estimates are computed on."""
    held = keep(days, lambda d: d.holdout & d.by_policy)
    if held and latest is not None:
        newest = max(d.run_date for d in held)
        held = [d for d in held if (newest - d.run_date).days < latest]
    return held


def in_holdout(customer_ids: Sequence[str], salt: str, fraction: float) -> np.ndarray:
    """``(n,)`` bool: customers whose outcomes are kept for evaluation only."""
    return uniform_draw(customer_keys(customer_ids, salt), label_key(HOLDOUT_LABEL)) < fraction


def action_feature_table(conn: sa.Connection) -> dict[str, np.ndarray]:
    """Hashed features of every action label ever defined (retired treatments included)."""
    rows = conn.execute(
        sa.text(
            "SELECT c.id, c.channel, t.id, t.features FROM treatment t "
            "JOIN campaign c ON c.id = t.campaign_id"
        )
    ).all()
    import orjson

    table = {NO_SEND_LABEL: hash_features(NO_SEND_FEATURES)}
    for cid, channel, tid, feats in rows:
        features = orjson.loads(feats) if isinstance(feats, str | bytes) else dict(feats or {})
        table[f"{cid}/{tid}"] = hash_features(named_features(cid, channel, features))
    return table


def latest_matured_run_date(engine: sa.Engine, *, until: date | None = None) -> date | None:
    """The newest run date (up to ``until``) with a matured decision, or None."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.text(
                "SELECT MAX(d.run_date) FROM decision d JOIN reward r ON r.decision_id = d.id"
                + (" WHERE d.run_date <= :until" if until is not None else "")
            ),
            {"until": until} if until is not None else {},
        ).scalar()
    if value is None:
        return None
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def load_logged(
    engine: sa.Engine,
    *,
    salt: str,
    holdout_fraction: float,
    since: date | None = None,
    until: date | None = None,
    matured_after: datetime | None = None,
) -> list[LoggedDay]:
    """Matured decisions (with logged contexts) in the period, grouped by run date."""
    # Only dates whose contexts were logged can be replayed (imported decisions have none).
    where = ["EXISTS (SELECT 1 FROM decision_context c WHERE c.run_date = d.run_date)"]
    params: dict[str, object] = {}
    if since is not None:
        where.append("d.run_date >= :since")
        params["since"] = since
    if until is not None:
        where.append("d.run_date <= :until")
        params["until"] = until
    if matured_after is not None:
        where.append("r.matured_at > :after")
        params["after"] = matured_after
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                'SELECT d.run_date, d.customer_id, d.campaign_id, d.treatment_id, d."group", '
                "d.propensity, d.split_share, d.reason, r.value, r.matured_at, d.window_end, "
                "r.window_days "
                "FROM decision d "
                "JOIN reward r ON r.decision_id = d.id WHERE "
                + " AND ".join(where)
                + " ORDER BY d.run_date, d.customer_id"
            ),
            params,
        ).all()
        if not rows:
            return []
        by_day: dict[date, list[sa.Row]] = {}
        for row in rows:
            day = row[0] if isinstance(row[0], date) else date.fromisoformat(str(row[0]))
            by_day.setdefault(day, []).append(row)
        logged = load_contexts(conn, list(by_day))
        features = action_feature_table(conn)
    out = []
    for day, day_rows in by_day.items():
        ctx = logged.get(day)
        if ctx is None:
            continue  # decisions without logged contexts (imported, or older) cannot be replayed
        label_index = {label: i for i, label in enumerate(ctx.actions)}
        keep = []
        for r in day_rows:
            label = f"{r[2]}/{r[3]}" if r[2] is not None else NO_SEND_LABEL
            if r[1] in ctx.row_of and label in label_index:
                keep.append((r, ctx.row_of[r[1]], label_index[label]))
        if not keep:
            continue
        ids = [k[0][1] for k in keep]
        rows_idx = np.array([k[1] for k in keep], dtype=np.int64)
        dim = len(next(iter(features.values())))
        out.append(
            LoggedDay(
                run_date=day,
                names=list(ctx.names),
                labels=list(ctx.actions),
                action_features=np.stack(
                    [features.get(label, np.zeros(dim)) for label in ctx.actions]
                ),
                customer_ids=ids,
                contexts=ctx.matrix[rows_idx],
                eligible=ctx.eligible[rows_idx],
                action=np.array([k[2] for k in keep], dtype=np.int64),
                policy_prob=np.array([k[0][5] / k[0][6] for k in keep]),
                propensity=np.array([k[0][5] for k in keep]),
                reward=np.array([k[0][8] for k in keep], dtype=np.float64),
                window_days=np.array(
                    [
                        k[0][11]
                        if k[0][11] is not None
                        else (date.fromisoformat(str(k[0][10])[:10]) - day).days
                        for k in keep
                    ],
                    dtype=np.float64,
                ),
                control=np.array([k[0][4] == "control" for k in keep]),
                by_policy=np.array([k[0][7] == "policy" for k in keep]),
                holdout=in_holdout(ids, salt, holdout_fraction),
                matured_at=np.array([str(k[0][9]) for k in keep], dtype="datetime64[us]"),
            )
        )
    return out
