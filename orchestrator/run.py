"""The daily run: decide for every customer, batch by batch, and log each decision.

A run is keyed by its date. Each batch is written in one transaction together with the run's
resume point, so a run that died resumes after its last committed batch, with no customer decided
twice and none skipped. Rerunning a finished date changes nothing unless forced.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.engine.actions import ActionSet, build_actions
from orchestrator.engine.columns import (
    build_columns,
    context_fields,
    context_matrix,
    context_names,
)
from orchestrator.engine.decide import (
    GROUPS,
    REASONS,
    STAGES,
    BatchDecisions,
    BatchInput,
    RunSetup,
    decide_batch,
)
from orchestrator.engine.hashing import customer_keys
from orchestrator.engine.history import (
    contact_feature_names,
    contact_features,
    is_contact,
    lookback_days,
)
from orchestrator.errors import InputError, PlanError, RuleError, RunInProgress
from orchestrator.features import rule_schema
from orchestrator.learning import versions
from orchestrator.learning.logged import align
from orchestrator.plan import Plan, check_plan
from orchestrator.rules import Rule
from orchestrator.storage.db import require_schema, session_scope
from orchestrator.storage.models import (
    Decision,
    DecisionContext,
    PolicyVersion,
    Reward,
    Run,
    utcnow,
)
from orchestrator.storage.plan_repo import attribute_types, read_plan
from orchestrator.storage.run_repo import (
    count_customers,
    insert_context,
    insert_decisions,
    load_customers,
    load_history,
)
from policies import POLICIES, Policy
from policies.cold_start import ColdStart

STALE_AFTER = timedelta(minutes=15)
Progress = Callable[[int, int | None], None]


@dataclass
class RunReport:
    run_date: date
    status: str  # done | already_done | dry_run
    customers: int = 0
    decided: int = 0
    batches: int = 0
    resumed_after_batches: int = 0
    seconds: float = 0.0
    policy_name: str = ""
    counts: dict[str, Any] = field(default_factory=dict)


# --- setup shared by the run, the dry run and explain ----------------------------------------


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    setup: RunSetup
    schema: dict[str, str]
    needed: frozenset[str]
    context_names: tuple[str, ...]  # what is built and logged
    policy_version_id: int | None
    max_window: int
    policy_names: tuple[str, ...] | None = None  # what the acting policy was trained on
    apprentice: Policy | None = None
    apprentice_names: tuple[str, ...] | None = None


def prepare(session: Session, day: date) -> Prepared:
    """Load the plan and policy for ``day`` and compile the live campaigns' rules."""
    plan = read_plan(session)
    attributes = {**attribute_types(session), **plan.attributes}
    try:
        check_plan(
            plan, known_attributes=attribute_types(session, origin="import"), policy_names=POLICIES
        )
    except PlanError as exc:
        raise PlanError(f"the stored plan is no longer valid: {exc}") from None
    schema = rule_schema(attributes)
    actions = build_actions(plan, day)
    rules = []
    for camp in actions.campaigns:
        try:
            rules.append(Rule.compile(camp.target, schema))
        except RuleError as exc:
            raise PlanError(f"campaign {camp.id!r} target: {exc}") from None
    # Contexts are built and logged whatever the policy: learners replay them later. The
    # customer's recent contacts are part of them, so a policy can learn that one more message
    # hurts.
    channels = sorted({c.channel for c in plan.campaigns})
    names = context_names(schema) + contact_feature_names(channels)
    policy, version_id, policy_names = _load_policy(session, plan, names, actions)
    apprentice, apprentice_names = _load_apprentice(session, plan, names)
    needed = frozenset().union(
        *(r.fields for r in rules), context_fields([n for n in names if not is_contact(n)])
    )
    setup = RunSetup(
        day=day,
        actions=actions,
        rules=rules,
        caps=tuple(plan.caps),
        exclusions=tuple(plan.exclusions),
        global_control_fraction=plan.settings.global_control_fraction,
        policy=policy,
    )
    max_window = max((c.measurement_days for c in plan.campaigns), default=1)
    return Prepared(
        plan,
        setup,
        schema,
        needed,
        names,
        version_id,
        max_window,
        policy_names,
        apprentice,
        apprentice_names,
    )


