"""Benchmark of the segmentation refresh (issue 6: 1M customers, 10M events, <= 120 s, <= 4 GB).

Builds a seeded database straight into the tables (not timed): customers whose purchases follow a
BG/NBD process over two years, gamma-gamma order values, same-day repeat baskets, returns and
visits, to ``--events`` events in all. Then times ``refresh_segments`` twice in child processes (so
peak RSS is the refresh's own): a first refresh on an empty ``customer_features`` and
``segment_history``, and a second one a week later that compares with the open history rows.

    python benchmarks/bench_segments.py                                  # 1M / 10M on SQLite
    python benchmarks/bench_segments.py --customers 100000 --events 1000000
    python benchmarks/bench_segments.py --postgres-url postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/bench_segments.py --profile                        # cProfile the refresh

The SQLite database is cached in ``benchmarks/out/`` (keyed by size and seed) and copied before
each measurement, so repeated runs skip the set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.storage.bulk import copy_arrow, deferred_indexes  # noqa: E402
from orchestrator.storage.db import init_schema, make_engine, normalize_url  # noqa: E402

AS_OF = date(2026, 11, 1)
SECOND_AS_OF = AS_OF + timedelta(days=7)
WINDOW_DAYS = 730
OUT = ROOT / "benchmarks" / "out"
CATEGORIES = ["apparel", "shoes", "beauty", "home", "sports"]
CHANNELS = ["store", "web", "app"]
# Daily BG/NBD and gamma-gamma parameters of the simulated shop.
R, ALPHA, A, B = 0.8, 40.0, 1.2, 4.0
P, Q, V = 5.0, 4.0, 18.0


def _ts(day0: np.datetime64, offsets_s: np.ndarray) -> pa.Array:
    return pa.array(day0 + offsets_s.astype("timedelta64[s]"), type=pa.timestamp("us"))


def generate(n: int, n_events: int, seed: int) -> tuple[pa.Table, pa.Table]:
    """Seeded customers and events (Arrow tables named as the database columns)."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("C", np.char.zfill(np.arange(n).astype("U8"), 8))
    start = np.datetime64(AS_OF - timedelta(days=WINDOW_DAYS), "s")
    horizon_s = (WINDOW_DAYS + 14) * 86400  # events run a little past AS_OF (for the 2nd refresh)

    buyer = rng.random(n) >= 0.08
    first_s = rng.integers(0, WINDOW_DAYS * 86400, size=n)
    lam = rng.gamma(R, 1.0 / ALPHA, size=n) / 86400.0  # purchases per second
    p = rng.beta(A, B, size=n)
    exposure = horizon_s - first_s
    n_arrivals = np.where(buyer, rng.poisson(lam * exposure), 0)
    n_arrivals = np.minimum(n_arrivals, 400)
    death = rng.geometric(p)  # dies right after its death-th repeat purchase
    repeats = np.minimum(n_arrivals, death)
    # Arrival times of a Poisson process given its count are sorted uniforms; keep the first ones.
    owner = np.repeat(np.arange(n), n_arrivals)
    u = rng.random(len(owner))
    order = np.lexsort((u, owner))
    u = u[order]
    starts = np.concatenate(([0], np.cumsum(n_arrivals)[:-1]))
    rank = np.arange(len(owner)) - starts[owner]
    keep = rank < repeats[owner]
    rep_owner = owner[keep]
    rep_s = first_s[rep_owner] + (u[keep] * exposure[rep_owner]).astype(np.int64)
    buyers = np.flatnonzero(buyer)
    p_owner = np.concatenate((buyers, rep_owner))
    p_s = np.concatenate((first_s[buyers], rep_s))
    # A few baskets split in two on the same day.
    split = rng.random(len(p_owner)) < 0.05
    p_owner = np.concatenate((p_owner, p_owner[split]))
    p_s = np.concatenate((p_s, p_s[split] + rng.integers(60, 3600, size=int(split.sum()))))
    nu = rng.gamma(Q, 1.0 / V, size=n)
    amount = np.round(rng.gamma(P, 1.0 / nu[p_owner]), 2)
    amount = np.maximum(amount, 0.5)
    n_p = len(p_owner)
    discount = np.where(rng.random(n_p) < 0.3, rng.choice([0.1, 0.2, 0.3], size=n_p), 0.0)
    fav_cat = rng.integers(0, len(CATEGORIES), size=n)
    cat = np.where(rng.random(n_p) < 0.6, fav_cat[p_owner], rng.integers(0, 5, size=n_p))
    fav_ch = rng.integers(0, len(CHANNELS), size=n)
    ch = np.where(rng.random(n_p) < 0.7, fav_ch[p_owner], rng.integers(0, 3, size=n_p))

    returned = rng.random(n_p) < 0.06
    r_s = p_s + rng.integers(7 * 86400, 28 * 86400, size=n_p)
    returned &= (r_s < horizon_s) & (p_s < horizon_s)
    r_owner, r_s = p_owner[returned], r_s[returned]
    r_amount = -np.round(amount[returned] * rng.uniform(0.3, 1.0, size=len(r_owner)), 2)

    n_v = max(0, n_events - n_p - len(r_owner))
    v_owner = rng.integers(0, n, size=n_v)
    v_s = rng.integers(0, horizon_s, size=n_v)

    owner_all = np.concatenate((p_owner, r_owner, v_owner))
    secs = np.concatenate((p_s, r_s, v_s))
    kind = np.concatenate(
        (np.zeros(n_p, np.int8), np.ones(len(r_owner), np.int8), np.full(n_v, 2, np.int8))
    )
    amt = np.concatenate((amount, r_amount, np.zeros(n_v)))
    disc = np.concatenate((discount, np.zeros(len(r_owner)), np.zeros(n_v)))
    cat_all = np.concatenate(
        (cat, cat[returned], rng.integers(0, 5, size=n_v)),
    )
    ch_all = np.concatenate((ch, ch[returned], rng.integers(1, 3, size=n_v)))
    inside = secs < horizon_s
    order = np.argsort(secs[inside], kind="stable")
    sel = np.flatnonzero(inside)[order][:n_events]
    m = len(sel)
    events = pa.table(
        {
            "source_event_id": pa.array(
                np.char.add("E", np.char.zfill(np.arange(m).astype("U9"), 9))
            ),
            "customer_id": pa.array(ids[owner_all[sel]]),
            "occurred_at": _ts(start, secs[sel]),
            "type": pa.DictionaryArray.from_arrays(
                pa.array(kind[sel]), pa.array(["purchase", "return", "visit"])
            ).cast(pa.string()),
            "amount": pa.array(amt[sel]),
            "discount": pa.array(disc[sel]),
            "category": pa.DictionaryArray.from_arrays(
                pa.array(cat_all[sel].astype(np.int8)), pa.array(CATEGORIES)
            ).cast(pa.string()),
            "channel": pa.DictionaryArray.from_arrays(
                pa.array(ch_all[sel].astype(np.int8)), pa.array(CHANNELS)
            ).cast(pa.string()),
            "imported_at": _ts(np.datetime64(AS_OF, "s"), np.zeros(m, np.int64)),
        }
    )
    now = _ts(np.datetime64(AS_OF, "s"), np.zeros(n, np.int64))
    customers = pa.table(
        {
            "customer_id": pa.array(ids),
            "attributes": pa.array(np.full(n, "{}")),
            "created_at": now,
            "updated_at": now,
        }
    )
    return customers, events


