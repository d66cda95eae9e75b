"""`orch logs import`: learn from another system's logged decisions before sending anything.

The file holds one logged decision a row: ``action`` (``campaign/treatment`` as in the plan, or
empty / ``(send nothing)``), ``propensity`` (the logging system's probability of that action,
in (0, 1]), ``reward`` (value in money), optional ``customer_id``, and any number of context
columns (numbers or booleans) named like the engine's context features (``monetary``,
``p_alive``, ``lifecycle_stage=active``...). A stable 20% of rows (by customer, or by row) is
held out; a candidate of the plan's policy (or ``--policy``) is trained on the rest and both it
and the logging policy are estimated off-policy on the holdout. The candidate is stored as a
policy version: promote it when the estimate convinces you.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import sqlalchemy as sa

from orchestrator.engine.actions import NO_SEND_LABEL
from orchestrator.errors import ImportFileError
from orchestrator.imports.common import column, require_columns
from orchestrator.imports.convert import to_number, to_text
from orchestrator.imports.problems import Problems
from orchestrator.imports.source import read_source
from orchestrator.learning import versions
from orchestrator.learning.evaluate import evaluate_days
from orchestrator.learning.learn import train
from orchestrator.learning.logged import LoggedDay, action_feature_table, in_holdout
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.plan_repo import read_plan

RESERVED = ("action", "propensity", "reward", "customer_id", "group")


@dataclass
class WarmStartReport:
    path: str
    rows: int
    trained_on: int
    held_out: int
    policy: str
    version_id: int | None
    context_features: list[str]
    estimates: dict[str, Any] = field(default_factory=dict)


def import_logs(
    engine: sa.Engine,
    path: str | Path,
    *,
    actor: str,
    kind: str | None = None,
    fmt: str | None = None,
) -> WarmStartReport:
    """Read, check, train and evaluate; nothing is written unless the whole file is valid."""
    require_schema(engine)
    source = read_source(path, fmt)
    require_columns(source, ["action", "propensity", "reward"])
    n = source.table.num_rows
    if n == 0:
        raise ImportFileError(f"{source.label}: no rows")
    with engine.connect() as conn:
        features = action_feature_table(conn)
    with session_scope(engine) as session:
        plan = read_plan(session)
    problems = Problems(source)

    action_text = to_text(column(source, "action"))
    labels = [
        (v if v else NO_SEND_LABEL)
        for v in pc.fill_null(pc.utf8_trim_whitespace(action_text), "").to_pylist()
    ]
    unknown = np.array([lb not in features for lb in labels])
    problems.add(
        "action",
        unknown,
        lambda row: f"{labels[row]!r} is not a campaign/treatment of the plan",
    )
    prop = to_number(column(source, "propensity"))
    problems.add_converted("propensity", prop)
    p = np.asarray(prop.values.to_numpy(zero_copy_only=False), dtype=np.float64)
    problems.add("propensity", prop.empty, lambda row: "is empty")
    out_of_range = ~prop.bad & ~prop.empty & ~((p > 0) & (p <= 1))
    problems.add("propensity", out_of_range, lambda row: f"{p[row]} is not in (0, 1]")
    rew = to_number(column(source, "reward"))
    problems.add_converted("reward", rew)
    problems.add("reward", rew.empty, lambda row: "is empty")
    reward = np.asarray(rew.values.to_numpy(zero_copy_only=False), dtype=np.float64)

    names = [c for c in source.table.column_names if c not in RESERVED]
    contexts = np.zeros((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        conv = to_number(column(source, name))
        if conv.bad.any():
            from orchestrator.imports.convert import to_bool

            as_bool = to_bool(column(source, name))
            if not as_bool.bad.any():
                conv = as_bool
        problems.add_converted(name, conv)
        values = conv.values.to_numpy(zero_copy_only=False)
        contexts[:, j] = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    problems.raise_first()

    action_labels = sorted(set(labels))
    index = {lb: i for i, lb in enumerate(action_labels)}
    ids = (
        [str(v) for v in to_text(column(source, "customer_id")).to_pylist()]
        if "customer_id" in source.table.column_names
        else [f"row{i}" for i in range(n)]
    )
    holdout = in_holdout(ids, plan.settings.salt, plan.settings.policy.evaluation_holdout)
    day = LoggedDay(
        run_date=date.today(),
        names=names,
        labels=action_labels,
        action_features=np.stack([features[lb] for lb in action_labels]),
        customer_ids=ids,
        contexts=contexts,
        eligible=np.ones((n, len(action_labels)), dtype=bool),
        action=np.array([index[lb] for lb in labels], dtype=np.int64),
        policy_prob=p,
        propensity=p,
        reward=reward,
        window_days=np.zeros(n),  # imported rewards are taken as given: no baseline to remove
        control=np.zeros(n, dtype=bool),
        by_policy=np.ones(n, dtype=bool),
        holdout=holdout,
        matured_at=np.zeros(n, dtype="datetime64[us]"),
    )
    kind = kind or plan.settings.policy.name
    params = dict(plan.settings.policy.params if kind == plan.settings.policy.name else {})
    params["context_names"] = names
    policy = versions.instantiate(kind, params, None)
    trained = train(policy, [day.subset(~holdout)], names)
    report = WarmStartReport(str(path), n, trained, int(holdout.sum()), kind, None, names)
    if holdout.any():
        results = evaluate_days([day.subset(holdout)], {"candidate": policy}, {"candidate": names})
        report.estimates = {k: {e: r.__dict__ for e, r in v.items()} for k, v in results.items()}
    with session_scope(engine) as session:
        version = versions.save(
            session,
            kind=kind,
            policy=policy,
            params=params,
            status="candidate",
            parent=None,
            n_new=trained,
            trained_until=None,
            ope=report.estimates or None,
        )
        report.version_id = version.id
        from orchestrator.storage.plan_repo import add_audit

        add_audit(
            session,
            actor=actor,
            action="policy.warm_start",
            target=str(path),
            before=None,
            after={"version": version.id, "rows": n, "kind": kind},
        )
    return report