def _load_policy(
    session: Session, plan: Plan, names: tuple[str, ...], actions: ActionSet
) -> tuple[Policy, int | None, tuple[str, ...] | None]:
    """The active version of the plan's policy; when none is active, a learning policy's cold
    start (``policies.cold_start``), or the policy untrained."""
    spec = plan.settings.policy
    version = session.exec(
        select(PolicyVersion)
        .where(col(PolicyVersion.kind) == spec.name, col(PolicyVersion.status) == "active")
        .order_by(col(PolicyVersion.id).desc())
    ).first()
    if version is not None:
        trained = version.params.get("context_names")
        policy = versions.instantiate(version.kind, version.params, version.state)
        return policy, version.id, tuple(trained) if trained else None
    try:
        policy = versions.instantiate(
            spec.name, {**spec.params, "context_names": list(names)}, None
        )
    except InputError as exc:
        raise PlanError(f"settings.policy: {exc}") from None
    if policy.learns and spec.cold_start_explore < 1.0 and actions.no_send is not None:
        policy = ColdStart(
            explore=spec.cold_start_explore, no_send=actions.features[actions.no_send]
        )
    return policy, None, None


def _load_apprentice(
    session: Session, plan: Plan, names: tuple[str, ...]
) -> tuple[Policy | None, tuple[str, ...] | None]:
    kind = plan.settings.policy.apprentice
    if kind is None:
        return None, None
    version = versions.latest(session, kind, ("apprentice",))
    if version is None:
        return versions.instantiate(kind, {"context_names": list(names)}, None), None
    trained = version.params.get("context_names")
    return versions.instantiate(kind, version.params, version.state), (
        tuple(trained) if trained else None
    )


def default_seed(salt: str, day: date) -> int:
    digest = hashlib.blake2b(f"{salt}:{day.isoformat()}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def decide_raw(
    prepared: Prepared, raw: Any, history: Any, rng: np.random.Generator, *, explain: bool = False
) -> BatchDecisions:
    """Decide for a loaded batch (shared by the run and `orch explain`)."""
    setup = prepared.setup
    columns = build_columns(
        raw.attributes, raw.features, prepared.schema, prepared.needed, setup.day
    )
    names = prepared.context_names
    own = [j for j, name in enumerate(names) if not is_contact(name)]
    contexts = np.empty((len(raw), len(names)), dtype=np.float32)
    contexts[:, own] = context_matrix(columns, [names[j] for j in own], len(raw))
    contact = [j for j, name in enumerate(names) if is_contact(name)]
    contexts[:, contact] = contact_features(history, len(raw), [names[j] for j in contact])
    keys = customer_keys(raw.ids, prepared.plan.settings.salt)
    view = contexts
    if prepared.policy_names is not None:
        view = align(contexts, prepared.context_names, prepared.policy_names)
    dec = decide_batch(setup, BatchInput(keys, columns, view, history), rng, explain=explain)
    dec.contexts = contexts  # log everything that was built, whatever the policy used
    return dec


def apprentice_agreement(prepared: Prepared, dec: BatchDecisions) -> dict[str, list[int]]:
    """How often the apprentice's favourite eligible action equals the decision, by reason."""
    app = prepared.apprentice
    rows = np.flatnonzero(dec.decided)
    if app is None or not len(rows):
        return {}
    view = dec.contexts[rows]
    if prepared.apprentice_names is not None:
        view = align(view, prepared.context_names, prepared.apprentice_names)
    dist = app.action_dist(view, prepared.setup.actions.features, dec.eligible[rows])
    agree = dist.argmax(axis=1) == dec.action[rows]
    out: dict[str, list[int]] = {}
    for code, name in REASONS.items():
        mask = dec.reason[rows] == code
        if mask.any():
            out[name] = [int(agree[mask].sum()), int(mask.sum())]
    return out


