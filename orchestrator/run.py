"""The daily run: decide for every customer, partition by partition, and log each decision.

A run is keyed by its date. It first fixes what it decides with (the plan, the policy's state,
the seed: a ``RunSpec``, stored in the run row, so a resumed run decides exactly as it started),
then splits the customers into id ranges (``run_partition`` rows). Each partition is decided by
the pure core (``engine.partition.decide_partition``) batch by batch, and each batch is written in
one transaction together with its partition's resume point, so a run (or one worker of it) that
died resumes after its last committed batch, with no customer decided twice and none skipped.
The partitions run in this process, or on a Dask cluster (``orchestrator.distributed``); the run
row is completed last. Rerunning a finished date changes nothing unless forced.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from orchestrator.config import get_settings
from orchestrator.engine.actions import build_actions
from orchestrator.engine.columns import (
    DERIVED_SOURCES,
    attribute_sources,
    context_names,
    feature_sources,
)
from orchestrator.engine.contacts import (
    CAP_EXEMPT,
    SENT,
    Entries,
    decode_states,
    encode_states,
    history_from_entries,
    with_decisions,
)
from orchestrator.engine.decide import GROUP_TEST
from orchestrator.engine.history import History, contact_feature_names
from orchestrator.engine.partition import (
    PartitionResult,
    PolicySpec,
    Prepared,
    RunCounts,
    RunSpec,
    decide_partition,
    materialize,
    materialize_cached,
)
from orchestrator.errors import InputError, PlanError, RunInProgress
from orchestrator.features import rule_schema
from orchestrator.learning import versions
from orchestrator.plan import Plan, check_plan
from orchestrator.storage import contact_state
from orchestrator.storage.customer_reader import CustomerReader
from orchestrator.storage.db import make_engine, require_schema, session_scope
from orchestrator.storage.journey_repo import (
    load_journey_input,
    rewind_journey_states,
    write_journey_states,
)
from orchestrator.storage.models import (
    CustomerFeatures,
    Decision,
    PlanRevision,
    PolicyVersion,
    Reward,
    Run,
    RunPartition,
    utcnow,
)
from orchestrator.storage.plan_repo import attribute_types, read_plan
from orchestrator.storage.run_repo import (
    count_customers,
    insert_context,
    insert_decisions,
    load_entries,
    partition_bounds,
)
from policies import POLICIES

__all__ = ["Prepared", "RunReport", "RunStopped", "prepare", "run_daily", "run_partition"]

log = logging.getLogger("orch.run")

HEARTBEAT_SECONDS = 10.0  # the run row's heartbeat, from a thread, whatever a batch takes
BATCH_STRIDE = 1_000_000  # logged batch number = partition * BATCH_STRIDE + batch in partition
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
    partitions: int = 1
    workers: int = 0  # 0: decided in this process
    worker_peak_mb: float = 0.0  # the largest peak memory of a Dask worker
    counts: dict[str, Any] = field(default_factory=dict)


# --- what a run decides with ------------------------------------------------------------------


def load_spec(session: Session, day: date, seed: int | None = None) -> RunSpec:
    """The run's spec for ``day``: the stored plan, checked, and the policy to decide with."""
    plan = read_plan(session)
    attributes = {**attribute_types(session), **plan.attributes}
    try:
        check_plan(
            plan, known_attributes=attribute_types(session, origin="import"), policy_names=POLICIES
        )
    except PlanError as exc:
        raise PlanError(f"the stored plan is no longer valid: {exc}") from None
    schema = rule_schema(attributes)
    # Contexts are built and logged whatever the policy: learners replay them later. The
    # customer's recent contacts are part of them, so a policy can learn that one more message
    # hurts.
    channels = sorted({c.channel for c in plan.campaigns})
    names = context_names(schema) + contact_feature_names(channels)
    policy, cold_start = _policy_spec(session, plan, names, day)
    return RunSpec(
        day=day,
        seed=seed if seed is not None else default_seed(plan.settings.salt, day),
        plan=plan.model_dump(mode="json"),
        attributes=attributes,
        context_names=names,
        policy=policy,
        cold_start=cold_start,
        apprentice=_apprentice_spec(session, plan, names),
    )


