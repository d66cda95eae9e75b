"""Benchmark the uplift report and the persona tree on a large seeded decision log.

Setup (not timed): a plan of 40 campaigns × 3 treatments, ``--customers`` customers with
attributes, computed features and a lifecycle history, ``--decisions`` decisions (one per
customer and day; campaign ``c00`` gets ``--persona-decisions`` of them) and a reward for every
decision (planted effects), all bulk-inserted straight into the tables.

Measured, each in its own process so its peak RSS is its own:

- ``uplift``: ``orch report uplift --by country,lifecycle,monetary`` (an attribute, the segment
  on the decision date, a computed feature) over every decision, rendered as a table;
- ``personas``: ``orch report personas --campaign c00`` over its decisions.

Wall-clock seconds are the figure that counts; CPU seconds (this process and its workers) are
printed too, because other jobs on a shared 2-core machine stretch the wall clock.

    python benchmarks/bench_uplift.py                       # 10M decisions on SQLite
    python benchmarks/bench_uplift.py --decisions 1000000 --url postgresql://...
    python benchmarks/bench_uplift.py --db /tmp/bench.db --keep   # reuse the data next time
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import admin  # noqa: E402
from orchestrator.storage import bulk  # noqa: E402
from orchestrator.storage.db import init_schema, make_engine  # noqa: E402

START = date(2026, 1, 5)
AS_OF = date(2026, 6, 1)
N_CAMPAIGNS = 40
COUNTRIES = np.array(["ES", "FR", "DE", "IT", "PT"])
TIERS = np.array(["bronze", "silver", "gold"])
STAGES = np.array(["new", "active", "at_risk", "lapsed"])


def plan_yaml() -> str:
    lines = [
        "version: 1",
        "settings: {global_control_fraction: 0.05, policy: {name: uniform}}",
        "attributes: {country: string, loyalty_tier: string, vip: bool}",
        "campaigns:",
    ]
    for c in range(N_CAMPAIGNS):
        lines += [
            f"  - id: c{c:02d}",
            "    channel: email",
            "    control_fraction: 0.1",
            "    treatments:",
            "      - {id: a, cost: 0.5}",
            "      - {id: b, cost: 1.0}",
            "      - {id: c, cost: 0.0}",
        ]
    return "\n".join(lines) + "\n"


def setup(url: str, customers: int, decisions: int, persona_decisions: int, seed: int) -> None:
    """Write the plan, customers and the decision log with rewards (not timed)."""
    started = time.perf_counter()
    engine = make_engine(url)
    init_schema(engine)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(plan_yaml())
    admin.apply_plan_file(engine, f.name, actor="bench")
    os.unlink(f.name)
    rng = np.random.default_rng(seed)
    ids = np.char.add("C", np.char.zfill(np.arange(customers).astype(str), 8))
    country = COUNTRIES[rng.integers(0, len(COUNTRIES), customers)]
    tier = TIERS[rng.integers(0, len(TIERS), customers)]
    vip = rng.random(customers) < 0.1
    attrs = [
        orjson.dumps({"country": c, "loyalty_tier": t, "vip": bool(v)}).decode()
        for c, t, v in zip(country.tolist(), tier.tolist(), vip.tolist(), strict=True)
    ]
    now = np.datetime64("2026-06-01T00:00:00", "us")
    stamps = pa.array(np.full(customers, now), pa.timestamp("us"))
    monetary = rng.gamma(2.0, 60.0, customers)
    stage_a = STAGES[rng.integers(0, len(STAGES), customers)]
    stage_b = STAGES[rng.integers(0, len(STAGES), customers)]
    switch = START + timedelta(days=20)
    days = decisions // customers + (decisions % customers > 0)
    with engine.begin() as conn:
        bulk.begin_write(conn)
        bulk.insert_arrow(
            conn,
            "customer",
            pa.table(
                {
                    "customer_id": ids,
                    "attributes": pa.array(attrs, pa.string()),
                    "created_at": stamps,
                    "updated_at": stamps,
                }
            ),
        )
        bulk.insert_arrow(
            conn,
            "customer_features",
            pa.table(
                {
                    "customer_id": ids,
                    "as_of": pa.array(np.full(customers, np.datetime64(AS_OF)), pa.date32()),
                    "monetary": monetary,
                    "lifecycle_stage": stage_b,
                    "p_alive": rng.random(customers),
                    "frequency": rng.integers(0, 20, customers),
                    "updated_at": stamps,
                }
            ),
        )
        before = np.full(customers, np.datetime64(START - timedelta(days=90)))
        bulk.insert_arrow(
            conn,
            "segment_history",
            pa.table(
                {
                    "customer_id": np.concatenate([ids, ids]),
                    "kind": np.full(2 * customers, "lifecycle"),
                    "value": np.concatenate([stage_a, stage_b]),
                    "valid_from": pa.array(
                        np.concatenate([before, np.full(customers, np.datetime64(switch))]),
                        pa.date32(),
                    ),
                    "valid_to": pa.array(
                        np.concatenate(
                            [
                                np.full(customers, np.datetime64(switch)),
                                np.full(customers, np.datetime64("NaT"), "datetime64[D]"),
                            ]
                        ),
                        pa.date32(),
                    ),
                }
            ),
        )
    # The persona campaign c00 gets ``persona_decisions`` decisions, the others share the rest.
    share = persona_decisions / decisions
    written = 0
    with engine.begin() as conn:
        bulk.begin_write(conn)
        with bulk.sqlite_cache(conn), bulk.deferred_indexes(conn, "decision"):
            for day in range(days):
                n = min(customers, decisions - written)
                if n <= 0:
                    break
                cust = np.arange(n)
                camp = np.where(rng.random(n) < share, 0, rng.integers(1, N_CAMPAIGNS, n)).astype(
                    np.int64
                )
                treat = rng.integers(0, 3, n)
                control = rng.random(n) < 0.1
                run_date = np.datetime64(START + timedelta(days=day))
                table = pa.table(
                    {
                        "run_date": pa.array(np.full(n, run_date), pa.date32()),
                        "customer_id": ids[cust],
                        "campaign_id": np.char.add("c", np.char.zfill(camp.astype(str), 2)),
                        "treatment_id": np.array(["a", "b", "c"])[treat],
                        "channel": np.full(n, "email"),
                        "group": np.where(control, "control", "test"),
                        "propensity": np.where(control, 0.1, 0.9) / 3,
                        "split_share": np.where(control, 0.1, 0.9),
                        "reason": np.full(n, "policy"),
                        "policy_name": np.full(n, "uniform"),
                        "window_end": pa.array(
                            np.full(n, run_date + np.timedelta64(7, "D")), pa.date32()
                        ),
                        "batch": np.zeros(n, dtype=np.int64),
                    }
                )
                bulk.insert_arrow(conn, "decision", table)
                first_id = written + 1
                # Planted: c00 works in Spain for big spenders, hurts VIPs; others add a little.
                base = np.where(rng.random(n) < 0.25, rng.gamma(2.0, 25.0, n), 0.0)
                effect = np.where(
                    camp == 0,
                    np.where((country[cust] == "ES") & (monetary[cust] > 120), 20.0, 0.0)
                    - np.where(vip[cust], 8.0, 0.0),
                    1.0,
                )
                revenue = base + np.where(control, 0.0, effect * rng.uniform(0.5, 1.5, n))
                cost = np.where(control, 0.0, np.array([0.5, 1.0, 0.0])[treat])
                bulk.insert_arrow(
                    conn,
                    "reward",
                    pa.table(
                        {
                            "decision_id": np.arange(first_id, first_id + n, dtype=np.int64),
                            "value": revenue - cost,
                            "revenue": revenue,
                            "cost": cost,
                            "converted": revenue > 0,
                            "matured_at": pa.array(np.full(n, now), pa.timestamp("us")),
                        }
                    ),
                )
                written += n
    with engine.connect() as conn:
        ids_ok = conn.execute(sa.text("SELECT max(id), count(*) FROM decision")).one()
    assert ids_ok[0] == ids_ok[1] == written, "decision ids are not 1..n"
    engine.dispose()
    print(f"setup: {written:,} decisions with rewards in {time.perf_counter() - started:.0f} s")


def _measure(task: str, url: str, profile: bool, queue: mp.Queue) -> None:
    from rich.console import Console

    from orchestrator.reports.personas import persona_report
    from orchestrator.reports.render import persona_tree, uplift_table
    from orchestrator.reports.uplift import uplift_report

    engine = make_engine(url)
    profiler = cProfile.Profile() if profile else None
    sink = Console(file=io.StringIO(), width=200)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    if task == "uplift":
        report = uplift_report(engine, as_of=AS_OF, by=["country", "lifecycle", "monetary"])
        table = uplift_table(report)
        if isinstance(table, str):
            sink.file.write(table)
        else:
            sink.print(table)
        what = f"{report.decisions:,} decisions, {len(report.rows)} rows"
    else:
        persona = persona_report(engine, campaign="c00", as_of=AS_OF, seed=0)
        sink.print(persona_tree(persona))
        leaves = ", ".join(f"{leaf.description}: {leaf.label}" for leaf in persona.tree.leaves)
        what = f"{persona.customers:,} customers; leaves: {leaves}"
    seconds = time.perf_counter() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    what = f"{cpu:.1f} s of CPU; {what}"
    if profiler:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        what += "\n" + out.getvalue()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((task, seconds, peak, what))


def measure(task: str, url: str, profile: bool) -> tuple[str, float, float, str]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(task, url, profile, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--persona-decisions", type=int, default=1_000_000)
    parser.add_argument("--url", help="database URL (default: a SQLite file in a temp folder)")
    parser.add_argument("--db", help="SQLite file to use (kept; reused when it exists)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    tmp = None
    reuse = False
    if args.url:
        url = args.url
    elif args.db:
        url = f"sqlite:///{args.db}"
        reuse = Path(args.db).exists()
    else:
        tmp = tempfile.mkdtemp(prefix="bench_uplift_")
        url = f"sqlite:///{tmp}/bench.db"
    if not reuse:
        setup(url, args.customers, args.decisions, args.persona_decisions, args.seed)
    limits = {"uplift": 60.0, "personas": 60.0}
    for task in ("uplift", "personas"):
        name, seconds, peak, what = measure(task, url, args.profile)
        verdict = "ok" if seconds <= limits[name] else f"OVER the {limits[name]:.0f} s budget"
        print(f"{name}: {seconds:.1f} s, peak RSS {peak:,.0f} MiB ({verdict}); {what}")
    if tmp and not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp:
        print(f"kept {url}")


if __name__ == "__main__":
    main()
