"""The closed loop: the engine runs a simulated world day by day, as a user would run production.

For each contender, on its own fresh database: the scenario's plan is applied with the
contender's policy, the world's customers and their past purchases are imported, and then every
day ``segments refresh`` → ``run`` → ``export`` (the send list) → the world's purchases →
``events import`` → ``learn`` (for learning policies), all through the production use-cases.
The world knows the exact expected incremental value of every send, so each contender's daily
value needs no estimate: it is the sum of the true values of what it sent.

Contenders: ``uniform``, ``static`` (the marketer's fixed priority ranking: every campaign gets
a manual priority in the scenario's ``marketer_ranking`` order), ``best-single`` (the one
action worth most across the base, sent to everyone eligible), ``egreedy``, ``lints``, ``vw``,
and ``oracle`` (the true best action under the same rules). Contenders run in parallel
processes, each with its own database.
"""

from __future__ import annotations

import copy
import csv
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml

from orchestrator import admin
from orchestrator.export import export_send_list
from orchestrator.imports.customers import import_customers
from orchestrator.imports.events import import_events
from orchestrator.learning.learn import learn
from orchestrator.plan import Plan
from orchestrator.run import run_daily
from orchestrator.segments.config import SegmentConfig
from orchestrator.segments.refresh import refresh_segments
from orchestrator.storage.db import init_schema, make_engine
from simulations.contenders import ROW_ATTRIBUTE, register_world, unregister_world
from simulations.scenario import Scenario, load_scenario
from simulations.world import World

LEARNERS = ("egreedy", "lints", "vw")
BASELINES = ("uniform", "static", "best-single", "oracle")
CONTENDERS = BASELINES[:3] + LEARNERS + BASELINES[3:]
EVENT_COLUMNS = ("event_id", "customer_id", "occurred_at", "type", "amount", "discount",
                 "category", "channel")  # fmt: skip

BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DayProgress = Callable[[str, int, int], None]  # contender, days done, days in all
DayHook = Callable[[sa.Engine, date], None]  # after the day's run, before the world steps


@dataclass
class ContenderRun:
    """What one contender did, day by day (values per customer-day, in money)."""

    name: str
    value: list[float] = field(default_factory=list)  # true incremental value of the sends
    sends: list[int] = field(default_factory=list)
    decisions: list[int] = field(default_factory=list)
    promotions: list[int] = field(default_factory=list)  # days on which a version was promoted
    policy_versions: int = 0
    seconds: float = 0.0
    database_url: str = ""


@dataclass
class SimulationResult:
    scenario: str
    customers: int
    days: int
    seed: int
    measure_from: int
    runs: dict[str, ContenderRun]

    def total(self, name: str, start: int | None = None, end: int | None = None) -> float:
        start = self.measure_from if start is None else start
        return float(sum(self.runs[name].value[start:end]))

    def share_of_oracle(self, name: str) -> float | None:
        if "oracle" not in self.runs:
            return None
        best = self.total("oracle")
        return self.total(name) / best if best > 0 else None

    def regret(self, name: str) -> list[float]:
        """Cumulative regret against the oracle, day by day from day 0 (value per customer)."""
        if "oracle" not in self.runs:
            return []
        gap = np.array(self.runs["oracle"].value) - np.array(self.runs[name].value)
        return np.cumsum(gap).tolist()

    def measured_regret(self, name: str) -> float | None:
        """Regret against the oracle over the measured days (value per customer)."""
        if "oracle" not in self.runs:
            return None
        return self.total("oracle") - self.total(name)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "customers": self.customers,
            "days": self.days,
            "seed": self.seed,
            "measured_days": [self.measure_from, self.days],
            "policies": {},
        }
        for name, run in self.runs.items():
            out["policies"][name] = {
                "share_of_oracle": self.share_of_oracle(name),
                "incremental_value": self.total(name) * self.customers,
                "value_per_customer_day": self.total(name) / max(self.days - self.measure_from, 1),
                "first_promotion_day": run.promotions[0] if run.promotions else None,
                "regret_per_customer": self.measured_regret(name),
                "daily": asdict(run),
            }
        return out