def prepare(session: Session, day: date, seed: int | None = None) -> Prepared:
    """Load the plan and policy for ``day`` and compile them (the run, dry runs, explain)."""
    return materialize(load_spec(session, day, seed))


def _policy_spec(
    session: Session, plan: Plan, names: tuple[str, ...], day: date
) -> tuple[PolicySpec, float | None]:
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
        return PolicySpec(
            version.kind,
            dict(version.params),
            version.state,
            version.id,
            tuple(trained) if trained else None,
        ), None
    params = {**spec.params, "context_names": list(names)}
    try:
        policy = versions.instantiate(spec.name, params, None)
    except InputError as exc:
        raise PlanError(f"settings.policy: {exc}") from None
    cold = None
    if (
        policy.learns
        and spec.cold_start_explore < 1.0
        and build_actions(plan, day).no_send is not None
    ):
        cold = spec.cold_start_explore
    return PolicySpec(spec.name, params), cold


def _apprentice_spec(session: Session, plan: Plan, names: tuple[str, ...]) -> PolicySpec | None:
    kind = plan.settings.policy.apprentice
    if kind is None:
        return None
    version = versions.latest(session, kind, ("apprentice",))
    if version is None:
        return PolicySpec(kind, {"context_names": list(names)})
    trained = version.params.get("context_names")
    return PolicySpec(
        kind, dict(version.params), version.state, version.id, tuple(trained) if trained else None
    )


