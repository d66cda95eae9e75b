"""The daily run's partitions on a Dask cluster (``orch run --workers N`` or ``--scheduler``).

Each partition is one task, ``orchestrator.run.run_partition(url, day, part, batch_size)``: the
worker reads the run's spec and its partition's customers from the database, decides, and writes
each batch with the partition's resume point. The coordinator only submits and waits. A worker
that dies loses its partition's uncommitted batch; the scheduler gives the task to another
worker, which resumes at the partition's last committed batch, so nothing is missing or
duplicated. ``dask.distributed`` is used rather than a hand-written pool because it brings
exactly this (task retry on worker loss, remote workers, a dashboard) and is the scale-out the
project chose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import date

import sqlalchemy as sa

from orchestrator.errors import InputError

SCHEDULER_ENV = "ORCH_DASK_SCHEDULER"


def _peak_rss_mb() -> float:
    """The calling process's peak resident memory, in MB (run on each worker)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_partitions_on_dask(
    engine: sa.Engine,
    day: date,
    token: str | None,
    parts: list[int],
    batch_size: int,
    *,
    workers: int | None,
    scheduler: str | None,
    progress: Callable[[int, int | None], None] | None,
    done_before: int,
    worker_memory: str | None = None,
) -> tuple[int, float]:
    """Run the ``parts`` of the run of ``day``; return how many workers took part and the
    largest peak memory (MB) among them."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - a dependency of the package
        raise InputError("--workers needs dask.distributed: pip install distributed") from None
    from orchestrator.run import run_partition
    from orchestrator.storage.run_repo import count_customers

    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        total = count_customers(conn)
    address = scheduler or os.environ.get(SCHEDULER_ENV)
    cluster = None
    if address:
        try:
            client = Client(address, timeout="30s")
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    else:
        # One thread per worker process: the core is numpy and the GIL would serialize threads.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        cluster = LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=worker_memory or "auto",
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
    try:
        used = len(client.scheduler_info().get("workers", {}))
        futures = [
            client.submit(
                run_partition,
                url,
                day,
                part,
                batch_size,
                token=token,
                key=f"orch-run-{day}-{token}-{part}",
                retries=2,
            )
            for part in parts
        ]
        done = done_before
        if progress:
            progress(done, total)
        for future in as_completed(futures):
            counts = future.result()
            done += int(counts.get("customers", 0))
            if progress:
                progress(done, max(total, done))
        peaks = client.run(_peak_rss_mb)
        return used, max(peaks.values(), default=0.0)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