def _insert(conn: sa.Connection, table: str, data: pa.Table) -> None:
    if conn.dialect.name == "postgresql":
        copy_arrow(conn, table, data)
        return
    raw = conn.connection.driver_connection
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    marks = ", ".join("?" for _ in data.column_names)
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    step = 500_000
    for lo in range(0, data.num_rows, step):
        part = data.slice(lo, step)
        columns = []
        for col in part.itercolumns():
            if pa.types.is_timestamp(col.type):
                col = pc.cast(col, pa.string())
            columns.append(col.to_pylist())
        raw.executemany(sql, zip(*columns, strict=True))


def build(url: str, n: int, n_events: int, seed: int) -> None:
    """Create the schema and write the seeded customers and events (not timed)."""
    t0 = time.perf_counter()
    customers, events = generate(n, n_events, seed)
    print(
        f"  generated {customers.num_rows:,} customers, {events.num_rows:,} events "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    engine = make_engine(url)
    init_schema(engine)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        _insert(conn, "customer", customers)
        with deferred_indexes(conn, "event"):
            _insert(conn, "event", events)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    print(f"  written in {time.perf_counter() - t0:.1f} s", flush=True)


def child(url: str, as_of: str, profile: str | None) -> None:
    """Run one refresh and print its figures as JSON (in a child process: RSS is its own)."""
    from orchestrator.segments import SegmentConfig, refresh_segments

    engine = make_engine(url)
    t0 = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(
            refresh_segments, engine, as_of=date.fromisoformat(as_of), config=SegmentConfig()
        )
        prof.dump_stats(profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
    else:
        result = refresh_segments(engine, as_of=date.fromisoformat(as_of), config=SegmentConfig())
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(peak_mib),
                "customers": result.customers,
                "purchasers": result.purchasers,
                "history_changes": result.history_changes,
                "timings": {k: round(v, 2) for k, v in result.timings.items()},
            }
        )
    )