def load_batch_history(conn: sa.Connection, prepared: Prepared, ids: list[str]) -> Any:
    plan, setup = prepared.plan, prepared.setup
    return load_history(
        conn,
        ids,
        day=setup.day,
        lookback_days=lookback_days(
            setup.actions, setup.caps, setup.exclusions, prepared.max_window
        ),
        campaign_vocab=[c.id for c in plan.campaigns],
        channel_vocab=sorted({c.channel for c in plan.campaigns}),
        measured={c.id: c.measured for c in plan.campaigns},
    )


# --- the run -------------------------------------------------------------------------------


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(run: Run, now: datetime) -> bool:
    host, _, pid = run.owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return now - run.heartbeat_at < STALE_AFTER


def _acquire(
    engine: sa.Engine, day: date, *, force: bool, seed: int | None, salt: str
) -> tuple[Run | None, bool]:
    """Claim the run row for ``day``; return (run, resumed), or (None, False) if already done."""
    now = utcnow()
    try:
        with session_scope(engine) as session:
            if session.get_bind().dialect.name == "postgresql":
                session.exec(sa.text("SELECT pg_advisory_xact_lock(4242002)"))  # type: ignore[call-overload]
            runs = list(session.exec(select(Run).order_by(col(Run.run_date))))
            for other in runs:
                if other.status == "running" and _alive(other, now):
                    raise RunInProgress(
                        f"a run for {other.run_date} is in progress (owner {other.owner}, "
                        f"last heartbeat {other.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); "
                        "wait for it to finish"
                    )
            unfinished = [r for r in runs if r.status != "done" and r.run_date != day]
            if unfinished and not force:
                raise InputError(
                    f"the run for {unfinished[0].run_date} did not finish: resume it with "
                    f"`orch run --date {unfinished[0].run_date}` (or --force to run {day} anyway)"
                )
            later = [r for r in runs if r.status == "done" and r.run_date > day]
            if later and not force:
                raise InputError(
                    f"a run for {later[-1].run_date} is already done and runs go forward in time; "
                    f"use --force to run {day} anyway"
                )
            run = next((r for r in runs if r.run_date == day), None)
            if run is not None and run.status == "done" and not force:
                return None, False
            resumed = run is not None and run.status != "done" and not force
            if run is not None and not resumed:
                _clear_decisions(session, day)
                session.delete(run)
                session.flush()
                run = None
            if run is None:
                run = Run(
                    run_date=day,
                    status="running",
                    owner=_owner(),
                    seed=seed if seed is not None else default_seed(salt, day),
                    forced=force,
                    started_at=now,
                    heartbeat_at=now,
                )
            else:
                run.status, run.owner, run.heartbeat_at, run.error = "running", _owner(), now, None
            session.add(run)
            session.flush()
            return run, resumed
    except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
        if "locked" in str(exc) or isinstance(exc, sa.exc.IntegrityError):
            raise RunInProgress("another run is starting on this database; try again") from None
        raise


def _clear_decisions(session: Session, day: date) -> None:
    matured = session.exec(
        select(sa.func.count())
        .select_from(Reward)
        .join(Decision, col(Decision.id) == col(Reward.decision_id))
        .where(col(Decision.run_date) == day)
    ).one()
    if matured:
        raise InputError(
            f"decisions of {day} already have {matured} matured rewards; a forced rerun would "
            "lose them"
        )
    session.exec(sa.delete(Decision).where(col(Decision.run_date) == day))
    session.exec(sa.delete(DecisionContext).where(col(DecisionContext.run_date) == day))