def simulate(
    scenario: str | Scenario,
    policies: Sequence[str],
    *,
    customers: int | None = None,
    days: int | None = None,
    seed: int | None = None,
    measure_from: int | None = None,
    database_url: str | None = None,
    out_dir: str | Path | None = None,
    workers: int | None = None,
    progress: DayProgress | None = None,
) -> SimulationResult:
    """Run each of ``policies`` through the closed loop on ``scenario``; see the module doc.

    Databases are SQLite files in ``out_dir`` (a temporary folder if None), or, with a
    PostgreSQL ``database_url``, one database per contender on that server (created afresh).
    ``measure_from`` is the first day counted in totals (default: the drift day, else half).
    """
    spec = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    unknown = [p for p in policies if p not in CONTENDERS]
    if unknown:
        from orchestrator.errors import InputError

        raise InputError(f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}")
    n = customers or spec.customers
    n_days = days or spec.days
    seed = spec.seed if seed is None else seed
    if measure_from is None:
        drift = spec.drift_day
        measure_from = drift if drift is not None and drift < n_days else n_days // 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        jobs = {
            name: (spec, name, n, n_days, seed, database_for(name, folder, database_url))
            for name in dict.fromkeys(policies)
        }
        runs = _run_all(jobs, workers, progress)
    return SimulationResult(spec.name, n, n_days, seed, measure_from, runs)


def database_for(name: str, folder: Path, url: str | None) -> str:
    slug = name.replace("-", "_")
    if url is None or url.startswith("sqlite"):
        path = folder / f"{slug}.db"
        for stale in folder.glob(f"{slug}.db*"):
            stale.unlink()
        return f"sqlite:///{path}"
    base = sa.make_url(url)
    db = f"{base.database or 'orch'}_sim_{slug}"
    admin_engine = make_engine(base.set(database="postgres").render_as_string(False))
    with admin_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    admin_engine.dispose()
    return base.set(database=db).render_as_string(False)


def _run_all(
    jobs: dict[str, tuple[Any, ...]], workers: int | None, progress: DayProgress | None
) -> dict[str, ContenderRun]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        return {name: run_contender(*job, progress=progress) for name, job in jobs.items()}
    ctx = multiprocessing.get_context("spawn")
    # One BLAS thread per worker: the workers already fill the CPUs, and BLAS threads fighting
    # over them made the linear algebra several times slower (children inherit the variables).
    saved = {k: os.environ.get(k) for k in BLAS_THREADS}
    os.environ.update({k: "1" for k in BLAS_THREADS})
    try:
        return _run_pool(ctx, jobs, workers, progress)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_pool(
    ctx: Any, jobs: dict[str, tuple[Any, ...]], workers: int, progress: DayProgress | None
) -> dict[str, ContenderRun]:
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = {pool.submit(_run_queued, queue, job): name for name, job in jobs.items()}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2)
            while not queue.empty():
                name, done, total = queue.get()
                if progress:
                    progress(name, done, total)
        return {futures[f]: f.result() for f in futures}


def _run_queued(queue: Any, job: tuple[Any, ...]) -> ContenderRun:
    return run_contender(*job, progress=lambda *msg: queue.put(msg))


def contender_plan(spec: Scenario, name: str, world: World, token: str) -> dict[str, Any]:
    """The scenario's plan with the contender's policy (and, for ``static``, its priorities)."""
    plan = copy.deepcopy(spec.plan)
    settings = plan.setdefault("settings", {})
    policy: dict[str, Any] = {"name": "uniform"}
    if name in LEARNERS:
        policy = {"name": name}
    elif name == "oracle":
        policy = {"name": "oracle", "params": {"world": token}}
        plan.setdefault("attributes", {})[ROW_ATTRIBUTE] = "number"
    elif name == "best-single":
        policy = {"name": "fixed", "params": {"world": token, "label": best_single(world, spec)}}
    elif name == "static":
        ranking = list(spec.marketer_ranking)
        ranking += [c["id"] for c in plan["campaigns"] if c["id"] not in ranking]
        for camp in plan["campaigns"]:
            camp["priority"] = ranking.index(camp["id"]) + 1
    settings["policy"] = {**settings.get("policy", {}), **policy}
    return plan


def best_single(world: World, spec: Scenario) -> str:
    """The action label whose true incremental value summed over all customers is highest."""
    labels = world.labels()
    rows = np.arange(len(world.customer_ids))
    values = world.expected_incremental(spec.start, rows, labels).sum(axis=0)
    return labels[int(np.argmax(values))]


