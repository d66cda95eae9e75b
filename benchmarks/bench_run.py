"""Benchmark of the daily run (issue: 1M customers within 60 s on SQLite, peak memory <= 2 GB).

Builds a seeded database: N customers with attributes and computed features, a plan with 100
campaigns (20 prioritized, 200 actions), 5 caps and 10 exclusions, and 30 days of prior
decisions so caps, windows, cooldowns and exclusions do real work. Then times `run_daily` in a
child process (so peak RSS is the run's own) and prints the figures.

    python benchmarks/bench_run.py --customers 1000000            # SQLite
    python benchmarks/bench_run.py --customers 100000 --postgres-url postgresql://...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator import admin  # noqa: E402
from orchestrator.storage.db import init_schema, make_engine, normalize_url  # noqa: E402

RUN_DAY = date(2026, 11, 23)
STAGES = ["new", "active", "at_risk", "lapsed", "reactivated", "prospect"]
CELLS = ["champions", "loyal", "promising", "at_risk", "hibernating", "lost"]
CHANNELS = ["email", "sms", "push"]


def make_plan(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    campaigns = []
    for i in range(100):
        channel = CHANNELS[i % 3]
        stages = sorted(rng.choice(STAGES, size=int(rng.integers(1, 4)), replace=False).tolist())
        clauses = [f"lifecycle_stage in {json.dumps(stages)}", f"{channel}_opt_in"]
        kind = i % 4
        if kind == 0:
            clauses.append(f"monetary >= {int(rng.integers(20, 200))}")
        elif kind == 1:
            clauses.append(f"p_alive > {rng.uniform(0.1, 0.6):.2f}")
        elif kind == 2:
            clauses.append(f'country in ["ES", "{rng.choice(["FR", "DE", "IT"])}"]')
        else:
            clauses.append(f"age >= {int(rng.integers(18, 50))}")
        campaigns.append(
            {
                "id": f"camp{i:03d}",
                "channel": channel,
                "target": " and ".join(clauses),
                "priority": i + 1 if i < 20 else None,
                "measurement_days": int(rng.integers(3, 15)),
                "cooldown_days": int(rng.integers(0, 21)),
                "control_fraction": 0.1,
                "treatments": [
                    {"id": "a", "cost": 0.5, "features": {"discount": 0.1}},
                    {"id": "b", "cost": 1.0, "features": {"discount": 0.2}},
                ],
            }
        )
    for c in campaigns:
        if c["priority"] is None:
            del c["priority"]
    exclusions = []
    for _ in range(10):
        a, b = rng.choice(100, size=2, replace=False)
        exclusions.append(
            {
                "if_received": f"camp{a:03d}",
                "exclude": f"camp{b:03d}",
                "days": int(rng.integers(7, 30)),
            }
        )
    return {
        "version": 1,
        "settings": {"global_control_fraction": 0.05, "policy": {"name": "uniform"}},
        "attributes": {
            "email_opt_in": "bool",
            "sms_opt_in": "bool",
            "push_opt_in": "bool",
            "country": "string",
            "age": "number",
            "birth_date": "date",
        },
        "caps": [
            {"scope": "global", "max": 3, "per_days": 7},
            {"scope": "global", "max": 8, "per_days": 30},
            {"scope": "channel", "channel": "email", "max": 2, "per_days": 7},
            {"scope": "channel", "channel": "sms", "max": 1, "per_days": 14},
            {"scope": "channel", "channel": "push", "max": 2, "per_days": 7},
        ],
        "campaigns": campaigns,
        "exclusions": exclusions,
    }


def _copy_or_insert(engine: sa.Engine, table: str, columns: list[str], rows: list[tuple]) -> None:
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            with (
                raw.cursor() as cur,
                cur.copy(
                    f"COPY {table} ({', '.join(chr(34) + c + chr(34) for c in columns)}) FROM STDIN"
                ) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cols = ", ".join(f'"{c}"' for c in columns)
            raw.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)


def build(url: str, n: int, seed: int, history_days: int = 30) -> None:
    engine = make_engine(url)
    init_schema(engine)
    plan = make_plan(seed)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(plan, fh)
    admin.apply_plan_file(engine, fh.name, actor="bench")
    os.unlink(fh.name)
    rng = np.random.default_rng(seed)
    ids = [f"C{i:08d}" for i in range(n)]
    now = datetime(2026, 11, 1)
    t0 = time.perf_counter()
    chunk = 200_000
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        opt = rng.random((m, 3)) < np.array([0.8, 0.4, 0.5])
        country = rng.choice(["ES", "FR", "DE", "IT", "PT"], size=m)
        age = rng.integers(18, 80, size=m)
        bday = rng.integers(0, 365, size=m)
        stage = rng.choice(STAGES, size=m)
        cell = rng.choice(CELLS, size=m)
        monetary = rng.gamma(2.0, 50.0, size=m)
        p_alive = rng.random(m)
        cust_rows, feat_rows = [], []
        for j in range(m):
            attrs = {
                "email_opt_in": bool(opt[j, 0]),
                "sms_opt_in": bool(opt[j, 1]),
                "push_opt_in": bool(opt[j, 2]),
                "country": str(country[j]),
                "age": int(age[j]),
                "birth_date": (date(1980, 1, 1) + timedelta(days=int(bday[j]))).isoformat(),
            }
            cid = ids[lo + j]
            cust_rows.append((cid, orjson.dumps(attrs).decode(), now, now))
            feat_rows.append(
                (
                    cid,
                    RUN_DAY,
                    str(stage[j]),
                    str(cell[j]),
                    float(monetary[j]),
                    float(p_alive[j]),
                    now,
                )
            )
        _copy_or_insert(
            engine, "customer", ["customer_id", "attributes", "created_at", "updated_at"], cust_rows
        )
        _copy_or_insert(
            engine,
            "customer_features",
            [
                "customer_id",
                "as_of",
                "lifecycle_stage",
                "rfm_cell",
                "monetary",
                "p_alive",
                "updated_at",
            ],
            feat_rows,
        )
    print(f"  customers: {n:,} in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    camp = plan["campaigns"]
    days = np.array([c["measurement_days"] for c in camp])
    total = 0
    # Like the engine: only customers whose last window has closed get a new decision.
    free_from = np.full(n, -(10**6), dtype=np.int64)
    for back in range(history_days, 0, -1):
        day = RUN_DAY - timedelta(days=back)
        chosen = np.flatnonzero((free_from <= -back) & (rng.random(n) < 0.35))
        which = rng.integers(0, len(camp), size=len(chosen))
        free_from[chosen] = -back + days[which]
        control = rng.random(len(chosen)) < 0.1
        rows = [
            (
                day,
                ids[i],
                camp[c]["id"],
                "a",
                camp[c]["channel"],
                "control" if ctl else "test",
                0.05,
                0.1 if ctl else 0.9,
                "policy",
                "uniform",
                day + timedelta(days=int(days[c])),
                0,
            )
            for i, c, ctl in zip(chosen.tolist(), which.tolist(), control.tolist(), strict=True)
        ]
        _copy_or_insert(
            engine,
            "decision",
            [
                "run_date",
                "customer_id",
                "campaign_id",
                "treatment_id",
                "channel",
                "group",
                "propensity",
                "split_share",
                "reason",
                "policy_name",
                "window_end",
                "batch",
            ],
            rows,
        )
        total += len(rows)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO run (run_date, status, started_at, heartbeat_at, owner, "
                    "batches_done, counts, policy_name, forced, seed) VALUES "
                    "(:d, 'done', :t, :t, 'bench', 0, '{}', 'uniform', false, 0)"
                ),
                {"d": day, "t": now},
            )
    print(
        f"  history: {total:,} decisions over {history_days} days in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


CHILD = """
import cProfile, json, resource, sys, time
from datetime import date
from sqlmodel import select
from orchestrator.storage.db import make_engine, session_scope
from orchestrator.storage.models import PlanSetting, Run
from orchestrator.run import run_daily


