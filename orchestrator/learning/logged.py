"""Logged decisions with their rewards, contexts and eligible sets, as arrays per run date.

For each decision: the context the policy saw, the actions that were eligible, the action the
policy chose (its index in that date's action labels), the policy's own probability of it
(``propensity / split_share``), the logged propensity, the reward, and whether the customer is
in the evaluation holdout (a stable hash: never trained on, only evaluated).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

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
    dates: Sequence[date] | None = None,
) -> list[LoggedDay]:
    """Matured decisions (with logged contexts) in the period (or on ``dates``), grouped by
    run date."""
    # Only dates whose contexts were logged can be replayed (imported decisions have none).
    where = ["EXISTS (SELECT 1 FROM decision_context c WHERE c.run_date = d.run_date)"]
    params: dict[str, object] = {}
    binds: list[sa.BindParameter[Any]] = []
    if dates is not None:
        where.append("d.run_date IN :dates")
        params["dates"] = list(dates)
        binds.append(sa.bindparam("dates", expanding=True))
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
            ).bindparams(*binds),
            params,
        ).all()
        if not rows:
            return []
        # Rows come ordered by run date: one slice per date, columns transposed once (the
        # per-row work was most of a learning step's load at 20k customers x 28 days).
        by_day: dict[date, list[sa.Row]] = {}
        for key, group in itertools.groupby(rows, key=lambda row: row[0]):
            day = key if isinstance(key, date) else date.fromisoformat(str(key))
            by_day.setdefault(day, []).extend(group)
        logged = load_contexts(conn, list(by_day))
        features = action_feature_table(conn)
    holdout_of: dict[str, bool] = {}  # a customer recurs on many dates: hash each once
    out = []
    for day, day_rows in by_day.items():
        ctx = logged.get(day)
        if ctx is None:
            continue  # decisions without logged contexts (imported, or older) cannot be replayed
        label_index = {label: i for i, label in enumerate(ctx.actions)}
        cols: list[Sequence[Any]] = list(zip(*day_rows, strict=True))
        customer, campaign, treatment = cols[1], cols[2], cols[3]
        row_of = ctx.row_of
        index = [
            label_index.get(f"{c}/{t}" if c is not None else NO_SEND_LABEL, -1)
            for c, t in zip(campaign, treatment, strict=True)
        ]
        found = [
            i
            for i, (cid, a) in enumerate(zip(customer, index, strict=True))
            if a >= 0 and cid in row_of
        ]
        if not found:
            continue
        if len(found) < len(day_rows):
            cols = [[col[i] for i in found] for col in cols]
            index = [index[i] for i in found]
        ids = list(cols[1])
        fresh = [cid for cid in dict.fromkeys(ids) if cid not in holdout_of]
        if fresh:
            holdout_of.update(
                zip(fresh, in_holdout(fresh, salt, holdout_fraction).tolist(), strict=True)
            )
        propensity = np.array(cols[5], dtype=np.float64)
        rows_idx = np.array([row_of[cid] for cid in ids], dtype=np.int64)
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
                action=np.array(index, dtype=np.int64),
                policy_prob=propensity / np.array(cols[6], dtype=np.float64),
                propensity=propensity,
                reward=np.array(cols[8], dtype=np.float64),
                window_days=np.array(
                    [
                        w if w is not None else (date.fromisoformat(str(end)[:10]) - day).days
                        for w, end in zip(cols[11], cols[10], strict=True)
                    ],
                    dtype=np.float64,
                ),
                control=np.array([g == "control" for g in cols[4]]),
                by_policy=np.array([r == "policy" for r in cols[7]]),
                holdout=np.array([holdout_of[cid] for cid in ids], dtype=bool),
                matured_at=np.array([str(m) for m in cols[9]], dtype="datetime64[us]"),
            )
        )
    return out