def default_seed(salt: str, day: date) -> int:
    digest = hashlib.blake2b(f"{salt}:{day.isoformat()}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def load_batch_history(conn: sa.Connection, prepared: Prepared, ids: list[str]) -> History:
    """The contact history of a batch's customers from the decision log (one indexed range
    query): what dry runs and `orch explain` read; the run reads the contact state."""
    entries = load_entries(
        conn,
        ids,
        day=prepared.setup.day,
        lookback_days=prepared.lookback_days,
        exempt=_exempt(prepared),
    )
    return _history(prepared, entries, len(ids))


def _history(prepared: Prepared, entries: Entries, n: int) -> History:
    plan = prepared.plan
    return history_from_entries(
        entries,
        n,
        day=prepared.setup.day,
        lookback_days=prepared.lookback_days,
        campaign_vocab=[c.id for c in plan.campaigns],
        channel_vocab=sorted({c.channel for c in plan.campaigns}),
        measured={c.id: c.measured for c in plan.campaigns},
    )


# --- the run -------------------------------------------------------------------------------


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(run: Run | RunPartition, now: datetime) -> bool:
    """Whether the process that owns a run (or a partition) may still be working on it."""
    host, _, pid = run.owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return now - run.heartbeat_at < timedelta(seconds=get_settings().stale_after_seconds)


class RunStopped(RuntimeError):
    """The run was asked to stop (SIGTERM to the daemon): the batch in hand was committed and
    the run resumes from there on its next start."""


@contextmanager
def _heartbeat(engine: sa.Engine, token: str | None, every: float) -> Iterator[None]:
    """Beat the run row every ``every`` seconds from a thread while the block runs, so a live
    run looks alive to other hosts however long a batch takes, and a dead one looks dead
    ``ORCH_STALE_AFTER_SECONDS`` after its last beat."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.update(Run).where(col(Run.token) == token).values(heartbeat_at=utcnow())
                    )
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("run heartbeat not written: %s", str(exc).splitlines()[0])

    thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=every + 30)


def _acquire(
    engine: sa.Engine, spec: RunSpec, *, force: bool, lookback_days: int
) -> tuple[Run | None, bool]:
    """Claim the run row for ``spec.day``; return (run, resumed), or (None, False) if already
    done. A new run stores ``spec`` and how it reads contact history; a resumed one keeps
    both."""
    now, day = utcnow(), spec.day
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
            busy = session.exec(
                select(RunPartition).where(col(RunPartition.status) == "running")
            ).all()
            for p in busy:  # a worker of a run whose coordinator died may still be writing
                if p.owner != _owner() and _alive(p, now):
                    raise RunInProgress(
                        f"partition {p.part} of the run for {p.run_date} is being decided "
                        f"(owner {p.owner}, last heartbeat {p.heartbeat_at:%Y-%m-%d %H:%M:%S} "
                        "UTC); wait for it, or stop that worker"
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
                mode, generation = contact_state.prepare_run(session, day, lookback_days)
                revision = session.exec(
                    select(col(PlanRevision.id)).order_by(col(PlanRevision.id).desc())
                ).first()
                run = Run(
                    run_date=day,
                    plan_revision_id=revision,
                    status="running",
                    owner=_owner(),
                    seed=spec.seed,
                    forced=force,
                    started_at=now,
                    heartbeat_at=now,
                    spec=spec.to_json(),
                    policy_name=str(spec.plan["settings"]["policy"]["name"]),
                    policy_version_id=spec.policy.version_id,
                    contacts=mode,
                    contacts_generation=generation,
                    token=uuid.uuid4().hex,
                    segments_as_of=session.exec(
                        select(sa.func.max(col(CustomerFeatures.as_of)))
                    ).first(),
                )
            else:
                run.status, run.owner, run.heartbeat_at, run.error = "running", _owner(), now, None
                run.token = run.token or uuid.uuid4().hex
                if run.spec is None:  # begun before runs kept their spec: its seed stays
                    run.spec = replace(spec, seed=run.seed).to_json()
                if run.contacts is None:  # begun before contact states: their batches have none
                    run.contacts, run.contacts_generation = "rebuild", -1
                elif run.contacts_generation != contact_state.generation(session.connection()):
                    run.contacts = "rebuild"  # past decisions changed since it began
            session.add(run)
            session.flush()
            session.expunge(run)
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
    # Core deletes on the connection: an ORM delete would fetch every deleted row's key to
    # keep the session in sync (2.4M ids, 1.8 GB, for a forced rerun of 10M customers).
    conn = session.connection()
    rewind_journey_states(conn, day)
    for name in ("decision", "decision_context", "run_partition"):
        t = SQLModel.metadata.tables[name]
        conn.execute(sa.delete(t).where(t.c.run_date == day))
    # contact_state.prepare_run decides what the states need (the new run calls it next).


def run_daily(
    engine: sa.Engine,
    *,
    day: date,
    dry_run: bool = False,
    force: bool = False,
    seed: int | None = None,
    batch_size: int = 50_000,
    progress: Progress | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    partition_size: int = 250_000,
    stop: threading.Event | None = None,
) -> RunReport:
    """Decide for every customer on ``day``; see the module docstring.

    ``workers`` starts a local Dask cluster of that many processes, ``scheduler`` uses a running
    one (PostgreSQL only); without either, the partitions run in this process. Once ``stop`` is
    set, the run commits the batch in hand, is left ``stopped`` (resumable) and raises
    :class:`RunStopped`."""
    require_schema(engine)
    _check_arguments(day, seed, batch_size)
    distributed = bool(workers) or bool(scheduler)
    if distributed and engine.dialect.name != "postgresql":
        raise InputError(
            "--workers and --scheduler need PostgreSQL (SQLite has one writer): run without "
            "them, or point ORCH_DATABASE_URL at a PostgreSQL database"
        )
    started = time.perf_counter()
    with session_scope(engine) as session:
        spec = load_spec(session, day, seed)
    prepared = materialize(spec)
    if dry_run:
        return _dry_run(engine, prepared, batch_size, progress, started)
    claimed, resumed = _acquire(engine, spec, force=force, lookback_days=prepared.lookback_days)
    if claimed is None:
        with session_scope(engine) as session:
            done = session.exec(select(Run).where(col(Run.run_date) == day)).one()
        return RunReport(
            day,
            "already_done",
            counts=done.counts,
            policy_name=done.policy_name,
            batches=done.batches_done,
            partitions=done.partitions or 1,
        )
    run = claimed
    spec = RunSpec.from_json(run.spec) if run.spec else spec
    if resumed:
        _say_pinned(engine, run)
    try:
        parts = _partitions(engine, day, resumed, workers or 0, scheduler, partition_size)
        report = RunReport(
            day,
            "done",
            resumed_after_batches=sum(p.batches_done for p in parts) if resumed else 0,
            policy_name=spec.plan["settings"]["policy"]["name"],
            partitions=len(parts),
        )
        pending = [p.part for p in parts if p.status != "done"]
        total = sum(RunCounts.from_json(p.counts).customers for p in parts if p.status == "done")
        if distributed:
            from orchestrator.distributed import run_partitions_on_dask

            report.workers, report.worker_peak_mb = run_partitions_on_dask(
                engine,
                day,
                run.token,
                pending,
                batch_size,
                workers=workers,
                scheduler=scheduler,
                progress=progress,
                done_before=total,
            )
        else:
            grand = _customers(engine)
            with _heartbeat(engine, run.token, HEARTBEAT_SECONDS):
                for part in pending:
                    run_partition(
                        engine,
                        day,
                        part,
                        batch_size,
                        token=run.token,
                        progress=_offset(progress, total, grand),
                        stop=stop,
                    )
                    total = _done_customers(engine, day)
        counts = _finish(engine, day, report.policy_name, spec)
    except RunStopped:
        _mark_stopped(engine, day)
        raise
    except BaseException as exc:
        _mark_failed(engine, day, exc)
        raise
    report.counts = counts.to_json()
    report.customers = counts.customers
    report.decided = counts.decided
    report.batches = _batches(engine, day)
    report.seconds = time.perf_counter() - started
    return report


MAX_SEED = 2**31 - 1
MAX_DAYS_AHEAD = 366


def _check_arguments(day: date, seed: int | None, batch_size: int) -> None:
    """Refuse what cannot be a run before anything is claimed or written."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed {seed}: a seed is a whole number from 0 to {MAX_SEED:,}")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: give at least 1")
    if day > date.today() + timedelta(days=MAX_DAYS_AHEAD):
        raise InputError(
            f"--date {day} is more than {MAX_DAYS_AHEAD} days ahead: runs go forward in time, "
            "and a run that far out would hold back every date before it"
        )


