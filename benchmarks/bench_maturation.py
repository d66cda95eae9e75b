"""Benchmark of reward maturation (`orch learn`'s first step, also run by the reports).

Builds the daily-run benchmark's database (`bench_run.py`: N customers, a plan of 100 campaigns,
30 days of decisions written the way the engine writes them: about 3.3 decisions per customer)
and adds purchases and returns over those 30 days and the windows after them (``--events-per``
per customer), then matures every decision whose window has closed, in a child process (its own
peak RSS), and prints the figures. The second maturation of the same day has nothing left to do
and shows the fixed cost of a daily call.

    python benchmarks/bench_maturation.py --customers 1000000
    python benchmarks/bench_maturation.py --customers 1000000 --postgres-url postgresql://...
    python benchmarks/bench_maturation.py --reuse --no-sqlite --postgres-url URL --workers 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_run import RUN_DAY, build  # noqa: E402
from orchestrator.imports.common import constant_timestamp  # noqa: E402
from orchestrator.storage import bulk  # noqa: E402
from orchestrator.storage.db import make_engine, normalize_url  # noqa: E402

AS_OF = RUN_DAY + timedelta(days=14)  # every window of the 30 days has closed

CHILD = """
import json, resource, sys, time
from datetime import date
from orchestrator.storage.db import make_engine
from orchestrator.rewards import mature_rewards


def main():
    engine = make_engine(sys.argv[1])
    workers = int(sys.argv[3]) or None
    out = []
    for _ in range(2):
        t = time.perf_counter()
        report = mature_rewards(engine, as_of=date.fromisoformat(sys.argv[2]), workers=workers)
        out.append({"seconds": time.perf_counter() - t, "matured": report.matured,
                    "converted": report.converted, "value": report.value})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"runs": out, "rss_mb": peak}))


if __name__ == "__main__":  # Dask's worker processes import this module
    main()
"""


def add_events(url: str, n: int, per: float, seed: int) -> int:
    """``per`` events a customer on average from 30 days before the run day to the last
    window's end: purchases (a tenth of them returns, negative)."""
    engine = make_engine(url)
    rng = np.random.default_rng(seed + 1)
    start = datetime.combine(RUN_DAY - timedelta(days=30), datetime.min.time())
    span = (AS_OF - RUN_DAY + timedelta(days=30)).days * 86400
    total = int(n * per)
    now = datetime(2026, 12, 1)
    written = 0
    with engine.begin() as conn:
        for lo in range(0, total, 500_000):
            m = min(500_000, total - lo)
            who = rng.integers(0, n, m)
            returns = rng.random(m) < 0.1
            amount = np.round(rng.gamma(2.0, 30.0, m), 2) * np.where(returns, -1.0, 1.0)
            at = np.datetime64(start, "us") + (rng.integers(0, span, m) * 1_000_000).astype(
                "timedelta64[us]"
            )
            table = pa.table(
                {
                    "source_event_id": [f"b{lo + i}" for i in range(m)],
                    "customer_id": np.char.add("C", np.char.zfill(who.astype(str), 8)),
                    "occurred_at": pa.array(at, pa.timestamp("us")),
                    "type": np.where(returns, "return", "purchase"),
                    "amount": amount,
                    "imported_at": constant_timestamp(now, m),
                }
            )
            written += bulk.insert_arrow(conn, "event", table)
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return written


def measure(url: str, workers: int = 0) -> dict:
    child = Path(tempfile.gettempdir()) / "orch_bench_maturation_child.py"
    child.write_text(CHILD)
    out = subprocess.run(
        [sys.executable, str(child), url, AS_OF.isoformat(), str(workers)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def reset(url: str) -> None:
    """Forget the rewards of an earlier measurement (the database is reused)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM reward")
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--events-per", type=float, default=2.0, help="events per customer")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--postgres-url", default=None, help="also run on this PostgreSQL database")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--reuse", action="store_true", help="reuse a database built before")
    ap.add_argument("--repeat", type=int, default=1, help="measurements (rewards cleared between)")
    ap.add_argument(
        "--workers",
        type=int,
        action="append",
        default=None,
        help="also mature on a local Dask cluster of N workers (PostgreSQL; repeatable)",
    )
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    targets = []
    if not args.no_sqlite:
        targets.append(("sqlite", f"sqlite:///{args.out}/bench_maturation_{args.customers}.db"))
    if args.postgres_url:
        targets.append(("postgresql", normalize_url(args.postgres_url)))
    rows = []
    for backend, url in targets:
        if not args.reuse:
            print(f"{backend}: building {args.customers:,} customers ...", flush=True)
            if backend == "sqlite":
                path = Path(url.removeprefix("sqlite:///"))
                for p in path.parent.glob(path.name + "*"):
                    p.unlink()
            else:
                engine = make_engine(url)
                with engine.begin() as conn:
                    conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                engine.dispose()
            build(url, args.customers, args.seed)
            t = time.perf_counter()
            events = add_events(url, args.customers, args.events_per, args.seed)
            print(f"  events: {events:,} in {time.perf_counter() - t:.1f} s", flush=True)
        counts = [0] + (args.workers or []) if backend == "postgresql" else [0]
        for _ in range(args.repeat):
            for workers in counts:
                reset(url)
                r = measure(url, workers)
                first, again = r["runs"]
                rows.append((backend, workers, first, again, r["rss_mb"]))
                print(
                    f"  {f'{workers} Dask workers' if workers else 'one process'}: "
                    f"matured {first['matured']:,} decisions in {first['seconds']:.1f} s "
                    f"({first['matured'] / first['seconds']:,.0f}/s; {first['converted']:,} "
                    f"converted, value {first['value']:,.2f}); again: {again['seconds']:.2f} s; "
                    f"peak RSS {r['rss_mb']:.0f} MB",
                    flush=True,
                )
    print()
    print(
        f"{'backend':<12}{'workers':>8}{'matured':>12}{'seconds':>10}{'per s':>12}{'again s':>9}"
        f"{'peak MB':>9}"
    )
    for backend, workers, first, again, rss in rows:
        print(
            f"{backend:<12}{workers or 1:>8}{first['matured']:>12,}{first['seconds']:>10.1f}"
            f"{first['matured'] / first['seconds']:>12,.0f}{again['seconds']:>9.2f}{rss:>9.0f}"
        )
    print("peak MB: the coordinating process (Dask workers are processes of their own)")


if __name__ == "__main__":
    main()