def run_daily(
    engine: sa.Engine,
    *,
    day: date,
    dry_run: bool = False,
    force: bool = False,
    seed: int | None = None,
    batch_size: int = 50_000,
    progress: Progress | None = None,
) -> RunReport:
    """Decide for every customer on ``day``; see the module docstring."""
    require_schema(engine)
    started = time.perf_counter()
    with session_scope(engine) as session:
        prepared = prepare(session, day)
    settings = prepared.plan.settings
    if dry_run:
        run = Run(run_date=day, status="dry_run", seed=seed or default_seed(settings.salt, day))
        resumed = False
    else:
        claimed, resumed = _acquire(engine, day, force=force, seed=seed, salt=settings.salt)
        if claimed is None:
            with session_scope(engine) as session:
                done = session.exec(select(Run).where(col(Run.run_date) == day)).one()
            return RunReport(
                day,
                "already_done",
                counts=done.counts,
                policy_name=done.policy_name,
                batches=done.batches_done,
            )
        run = claimed
    report = RunReport(
        day,
        "dry_run" if dry_run else "done",
        resumed_after_batches=run.batches_done if resumed else 0,
        policy_name=settings.policy.name,
    )
    counts = _Counts.from_json(run.counts if resumed else {})
    try:
        _loop(
            engine,
            prepared,
            run,
            counts,
            report,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        )
    except BaseException as exc:
        if not dry_run:
            _mark_failed(engine, day, exc)
        raise
    report.counts = counts.to_json()
    report.customers = counts.customers
    report.decided = counts.decided
    report.seconds = time.perf_counter() - started
    return report


def _loop(
    engine: sa.Engine,
    prepared: Prepared,
    run: Run,
    counts: _Counts,
    report: RunReport,
    *,
    dry_run: bool,
    batch_size: int,
    progress: Progress | None,
) -> None:
    setup = prepared.setup
    acts = setup.actions
    with engine.connect() as reader:
        total = count_customers(reader)
        reader.rollback()
    after, batch_no = run.last_customer_id, run.batches_done
    done = counts.customers
    if progress:
        progress(done, total)
    while True:
        with engine.connect() as reader:
            raw = load_customers(reader, after=after, limit=batch_size)
            if not raw.ids:
                break
            history = load_batch_history(reader, prepared, raw.ids)
            reader.rollback()
        rng = np.random.default_rng([run.seed, batch_no])
        dec = decide_raw(prepared, raw, history, rng)
        counts.add(dec, acts)
        counts.add_apprentice(apprentice_agreement(prepared, dec))
        decided = np.flatnonzero(dec.decided)
        rows = _decision_rows(
            dec, raw.ids, acts, setup.day, batch_no, report.policy_name, prepared.policy_version_id
        )
        after, batch_no = raw.ids[-1], batch_no + 1
        if not dry_run:
            with engine.begin() as conn:
                insert_decisions(conn, rows)
                if len(decided):
                    insert_context(
                        conn,
                        run_date=setup.day,
                        batch=batch_no - 1,
                        names=prepared.context_names,
                        customer_ids=[raw.ids[i] for i in decided.tolist()],
                        matrix=dec.contexts[decided],
                        actions=acts.labels,
                        eligible=dec.eligible[decided],
                    )
                conn.execute(
                    sa.update(Run)
                    .where(col(Run.run_date) == setup.day)
                    .values(
                        batches_done=batch_no,
                        last_customer_id=after,
                        heartbeat_at=utcnow(),
                        counts=counts.to_json(),
                        policy_name=report.policy_name,
                        policy_version_id=prepared.policy_version_id,
                    )
                )
        report.batches += 1
        done += len(raw.ids)
        if progress:
            progress(done, max(total, done))
    if not dry_run:
        with engine.begin() as conn:
            conn.execute(
                sa.update(Run)
                .where(col(Run.run_date) == setup.day)
                .values(
                    status="done",
                    finished_at=utcnow(),
                    counts=counts.to_json(),
                    policy_name=report.policy_name,
                )
            )


def _mark_failed(engine: sa.Engine, day: date, exc: BaseException) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.update(Run)
                .where(col(Run.run_date) == day, col(Run.status) == "running")
                .values(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            )
    except Exception:  # the original error matters more than this bookkeeping
        pass