def _offset(progress: Progress | None, base: int, total: int) -> Progress | None:
    """A partition's progress as the run's (the partitions before it are done)."""
    if progress is None:
        return None
    report = progress

    def inner(done: int, _total: int | None) -> None:
        report(base + done, max(total, base + done))

    return inner


def _customers(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return count_customers(conn)


def _done_customers(engine: sa.Engine, day: date) -> int:
    with session_scope(engine) as session:
        parts = session.exec(select(RunPartition).where(col(RunPartition.run_date) == day)).all()
        return sum(RunCounts.from_json(p.counts).customers for p in parts)


def _batches(engine: sa.Engine, day: date) -> int:
    with session_scope(engine) as session:
        parts = session.exec(select(RunPartition).where(col(RunPartition.run_date) == day)).all()
        return sum(p.batches_done for p in parts)


def _dry_run(
    engine: sa.Engine,
    prepared: Prepared,
    batch_size: int,
    progress: Progress | None,
    started: float,
) -> RunReport:
    """Decide for everyone, in memory, and report; write nothing."""
    counts = RunCounts()
    total = _customers(engine)
    after: str | None = None
    batches = 0
    with customer_reader(engine, prepared) as customers, engine.connect() as reader:
        while True:
            raw = customers.load(reader, after=after, limit=batch_size)
            if not raw.ids:
                break
            history = load_batch_history(reader, prepared, raw.ids)
            journeys = load_journey_input(
                reader, raw.ids, prepared.setup.journeys, prepared.setup.day
            )
            reader.rollback()
            counts.add(decide_partition(prepared, raw, history, journeys=journeys).counts)
            after, batches = raw.ids[-1], batches + 1
            if progress:
                progress(counts.customers, max(total, counts.customers))
    return RunReport(
        prepared.setup.day,
        "dry_run",
        customers=counts.customers,
        decided=counts.decided,
        batches=batches,
        seconds=time.perf_counter() - started,
        policy_name=prepared.policy_name,
        counts=counts.to_json(),
    )


def _partitions(
    engine: sa.Engine,
    day: date,
    resumed: bool,
    workers: int,
    scheduler: str | None,
    partition_size: int,
) -> list[RunPartition]:
    """The run's partitions: those it has (a resumed run keeps its layout), or new ones: one
    in a single process, else enough for every worker to take several."""
    with session_scope(engine) as session:
        existing = list(
            session.exec(
                select(RunPartition)
                .where(col(RunPartition.run_date) == day)
                .order_by(col(RunPartition.part))
            )
        )
        if existing:
            for p in existing:
                session.expunge(p)
            return existing
        run = session.exec(select(Run).where(col(Run.run_date) == day)).one()
        if run.last_customer_id is not None:  # begun before runs had partitions: go on as one
            legacy = RunPartition(
                run_date=day,
                part=0,
                last_customer_id=run.last_customer_id,
                batches_done=run.batches_done,
                counts=run.counts,
                owner="",
                run_token=run.token,
            )
            bounds: list[tuple[str | None, str | None]] = []
        elif workers or scheduler:
            total = count_customers(session.connection())
            count = max(2 * max(workers, 1), math.ceil(total / max(partition_size, 1)))
            bounds = partition_bounds(session.connection(), count)
        else:
            bounds = [(None, None)]
        parts = [
            RunPartition(
                run_date=day, part=i, lo=lo, hi=hi, counts={}, owner="", run_token=run.token
            )
            for i, (lo, hi) in enumerate(bounds)
        ] or [legacy]
        for p in parts:
            session.add(p)
        run.partitions = len(parts)
        session.add(run)
        session.flush()
        for p in parts:
            session.expunge(p)
        return parts


@lru_cache(maxsize=4)
def _engine_for(url: str) -> sa.Engine:
    return make_engine(url)


class PartitionMoved(RuntimeError):
    """Another attempt at the same partition wrote a batch first (Dask retries the task, and
    the retry resumes at the partition's new resume point)."""


def run_partition(
    engine: sa.Engine | str,
    day: date,
    part: int,
    batch_size: int,
    *,
    token: str | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Decide one partition of the run of ``day`` and write it, batch by batch, each batch with
    the partition's resume point; return the partition's counts (JSON). Once ``stop`` is set
    it hands the partition back (pending) after the batch in hand and raises ``RunStopped``.

    Runs in the coordinating process or on a Dask worker (``engine`` is then a URL). It reads
    the spec from the run row, so every worker decides with the same one. Every write names the
    run row (its ``token``) and the resume point it started from, so an attempt of a replaced run,
    or a second attempt at the same partition, cannot write over the one that owns it."""
    if isinstance(engine, str):
        engine = _engine_for(engine)
    claim = _claim(engine, day, part, token)
    if isinstance(claim, dict):
        return claim  # done already
    run, row = claim
    raw_spec = bytes(run.spec)  # type: ignore[arg-type]
    token, generation = run.token, run.contacts_generation
    after, hi, batch_no = row.last_customer_id or row.lo, row.hi, row.batches_done
    counts = RunCounts.from_json(row.counts)
    rebuild = run.contacts != "state"
    prepared = materialize_cached(raw_spec)
    acts = prepared.setup.actions
    horizon = contact_state.horizon_for(prepared.lookback_days)
    with customer_reader(engine, prepared) as customers:
        while True:
            with engine.connect() as reader:
                if not rebuild and contact_state.generation(reader) != generation:
                    rebuild = True  # past decisions changed under the run: read the log from here
                raw = customers.load(
                    reader, after=after, limit=batch_size, upto=hi, with_state=not rebuild
                )
                if raw.ids and rebuild:
                    entries = load_entries(
                        reader, raw.ids, day=day, lookback_days=horizon, exempt=_exempt(prepared)
                    )
                elif raw.ids:
                    entries = decode_states(raw.states or [])
                journeys = load_journey_input(reader, raw.ids, prepared.setup.journeys, day)
                reader.rollback()
            if not raw.ids:
                break
            logged = part * BATCH_STRIDE + batch_no
            history = _history(prepared, entries, len(raw.ids))
            result = decide_partition(prepared, raw, history, batch=logged, journeys=journeys)
            counts.add(result.counts)
            states = _states_after(prepared, result, entries, horizon, len(raw.ids))
            with engine.begin() as conn:
                moved = conn.execute(
                    sa.update(RunPartition)
                    .where(
                        col(RunPartition.run_date) == day,
                        col(RunPartition.part) == part,
                        col(RunPartition.run_token) == token,
                        col(RunPartition.batches_done) == batch_no,
                    )
                    .values(
                        batches_done=batch_no + 1,
                        last_customer_id=raw.ids[-1],
                        heartbeat_at=utcnow(),
                        counts=counts.to_json(),
                    )
                )
                if moved.rowcount != 1:
                    conn.rollback()
                    raise PartitionMoved(
                        f"partition {part} of the run for {day} moved on under this attempt"
                    )
                _write(conn, day, logged, prepared, result, acts.labels)
                dec = result.decisions
                if journeys is not None and dec.journey_states is not None:
                    write_journey_states(
                        conn,
                        raw.ids,
                        prepared.setup.journeys,
                        journeys.states,
                        dec.journey_states,
                        day,
                    )
                if rebuild:  # every customer of the batch: their state from the log, and today
                    contact_state.write_states(
                        conn, raw.ids, states, replace_range=(after, raw.ids[-1])
                    )
                else:  # those decided today, and those a cleared run of today had decided
                    changed = result.decisions.decided | _has_day(entries, day, len(raw.ids))
                    rows = np.flatnonzero(changed)
                    contact_state.write_states(
                        conn,
                        [raw.ids[i] for i in rows.tolist()],
                        [states[i] for i in rows.tolist()],
                    )
                conn.execute(
                    sa.update(Run)
                    .where(col(Run.token) == token)
                    .values(heartbeat_at=utcnow(), batches_done=col(Run.batches_done) + 1)
                )
            after, batch_no = raw.ids[-1], batch_no + 1
            if progress:
                progress(counts.customers, None)
            if stop is not None and stop.is_set():
                with engine.begin() as conn:
                    _set_partition(conn, day, part, token, status="pending", owner="")
                raise RunStopped(
                    f"the run for {day} stopped after {batch_no} batches of partition {part}"
                )
    with engine.begin() as conn:
        _set_partition(
            conn, day, part, token, status="done", heartbeat_at=utcnow(), counts=counts.to_json()
        )
        if rebuild and run.contacts == "state":  # the states of earlier batches may miss some
            conn.execute(sa.update(Run).where(col(Run.token) == token).values(contacts="rebuild"))
    return counts.to_json()


def customer_reader(engine: sa.Engine, prepared: Prepared) -> CustomerReader:
    """The reader of the run's customer batches: the attributes and features its fields read."""
    schema, derived = prepared.schema, set(DERIVED_SOURCES.values())
    return CustomerReader(
        engine,
        {n: "date" if n in derived else schema[n] for n in attribute_sources(prepared.needed)},
        feature_sources(prepared.needed),
        columnar=get_settings().batch_reader,
        salt=prepared.plan.settings.salt,
    )


def _set_partition(
    conn: sa.Connection, day: date, part: int, token: str | None, **values: Any
) -> None:
    """Update this run's row of partition ``part`` (a replaced run's token matches nothing)."""
    conn.execute(
        sa.update(RunPartition)
        .where(
            col(RunPartition.run_date) == day,
            col(RunPartition.part) == part,
            col(RunPartition.run_token) == token,
        )
        .values(**values)
    )


CLAIM_POLL = 2.0  # seconds between looks at a partition another live process is deciding


def _claim(
    engine: sa.Engine, day: date, part: int, token: str | None
) -> dict[str, Any] | tuple[Run, RunPartition]:
    """Take the partition for this process: its counts if it is done; wait while another live
    process decides it; refuse if the run it belongs to was replaced."""
    while True:
        with session_scope(engine) as session:
            run = session.exec(select(Run).where(col(Run.run_date) == day)).first()
            if run is None or (token is not None and run.token != token):
                raise InputError(f"the run for {day} this task belongs to was replaced")
            if run.spec is None:
                raise InputError(f"the run for {day} has no spec; rerun it with --force")
            row = session.get(RunPartition, (day, part))
            if row is None or row.run_token != run.token:
                raise InputError(f"the run for {day} has no partition {part}")
            if row.status == "done":
                return dict(row.counts)
            now = utcnow()
            busy = row.status == "running" and row.owner != _owner() and _alive(row, now)
            if not busy:  # (a live attempt elsewhere: wait for it, then look again)
                claimed = session.execute(
                    sa.update(RunPartition)
                    .where(
                        col(RunPartition.run_date) == day,
                        col(RunPartition.part) == part,
                        col(RunPartition.run_token) == run.token,
                        col(RunPartition.status) != "done",
                        col(RunPartition.owner) == row.owner,
                    )
                    .values(
                        status="running",
                        owner=_owner(),
                        heartbeat_at=now,
                        attempts=RunPartition.attempts + 1,
                    )
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    session.flush()
                    session.refresh(row)
                    session.expunge(row)
                    session.expunge(run)
                    return run, row
        time.sleep(CLAIM_POLL)


def _exempt(prepared: Prepared) -> frozenset[str]:
    """The journeys whose steps do not count against caps."""
    return frozenset(j.id for j in prepared.plan.journeys if j.cap_exempt)


def _has_day(entries: Entries, day: date, n: int) -> np.ndarray:
    """``(n,)`` bool: the customer's state has an entry of ``day`` or later."""
    out = np.zeros(n, dtype=bool)
    out[entries.row[entries.data["day"] >= day.toordinal()]] = True
    return out


def _states_after(
    prepared: Prepared, result: PartitionResult, entries: Entries, horizon: int, n: int
) -> list[bytes | None]:
    """Each customer's contact state with today's decisions added."""
    dec, acts = result.decisions, prepared.setup.actions
    rows = np.flatnonzero(dec.decided)
    camp = dec.campaign[rows]
    ids = [acts.campaigns[c].id if c >= 0 else None for c in camp.tolist()]
    channels = [acts.campaigns[c].channel if c >= 0 else None for c in camp.tolist()]
    sent = ((camp >= 0) & (dec.group[rows] == GROUP_TEST)).astype(np.uint8) * SENT
    if dec.journey is not None and prepared.setup.journeys:
        exempt = np.array([jp.spec.cap_exempt for jp in prepared.setup.journeys] + [False])
        sent |= np.where(sent.astype(bool) & exempt[dec.journey[rows]], CAP_EXEMPT, 0).astype(
            np.uint8
        )
    after = with_decisions(
        entries, prepared.setup.day, horizon, rows, ids, channels, sent, dec.window_days[rows]
    )
    return encode_states(after, n)


def _write(
    conn: sa.Connection,
    day: date,
    batch: int,
    prepared: Prepared,
    result: PartitionResult,
    labels: tuple[str, ...],
) -> None:
    insert_decisions(conn, result.rows)
    if result.customer_ids:
        insert_context(
            conn,
            run_date=day,
            batch=batch,
            names=prepared.context_names,
            customer_ids=result.customer_ids,
            matrix=result.contexts,
            actions=labels,
            eligible=result.eligible,
        )


def _finish(engine: sa.Engine, day: date, policy_name: str, spec: RunSpec) -> RunCounts:
    """Add up the partitions' counts and complete the run row (last)."""
    with session_scope(engine) as session:
        parts = list(session.exec(select(RunPartition).where(col(RunPartition.run_date) == day)))
        missing = [p.part for p in parts if p.status != "done"]
        if missing:
            raise RuntimeError(f"partitions {missing} of the run for {day} did not finish")
        counts = RunCounts()
        for p in parts:
            counts.add(RunCounts.from_json(p.counts))
        run = session.exec(select(Run).where(col(Run.run_date) == day)).one()
        run.status, run.finished_at = "done", utcnow()
        run.counts = counts.to_json()
        run.policy_name = policy_name
        run.policy_version_id = spec.policy.version_id
        run.batches_done = sum(p.batches_done for p in parts)
        run.last_customer_id = None
        session.add(run)
        prepared = materialize_cached(bytes(run.spec)) if run.spec else materialize(spec)
        if run.contacts_generation is not None and run.contacts_generation >= 0:
            contact_state.mark_complete(
                session.connection(),
                day,
                contact_state.horizon_for(prepared.lookback_days),
                run.contacts_generation,
            )
    return counts


def _say_pinned(engine: sa.Engine, run: Run) -> None:
    """A resumed run decides with the plan and policy it started with: say so when the plan
    has changed since."""
    with engine.connect() as conn:
        now = conn.execute(sa.select(sa.func.max(PlanRevision.id))).scalar()
    if run.plan_revision_id is not None and now is not None and now != run.plan_revision_id:
        log.warning(
            "resuming the run for %s with plan revision %s, which it started with (the plan is "
            "now at revision %s; the change applies from the next run)",
            run.run_date,
            run.plan_revision_id,
            now,
        )


def _mark_stopped(engine: sa.Engine, day: date) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(Run)
            .where(col(Run.run_date) == day, col(Run.status) == "running")
            .values(status="stopped", owner="", error=None)
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
