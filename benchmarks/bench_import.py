"""Benchmark the customer and event imports on SQLite and (optionally) PostgreSQL.

Generates seeded CSV files (customers with five attribute columns; events in time order, keyed by
content hash, with one extra column), imports each into a fresh database, then imports the events
a second time (all duplicates). Each import runs in its own process so its peak RSS is its own.
The machine should be otherwise idle: on a shared 2-core box, wall times vary twofold.

    python benchmarks/bench_import.py --rows 1000000 --postgres-url postgresql://...
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.imports import import_customers, import_events  # noqa: E402
from orchestrator.storage.db import init_schema, make_engine, normalize_url  # noqa: E402

CITIES = ["Paris", "Lyon", "Marseille", "Lille", "Nantes", 'Saint-Denis, "93"', "Zürich"]
TYPES = ["purchase", "purchase", "purchase", "visit", "refund"]
CATEGORIES = ["shoes", "bags", "coats", "beauty", "home"]
CHANNELS = ["web", "store", "app"]


@dataclass
class Result:
    dataset: str
    backend: str
    rows: int
    seconds: float
    inserted: int
    peak_rss_mib: float
    cpu_seconds: float


def generate(out: Path, rows: int, seed: int, n_customers: int | None = None) -> None:
    """Write ``events.csv`` of ``rows`` rows and ``customers.csv`` of ``n_customers`` (default:
    as many as events)."""
    rng = np.random.default_rng(seed)
    n = n_customers or rows
    ids = np.char.add("C", np.char.zfill(np.arange(n).astype(str), 8))
    signup = np.datetime64("2015-01-01") + rng.integers(0, 3650, n).astype("timedelta64[D]")
    customers = pa.table(
        {
            "customer_id": ids,
            "vip": np.where(rng.random(n) < 0.1, "yes", "no"),
            "score": np.round(rng.random(n) * 100, 2).astype(str),
            "signup": signup.astype(str),
            "city": np.asarray(CITIES)[rng.integers(0, len(CITIES), n)],
            "newsletter": np.where(rng.random(n) < 0.5, "true", ""),
        }
    )
    start = np.datetime64("2023-01-01T00:00:00")
    seconds = np.sort(rng.integers(0, 365 * 86400, rows)).astype("timedelta64[s]")
    discount = np.where(rng.random(rows) < 0.2, np.round(rng.random(rows) * 10, 2).astype(str), "")
    events = pa.table(
        {
            "customer_id": ids[rng.integers(0, n, rows)],
            "occurred_at": (start + seconds).astype(str),
            "type": np.asarray(TYPES)[rng.integers(0, len(TYPES), rows)],
            "amount": np.round(rng.gamma(2.0, 30.0, rows), 2).astype(str),
            "discount": discount,
            "category": np.asarray(CATEGORIES)[rng.integers(0, len(CATEGORIES), rows)],
            "channel": np.asarray(CHANNELS)[rng.integers(0, len(CHANNELS), rows)],
            "store_id": rng.integers(1, 400, rows).astype(str),
        }
    )
    pa_csv.write_csv(customers, str(out / "customers.csv"))
    pa_csv.write_csv(events, str(out / "events.csv"))


def _schema_url(base: str, schema: str) -> str:
    url = sa.make_url(normalize_url(base))
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


def _run(url: str, kind: str, path: str, queue: mp.Queue) -> None:
    engine = make_engine(url)
    run = import_customers if kind == "customers" else import_events
    before = resource.getrusage(resource.RUSAGE_SELF)
    report = run(engine, path)
    after = resource.getrusage(resource.RUSAGE_SELF)
    engine.dispose()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    queue.put((report.rows_read, report.seconds, report.inserted, after.ru_maxrss / 1024, cpu))


def measure(url: str, dataset: str, backend: str, kind: str, path: Path) -> Result:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(url, kind, str(path), queue))
    proc.start()
    rows, seconds, inserted, peak, cpu = queue.get()
    proc.join()
    return Result(dataset, backend, rows, seconds, inserted, peak, cpu)


def bench_backend(
    backend: str, url: str, customers: Path, events: Path, *, floor: bool = False
) -> list[Result]:
    init_schema(make_engine(url))
    results = [
        measure(url, "customers", backend, "customers", customers),
        measure(url, "events", backend, "events", events),
        measure(url, "events again (duplicates)", backend, "events", events),
    ]
    if floor:
        results.append(measure_floor(url, backend))
    return results


# --- the database's own floor -------------------------------------------------------------------
# How fast the database itself takes the rows the import wrote: the stored events, already in
# the database's text form, bulk loaded into an empty copy of the table by the backend's fastest
# path (SQLite: inserts bound from Arrow in C by the ADBC driver, in a process that never loads
# Python's sqlite3; PostgreSQL: COPY of CSV made beforehand), its plain indexes built after the
# load, as the import does for a first load, then committed. No conversion, check or hashing is
# timed: what is left is the floor any import of this table pays on this machine.

FLOOR_COLUMNS = (
    "source_event_id, customer_id, occurred_at, type, amount, discount, category, channel, "
    "extra, imported_at"
)


def _sqlite_floor(path: str, queue: mp.Queue) -> None:
    import time

    import adbc_driver_sqlite.dbapi as adbc

    con = adbc.connect(path, autocommit=True)
    cur = con.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA cache_size=-262144")  # the import's page cache
    cur.execute(f"SELECT {FLOOR_COLUMNS} FROM event ORDER BY source_event_id")
    data = cur.fetch_arrow_table()
    cur.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'event' AND sql IS NOT NULL")
    ddl = [str(row[0]) for row in cur.fetchall()]
    table_sql = next(d for d in ddl if d.upper().startswith("CREATE TABLE"))
    indexes = [d for d in ddl if d.upper().startswith("CREATE INDEX")]
    cur.execute("DROP TABLE IF EXISTS event_floor")
    cur.execute(table_sql.replace("event", "event_floor", 1))
    started = time.perf_counter()
    cur.execute("BEGIN")
    for start in range(0, data.num_rows, 70_000):
        cur.adbc_ingest("event_floor", data.slice(start, 70_000), mode="append")
    for ddl_sql in indexes:
        name = ddl_sql.split()[2]
        cur.execute(ddl_sql.replace(name, name + "_floor", 1).replace(" event ", " event_floor "))
    cur.execute("COMMIT")
    seconds = time.perf_counter() - started
    cur.execute("DROP TABLE event_floor")
    con.close()
    queue.put((data.num_rows, seconds))


def _postgres_floor(url: str, queue: mp.Queue) -> None:
    import time

    engine = make_engine(url)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        buf = bytearray()
        sql = f"COPY (SELECT {FLOOR_COLUMNS} FROM event ORDER BY source_event_id) TO STDOUT"
        with cur.copy(sql) as copy:
            for block in copy:
                buf += block
        rows = buf.count(b"\n")
        cur.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'event' "
            "AND schemaname = current_schema() AND indexdef NOT LIKE 'CREATE UNIQUE%'"
        )
        indexes = [str(row[0]) for row in cur.fetchall()]
        cur.execute("DROP TABLE IF EXISTS event_floor")
        cur.execute("CREATE TABLE event_floor (LIKE event INCLUDING DEFAULTS INCLUDING IDENTITY)")
        cur.execute("ALTER TABLE event_floor ADD UNIQUE (source_event_id)")
        raw.commit()
        started = time.perf_counter()
        with cur.copy(f"COPY event_floor ({FLOOR_COLUMNS}) FROM STDIN") as copy:
            view = memoryview(buf)
            for start in range(0, len(view), 16 << 20):
                copy.write(view[start : start + (16 << 20)])
        cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # as the import's rebuild
        for ddl_sql in indexes:
            name = ddl_sql.split()[2]
            renamed = ddl_sql.replace(name, name + "_floor", 1)
            cur.execute(re.sub(r" ON ((?:\S+\.)?)event ", r" ON \1event_floor ", renamed))
        raw.commit()
        seconds = time.perf_counter() - started
        cur.execute("DROP TABLE event_floor")
        raw.commit()
    engine.dispose()
    queue.put((rows, seconds))


def measure_floor(url: str, backend: str) -> Result:
    """The database's own time to take the stored events (see above), in its own process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    if backend == "sqlite":
        path = sa.make_url(url).database
        proc = ctx.Process(target=_sqlite_floor, args=(path, queue))
    else:
        proc = ctx.Process(target=_postgres_floor, args=(url, queue))
    proc.start()
    rows, seconds = queue.get()
    proc.join()
    return Result("events: the database's floor", backend, rows, seconds, rows, 0.0, 0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="events (and customers)")
    parser.add_argument(
        "--customers", type=int, default=None, help="customers, if not as many as events"
    )
    parser.add_argument("--postgres-url", default=os.environ.get("ORCH_TEST_POSTGRES_URL"))
    parser.add_argument("--out", type=Path, default=None, help="keep files here (default: temp)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time the database's own bulk load of the stored events (no import work)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        # Generate in a child: Linux carries the peak RSS over fork+exec, so a big parent would
        # inflate the figure of every import process it starts.
        ctx = mp.get_context("spawn")
        child = ctx.Process(target=generate, args=(out, args.rows, args.seed, args.customers))
        child.start()
        child.join()
        customers, events = out / "customers.csv", out / "events.csv"
        db = out / "bench.db"
        for leftover in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
            leftover.unlink(missing_ok=True)
        results = bench_backend("sqlite", f"sqlite:///{db}", customers, events, floor=args.floor)
        if args.postgres_url:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = make_engine(args.postgres_url)
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            try:
                url = _schema_url(args.postgres_url, schema)
                results += bench_backend("postgresql", url, customers, events, floor=args.floor)
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()
    header = f"{'dataset':<32}{'backend':<12}{'rows':>10}{'inserted':>10}{'seconds':>9}"
    print(header + f"{'rows/s':>10}{'peak RSS MiB':>14}{'client CPU s':>14}")
    for r in results:
        floor = r.dataset.endswith("floor")
        rss = f"{'-':>14}" if floor else f"{r.peak_rss_mib:>14,.0f}"
        cpu = f"{'-':>14}" if floor else f"{r.cpu_seconds:>14.2f}"
        print(
            f"{r.dataset:<32}{r.backend:<12}{r.rows:>10}{r.inserted:>10}{r.seconds:>9.2f}"
            f"{r.rows / r.seconds:>10,.0f}{rss}{cpu}"
        )
    print("client CPU: the import call in its process; wall time also counts the server's work")
    if args.floor:
        print(
            "floor: the stored events bulk loaded by the database alone into an empty copy of "
            "the table (indexes built after, committed): what any import of this table pays"
        )


if __name__ == "__main__":
    main()
