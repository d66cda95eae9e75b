"""The daily run's partitions, and reward maturation's ranges of customers, on a Dask cluster
(``orch run`` / ``orch learn`` with ``--workers N`` or ``--scheduler``).

Each partition is one task, ``orchestrator.run.run_partition(url, day, part, batch_size)``: the
worker reads the run's spec and its partition's customers from the database, decides, and writes
each batch with the partition's resume point. The coordinator only submits and waits. A worker
that dies loses its partition's uncommitted batch; the scheduler gives the task to another
worker, which resumes at the partition's last committed batch, so nothing is missing or
duplicated. ``dask.distributed`` is used rather than a hand-written pool because it brings
exactly this (task retry on worker loss, remote workers, a dashboard) and is the scale-out the
project chose.

Maturation's tasks are ``orchestrator.rewards.mature_partition(url, as_of, bounds)``: one range
of customers in one transaction, redone whole if its worker is lost (:func:`map_on_dask`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any, TypeVar

import sqlalchemy as sa

from orchestrator.errors import InputError

SCHEDULER_ENV = "ORCH_DASK_SCHEDULER"
T = TypeVar("T")


def _peak_rss_mb() -> float:
    """The calling process's peak resident memory, in MB (run on each worker)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def dask_client(
    workers: int | None, scheduler: str | None, worker_memory: str | None = None
) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler`` (or ``ORCH_DASK_SCHEDULER``), else of a local
    cluster of ``workers`` processes (one thread each), closed at the end."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency of the package
        raise InputError("--workers needs dask.distributed: pip install distributed") from None
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
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def engine_url(engine: sa.Engine) -> str:
    """The URL a worker connects with (password included: workers need it)."""
    return engine.url.render_as_string(hide_password=False)


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
    from dask.distributed import as_completed

    from orchestrator.run import run_partition
    from orchestrator.storage.run_repo import count_customers

    url = engine_url(engine)
    with engine.connect() as conn:
        total = count_customers(conn)
    with dask_client(workers, scheduler, worker_memory) as client:
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


def map_on_dask(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    *,
    workers: int | None,
    scheduler: str | None,
    name: str,
    on_result: Callable[[T], None] | None = None,
) -> list[T]:
    """``fn(*args)`` for each ``args`` of ``calls``, one task each (retried twice on a lost
    worker), results in the order of ``calls``; ``on_result`` sees each as it completes."""
    from dask.distributed import as_completed

    with dask_client(workers, scheduler) as client:
        futures = [
            client.submit(fn, *args, key=f"{name}-{i}", retries=2) for i, args in enumerate(calls)
        ]
        for future in as_completed(futures):
            if on_result is not None:
                on_result(future.result())
        return [f.result() for f in futures]
