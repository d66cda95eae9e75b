"""`orch daemon` (the day's steps on a schedule, in the foreground) and `orch status`."""

from __future__ import annotations

from typing import Any

import typer

from orchestrator.cli.common import console, get_engine, print_json, print_table, settings


def daemon(
    at: str | None = typer.Option(
        None, "--at", help="Daily time HH:MM in the plan's time zone (default: the plan's run_at)."
    ),
    once: bool = typer.Option(
        False, "--once", help="Run the pending days now, once, as the leader, and exit."
    ),
    http_port: int | None = typer.Option(
        None,
        "--http-port",
        envvar="ORCH_HTTP_PORT",
        min=0,
        max=65535,
        help="Serve /healthz and /metrics (Prometheus) on this port.",
    ),
) -> None:
    """Run the day every day (import, segments, run, export, learn, report), catching up missed
    days; one leader among the daemons on a database. SIGTERM or Ctrl-C: stop after the batch
    in hand, exit 0."""
    from datetime import datetime

    from orchestrator.daemon.jobs import Folders, daily_job, parse_time
    from orchestrator.daemon.lease import LeaderLease, read_lease
    from orchestrator.daemon.service import Daemon, configure_logging

    s = settings()
    configure_logging(s.log_format)
    if at is not None:
        parse_time(at)  # a bad --at is a usage error before anything starts
    if once:
        engine = get_engine()
        lease = LeaderLease(engine, ttl=s.lease_seconds)
        if not lease.try_acquire():
            with engine.connect() as conn:
                held = read_lease(conn)
            who = held.holder if held else "another daemon"
            console.print(f"[red]error:[/red] {who} is the leader; stop it or wait for it")
            raise typer.Exit(1)
        try:
            outcome = daily_job(
                engine,
                now=lambda: datetime.now().astimezone(),
                batch_size=s.batch_size,
                folders=Folders.from_settings(),
                holder=lease.holder,
            )
        finally:
            lease.release()
        console.print(
            f"ran {', '.join(map(str, outcome.run_dates)) or 'nothing'}: "
            f"{outcome.decided:,} decisions; learned: {outcome.learned}"
        )
        for err in outcome.errors:
            console.print(f"[red]error:[/red] {err}", markup=True)
        if outcome.errors:
            raise typer.Exit(1)
        return
    engine = get_engine(schema=False)  # the daemon waits for the database, then checks it
    service = Daemon(engine, s, at=at, http_port=http_port)
    service.install_signal_handlers()
    code = service.serve()
    if code:
        raise typer.Exit(code)


def status(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """The daemon's state: leader, last runs and steps, next day, active policy, decisions
    waiting for rewards, lag."""
    from orchestrator.daemon.status import daemon_status

    data = daemon_status(get_engine())
    if as_json:
        print_json(data)
        return
    _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
    leader = data["leader"]
    if leader is None:
        console.print("leader: [yellow]none[/yellow] (no daemon holds the lease)")
    else:
        console.print(
            f"leader: {leader['host']} pid {leader['pid']} since {leader['since']}, renewed "
            f"{leader['renewed_seconds_ago']:.0f} s ago"
        )
    sched = data["schedule"]
    console.print(f"next day: {sched['next']} ({sched['at']} {sched['timezone']})")
    lag = data["lag_days"]
    console.print(
        f"today: {data['today']}; last finished run: {data['last_done_run'] or 'none'}"
        + ("" if lag is None else f" (lag {lag} days)")
    )
    policy = data["policy"]
    console.print(
        "active policy: none"
        if policy is None
        else f"active policy: {policy['kind']} v{policy['id']}, {policy['age_days']} days old"
    )
    waiting = data["awaiting_rewards"]
    console.print(
        f"awaiting rewards: {waiting['decisions']:,} decisions "
        f"({waiting['window_closed']:,} with their window closed)"
    )
    print_table(
        "last runs",
        ["date", "status", "decided", "seconds", "error"],
        [
            [r["date"], r["status"], f"{r['decided']:,}", r["seconds"], (r["error"] or "")[:60]]
            for r in data["runs"]
        ],
        empty="none yet",
        justify={"decided": "right", "seconds": "right"},
    )
    print_table(
        "steps (latest of each)",
        ["step", "date", "status", "attempts", "seconds", "detail"],
        [
            [
                s["job"],
                s["date"],
                s["status"],
                s["attempts"],
                s["seconds"],
                (s["error"] or s["detail"] or "")[:48],
            ]
            for s in data["steps"]
        ],
        empty="no daemon has run a day yet",
        justify={"attempts": "right", "seconds": "right"},
    )