def _build_in_child(url: str, args: argparse.Namespace) -> None:
    """Build in a child process: a measuring child inherits its parent's peak RSS on Linux
    (``ru_maxrss`` survives exec), so the parent must never hold the generated data."""
    sizes = [str(args.customers), str(args.events), str(args.seed)]
    subprocess.run([sys.executable, __file__, "--build", url, *sizes], check=True)


def measure(url: str, label: str, profile: bool) -> None:
    for as_of in (AS_OF, SECOND_AS_OF):
        args = [sys.executable, __file__, "--child", url, as_of.isoformat()]
        if profile:
            args += ["--profile-out", str(OUT / f"segments_{label}_{as_of}.prof")]
        out = subprocess.run(args, check=True, capture_output=True, text=True)
        if profile:
            print(out.stdout)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{label:10} refresh as of {as_of}: {figures['customers']:,} customers "
            f"({figures['purchasers']:,} with purchases), entering a new segment: "
            f"{figures['history_changes']}, {figures['seconds']:.1f} s, peak RSS "
            f"{figures['peak_rss_mib']:,} MiB",
            flush=True,
        )
        print(f"{'':10} stages: {figures['timings']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument(
        "--postgres-schema", default=None, help="Build once into this schema and keep it."
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the refreshes.")
    parser.add_argument("--child", nargs=2, metavar=("URL", "AS_OF"), help=argparse.SUPPRESS)
    parser.add_argument("--build", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.profile_out)
        return
    if args.build:
        url, n, n_events, seed = args.build
        build(url, int(n), int(n_events), int(seed))
        return

    print(f"segments refresh: {args.customers:,} customers, {args.events:,} events", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.skip_sqlite:
        cached = OUT / f"bench_segments_{args.customers}_{args.events}_{args.seed}.db"
        if not cached.exists():
            print(f"building {cached.name} (not timed)", flush=True)
            partial = cached.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _build_in_child(f"sqlite:///{partial}", args)
            partial.rename(cached)
        work = OUT / "bench_segments_work.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(cached, work)
        os.sync()  # flush the copy now, not while the refresh reads
        try:
            measure(f"sqlite:///{work}", "sqlite", args.profile)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work}{suffix}").unlink(missing_ok=True)
    if args.postgres_url:
        _postgres(args)


def _postgres(args: argparse.Namespace) -> None:
    """Measure in a fresh schema (dropped afterwards), or in ``--postgres-schema`` (kept, built
    once, its features and history cleared before each measurement)."""
    keep = args.postgres_schema is not None
    schema = args.postgres_schema or f"bench_segments_{uuid.uuid4().hex[:8]}"
    admin = make_engine(args.postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    url = sa.make_url(normalize_url(args.postgres_url))
    url = url.set(query={**dict(url.query), "options": f"-csearch_path={schema}"})
    pg_url = url.render_as_string(hide_password=False)
    try:
        engine = make_engine(pg_url)
        with engine.connect() as conn:
            built = conn.exec_driver_sql("SELECT to_regclass('event') IS NOT NULL").scalar()
            built = built and conn.exec_driver_sql("SELECT count(*) FROM event").scalar()
        if built:
            with engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM customer_features")
                conn.exec_driver_sql("DELETE FROM segment_history")
                conn.exec_driver_sql("DELETE FROM plan_setting WHERE key = 'segments_model'")
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM")
        else:
            print(f"building the PostgreSQL schema {schema} (not timed)", flush=True)
            _build_in_child(pg_url, args)
        engine.dispose()
        measure(pg_url, "postgresql", args.profile)
    finally:
        if not keep:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
