"""The daemon's Prometheus metrics, all named ``orch_*``, in a registry of their own (so a
process that runs two daemons in tests does not mix their counts)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from orchestrator.daemon.jobs import StepResult

disable_created_metrics()  # no `_created` twin for every series: Prometheus does not need it


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.leader = Gauge("orch_leader", "1 while this daemon holds the leader lease", registry=r)
        self.database_up = Gauge(
            "orch_database_up", "1 when the database answered the last check", registry=r
        )
        self.steps = Counter(
            "orch_job_runs",
            "Steps of a day run, by step and outcome",
            ["job", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "orch_job_failures", "Steps that failed (each attempt), by step", ["job"], registry=r
        )
        self.duration = Histogram(
            "orch_job_duration_seconds",
            "How long each step took",
            ["job"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
            registry=r,
        )
        self.runs = Counter("orch_runs", "Daily runs finished by this daemon", registry=r)
        self.decisions = Counter(
            "orch_decisions", "Decisions written by this daemon's runs", registry=r
        )
        self.last_success = Gauge(
            "orch_job_last_success_timestamp_seconds",
            "When each step last succeeded (Unix time)",
            ["job"],
            registry=r,
        )
        self.retries = Counter("orch_day_retries", "Retries of a failed day scheduled", registry=r)

    def observe(self, result: StepResult) -> None:
        self.steps.labels(result.job_id, result.status).inc()
        self.duration.labels(result.job_id).observe(result.seconds)
        if result.status == "failed":
            self.failures.labels(result.job_id).inc()
        elif result.status in ("done", "skipped"):
            self.last_success.labels(result.job_id).set_to_current_time()
        if result.job_id == "run" and result.status == "done":
            self.runs.inc()
            self.decisions.inc(result.decided)

    def render(self) -> bytes:
        return generate_latest(self.registry)