def main():
    engine = make_engine(sys.argv[1])
    day = date.fromisoformat(sys.argv[2])
    workers = int(sys.argv[6]) or None
    with session_scope(engine) as session:  # the policy to run with
        row = session.get(PlanSetting, "policy")
        row.value = {**row.value, "name": sys.argv[4], "params": {}}
        session.add(row)
    profile = cProfile.Profile() if sys.argv[5] else None
    t = time.perf_counter()
    if profile:
        profile.enable()
    report = run_daily(engine, day=day, batch_size=int(sys.argv[3]), force=True, workers=workers)
    if profile:
        profile.disable()
        profile.dump_stats(sys.argv[5])
    seconds = time.perf_counter() - t
    with session_scope(engine) as session:
        mode = session.exec(select(Run).where(Run.run_date == day)).one().contacts
    print(json.dumps({"seconds": seconds, "decided": report.decided, "mode": mode,
                      "workers": report.workers, "worker_mb": report.worker_peak_mb,
                      "customers": report.customers, "suppressed": report.counts["suppressed"],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      # the batch reader: a child process of the run
                      "reader_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


if __name__ == "__main__":  # Dask's worker processes import this module
    main()
"""


def measure(
    url: str, day: date, batch_size: int, profile: str | None, policy: str, workers: int = 0
) -> dict:
    """One run of ``day`` in a child process (its own peak RSS), profiled if asked."""
    child = Path(tempfile.gettempdir()) / "orch_bench_run_child.py"
    child.write_text(CHILD)
    args = [url, day.isoformat(), str(batch_size), policy, profile or "", str(workers)]
    out = subprocess.run(
        [sys.executable, str(child), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--postgres-url", default=None, help="also run on this PostgreSQL database")
    ap.add_argument("--reuse", action="store_true", help="reuse a database built before")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--profile", default=None, help="write a cProfile of the run here")
    ap.add_argument(
        "--workers",
        type=int,
        action="append",
        default=None,
        help="also run PostgreSQL on a local Dask cluster of N workers (repeatable)",
    )
    ap.add_argument(
        "--policy", action="append", default=None, help="policy to run (repeatable; uniform)"
    )
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    targets = []
    if not args.no_sqlite:
        targets.append(("sqlite", f"sqlite:///{args.out}/bench_run_{args.customers}.db"))
    if args.postgres_url:
        targets.append(("postgresql", normalize_url(args.postgres_url)))
    results = []
    for backend, url in targets:
        print(f"{backend}: building {args.customers:,} customers ...", flush=True)
        if backend == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            if not (args.reuse and path.exists()):
                for p in path.parent.glob(path.name + "*"):
                    p.unlink()
                build(url, args.customers, args.seed)
        else:
            engine = make_engine(url)
            with engine.connect() as conn:
                built = (
                    conn.exec_driver_sql(
                        "SELECT to_regclass('public.customer') IS NOT NULL"
                    ).scalar()
                    and conn.exec_driver_sql("SELECT COUNT(*) FROM customer").scalar()
                )
            if not (args.reuse and built == args.customers):
                with engine.begin() as conn:
                    conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                build(url, args.customers, args.seed)
            engine.dispose()
        for policy in args.policy or ["uniform"]:
            # The first run after the history was written reads the decision log and builds
            # the contact states; the same date run again (forced) is the daily case: it
            # reads the states, and decides as many customers as the first.
            first = measure(url, RUN_DAY, args.batch_size, None, policy)
            print(
                f"  first run ({policy}, {first['mode']} contact state): "
                f"{first['seconds']:.1f} s, peak RSS {first['rss_mb']:.0f} MB",
                flush=True,
            )
            r = measure(url, RUN_DAY, args.batch_size, args.profile, policy)
            r["backend"], r["policy"], r["first_seconds"] = backend, policy, first["seconds"]
            results.append(r)
            for n in (args.workers or []) if backend == "postgresql" else []:
                w = measure(url, RUN_DAY, args.batch_size, None, policy, workers=n)
                w["backend"], w["policy"], w["first_seconds"] = backend, policy, first["seconds"]
                results.append(w)
                print(
                    f"  daily run ({policy}, {n} Dask workers): {w['seconds']:.1f} s, "
                    f"{w['customers'] / w['seconds']:,.0f} customers/s, "
                    f"peak RSS per worker {w['worker_mb']:.0f} MB "
                    f"(speed-up {r['seconds'] / w['seconds']:.2f}x over one process)",
                    flush=True,
                )
            print(
                f"  daily run ({policy}, {r['mode']} contact state): {r['seconds']:.1f} s, "
                f"{r['customers'] / r['seconds']:,.0f} customers/s, {r['decided']:,} decisions, "
                f"peak RSS {r['rss_mb']:.0f} MB (its batch reader {r['reader_mb']:.0f} MB), "
                f"suppressed {r['suppressed']}",
                flush=True,
            )
    print()
    print(
        f"{'backend':<12}{'policy':<9}{'workers':>8}{'customers':>12}{'seconds':>10}"
        f"{'cust/s':>12}{'decisions':>12}{'peak MB':>10}{'reader MB':>11}{'first run s':>13}"
    )
    for r in results:
        peak = r["worker_mb"] if r.get("workers") else r["rss_mb"]
        print(
            f"{r['backend']:<12}{r['policy']:<9}{r.get('workers') or 1:>8}{r['customers']:>12,}"
            f"{r['seconds']:>10.1f}{r['customers'] / r['seconds']:>12,.0f}{r['decided']:>12,}"
            f"{peak:>10.0f}{r.get('reader_mb', 0):>11.0f}{r['first_seconds']:>13.1f}"
        )


if __name__ == "__main__":
    main()