def _decision_rows(
    dec: BatchDecisions,
    ids: list[str],
    acts: ActionSet,
    day: date,
    batch_no: int,
    policy_name: str,
    policy_version_id: int | None,
) -> list[tuple[Any, ...]]:
    """Decision rows in ``DECISION_COLUMNS`` order for the decided customers of a batch."""
    rows = dec.decided.nonzero()[0]
    run_date = day.isoformat()
    camp_ids = [c.id for c in acts.campaigns] + [None]  # index -1: send nothing
    channels = [c.channel for c in acts.campaigns] + [None]
    # Window ends by distinct length, computed once.
    ends = {
        int(d): (day + timedelta(days=int(d))).isoformat()
        for d in set(dec.window_days[rows].tolist())
    }
    return [
        (
            run_date,
            ids[i],
            camp_ids[c],
            acts.treatment_ids[a],
            channels[c],
            GROUPS[g],
            p,
            s,
            REASONS[r],
            policy_name,
            policy_version_id,
            ends[w],
            batch_no,
        )
        for i, a, c, g, p, s, r, w in zip(
            rows.tolist(),
            dec.action[rows].tolist(),
            dec.campaign[rows].tolist(),
            dec.group[rows].tolist(),
            dec.propensity[rows].tolist(),
            dec.split_share[rows].tolist(),
            dec.reason[rows].tolist(),
            dec.window_days[rows].tolist(),
            strict=True,
        )
    ]


# --- counts for the summary ------------------------------------------------------------------


@dataclass
class _Counts:
    customers: int = 0
    targeted: int = 0
    decided: int = 0
    global_control: int = 0
    by_action: Counter[str] = field(default_factory=Counter)  # "campaign|treatment|reason|group"
    suppressed: Counter[str] = field(default_factory=Counter)  # stage -> customers emptied
    apprentice: dict[str, list[int]] = field(default_factory=dict)  # reason -> [agree, total]

    def add_apprentice(self, agreement: dict[str, list[int]]) -> None:
        for reason, (agree, total) in agreement.items():
            cur = self.apprentice.setdefault(reason, [0, 0])
            cur[0] += agree
            cur[1] += total

    def add(self, dec: BatchDecisions, acts: ActionSet) -> None:
        self.customers += len(dec.action)
        self.targeted += int(dec.targeted.sum())
        self.decided += int(dec.decided.sum())
        self.global_control += int(dec.in_global_control.sum())
        for si in np.flatnonzero(
            np.bincount(dec.suppressed_by[dec.suppressed_by >= 0], minlength=len(STAGES))
        ):
            self.suppressed[STAGES[si]] += int((dec.suppressed_by == si).sum())
        decided = dec.decided
        keys = (
            dec.action[decided] * 16
            + dec.reason[decided].astype(np.int64) * 4
            + dec.group[decided].astype(np.int64)
        )
        values, freq = np.unique(keys, return_counts=True)
        for key, n in zip(values.tolist(), freq.tolist(), strict=True):
            a, rest = divmod(key, 16)
            r, g = divmod(rest, 4)
            c = int(acts.campaign_of[a])
            camp = acts.campaigns[c].id if c >= 0 else ""
            label = f"{camp}|{acts.treatment_ids[a] or ''}|{REASONS[r]}|{GROUPS[g]}"
            self.by_action[label] += n

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "targeted": self.targeted,
            "decided": self.decided,
            "global_control": self.global_control,
            "by_action": dict(sorted(self.by_action.items())),
            "suppressed": {s: self.suppressed[s] for s in STAGES if self.suppressed[s]},
            "apprentice": self.apprentice,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Counts:
        return cls(
            customers=data.get("customers", 0),
            targeted=data.get("targeted", 0),
            decided=data.get("decided", 0),
            global_control=data.get("global_control", 0),
            by_action=Counter(data.get("by_action", {})),
            suppressed=Counter(data.get("suppressed", {})),
            apprentice={k: list(v) for k, v in data.get("apprentice", {}).items()},
        )