def run_contender(
    spec: Scenario,
    name: str,
    customers: int,
    days: int,
    seed: int,
    database_url: str,
    *,
    progress: DayProgress | None = None,
    world: World | None = None,
    on_decided: DayHook | None = None,
) -> ContenderRun:
    """One contender through the whole closed loop on a fresh database at ``database_url``
    (on ``world`` if given, else a new one); ``on_decided`` sees each day's decisions before
    the world answers them."""
    started = time.perf_counter()
    world = world or World(spec, customers=customers, seed=seed)
    token = f"{spec.name}:{name}:{os.getpid()}"
    plan_data = contender_plan(spec, name, world, token)
    live = register_world(token, world, Plan.model_validate(plan_data), spec.start)
    engine = make_engine(database_url)
    run = ContenderRun(name, database_url=database_url)
    try:
        init_schema(engine)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            load_world(engine, world, plan_data, folder, row_attribute=name == "oracle")
            segments = segment_config(plan_data)
            for offset in range(days):
                day = spec.start + timedelta(days=offset)
                live.day = day
                _one_day(engine, world, run, day, folder, name in LEARNERS, on_decided, segments)
                if progress:
                    progress(name, offset + 1, days)
        with engine.connect() as conn:
            run.policy_versions = int(
                conn.execute(sa.text("SELECT COUNT(*) FROM policy_version")).scalar_one()
            )
    finally:
        unregister_world(token)
        engine.dispose()
    run.seconds = time.perf_counter() - started
    return run


def load_world(
    engine: sa.Engine,
    world: World,
    plan_data: dict[str, Any],
    folder: Path,
    *,
    row_attribute: bool = False,
) -> None:
    """Apply the contender's plan and import the world's customers and past purchases, as a
    user would (`orch plan apply`, `orch customers import`, `orch events import`); with
    ``row_attribute`` each customer also carries its row in the world (for the oracle)."""
    plan_path = folder / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_data, sort_keys=False))
    admin.apply_plan_file(engine, plan_path, actor="simulation")
    rows = world.customer_rows()
    if row_attribute:
        rows = [{**r, ROW_ATTRIBUTE: i} for i, r in enumerate(rows)]
    import_customers(engine, write_csv(folder / "customers.csv", rows))
    history = write_csv(folder / "history.csv", world.history_events())
    import_events(engine, history, now=simulated_now(world.today))


def segment_config(plan: dict[str, Any]) -> SegmentConfig:
    """The daily refresh's settings: micro-segments only when the plan's rules use them (they
    are no policy context, and clustering every simulated day would cost seconds a day)."""
    uses = "micro_segment" in yaml.safe_dump(plan)
    config = SegmentConfig.model_validate(plan.get("settings", {}).get("segments", {}))
    return config.model_copy(update={"micro": config.micro.model_copy(update={"enabled": uses})})


def _one_day(
    engine: sa.Engine,
    world: World,
    run: ContenderRun,
    day: date,
    folder: Path,
    learning: bool,
    on_decided: DayHook | None,
    segments: SegmentConfig,
) -> None:
    refresh_segments(engine, as_of=day - timedelta(days=1), config=segments)
    report = run_daily(engine, day=day)
    if on_decided is not None:
        on_decided(engine, day)
    sends_path = folder / "sends.csv"
    export_send_list(engine, day=day, out=sends_path)
    with sends_path.open(newline="") as f:
        sends = [
            (r["customer_id"], f"{r['campaign_id']}/{r['treatment_id']}") for r in csv.DictReader(f)
        ]
    ids = [s[0] for s in sends]
    labels = [s[1] for s in sends]
    value = world.true_value_of_sends(day, ids, labels) if sends else np.zeros(0)
    run.value.append(float(np.sum(value)) / len(world.customer_ids))
    run.sends.append(len(sends))
    run.decisions.append(report.decided)
    events = world.step(day, ids, labels)
    if events:
        import_events(engine, write_csv(folder / "events.csv", events), now=simulated_now(day))
    if learning:
        learned = learn(engine, as_of=day + timedelta(days=1), actor="simulation")
        if learned.promoted:
            run.promotions.append(len(run.value) - 1)


def simulated_now(day: date) -> datetime:
    """The end of a simulated day: what "now" is for the imports of that day's events."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time())


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(rows[0]) if rows else list(EVENT_COLUMNS)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
