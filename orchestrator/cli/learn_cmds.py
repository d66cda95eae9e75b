"""`orch learn`, `orch evaluate`, `orch policy ...` and `orch logs import`: the learning loop."""

from __future__ import annotations

from typing import Any

import typer

from orchestrator.cli.common import (
    actor,
    console,
    day_or_today,
    get_engine,
    new_app,
    parse_day,
    print_json,
    print_table,
    progress_bar,
    scheduler_option,
    workers_option,
)

policy_app = new_app("Policy versions: list, show, promote, roll back; the apprentice's record.")
logs_app = new_app("Historical logged decisions from another system, to warm-start a policy.")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


def _fmt(e: dict[str, float]) -> str:
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def learn(
    as_of: str | None = typer.Option(None, "--as-of", help="Mature windows closed by this date."),
    policy: str | None = typer.Option(None, "--policy", help="Train this kind, not the plan's."),
    workers: int | None = workers_option("Mature the rewards"),
    scheduler: str | None = scheduler_option("mature the rewards on"),
    as_json: bool = JSON_OPT,
) -> None:
    """Mature rewards, train a candidate incrementally, evaluate it, promote it if it wins."""
    from orchestrator.learning.learn import learn as run_learn

    day = day_or_today(as_of, option="--as-of")
    with progress_bar("maturing rewards") as update:
        report = run_learn(
            get_engine(),
            as_of=day,
            actor=actor(),
            kind=policy,
            workers=workers,
            scheduler=scheduler,
            progress=update,
        )
    if as_json:
        data = dict(report.__dict__)
        data["maturation"] = report.maturation.__dict__
        print_json(data)
        return
    m = report.maturation
    console.print(
        f"matured {m.matured:,} decisions as of {m.as_of} ({m.converted:,} converted, value "
        f"{m.value:,.2f}); {m.still_open:,} windows still open"
    )
    if report.candidate_id is not None:
        console.print(
            f"trained {report.policy} candidate v{report.candidate_id} on {report.trained_on:,} "
            "new decisions"
        )
    if report.estimates:
        print_table(
            "Off-policy estimates on the evaluation holdout (value per decision, 95% interval)",
            ["policy", "ips", "snips", "dr"],
            [
                (k, *(_fmt(v[e]) for e in ("ips", "snips", "dr")))
                for k, v in report.estimates.items()
            ],
        )
    if report.difference:
        console.print(
            f"paired DR difference, candidate - {report.difference['reference']} "
            f"(incremental value per decision): {_fmt(report.difference)}"
        )
    console.print(report.decision)
    if report.apprentice_id is not None:
        console.print(f"apprentice updated: v{report.apprentice_id}")


def evaluate(
    policies: list[str] | None = typer.Option(
        None, "--policy", help="A policy kind to evaluate (repeatable); default the plan's."
    ),
    since: str | None = typer.Option(None, "--since", help="Only decisions from this date."),
    as_json: bool = JSON_OPT,
) -> None:
    """Estimate candidate policies, the active one, the logging policy and the static ranking."""
    from orchestrator.learning.evaluate import evaluate as run_evaluate

    report = run_evaluate(
        get_engine(), kinds=policies or [], since=parse_day(since, option="--since")
    )
    if as_json:
        print_json(report.__dict__)
        return
    print_table(
        f"Policy value per decision on {report.n_decisions:,} held-out decisions over "
        f"{report.n_days} days (95% interval)",
        ["policy", "ips", "snips", "dr"],
        [(r["policy"], _fmt(r["ips"]), _fmt(r["snips"]), _fmt(r["dr"])) for r in report.rows],
    )


@policy_app.command("list")
def policy_list(as_json: bool = JSON_OPT) -> None:
    """List policy versions, newest first."""
    from sqlmodel import col, select

    from orchestrator.storage.db import session_scope
    from orchestrator.storage.models import PolicyVersion

    with session_scope(get_engine()) as s:
        rows = list(s.exec(select(PolicyVersion).order_by(col(PolicyVersion.id).desc())))
    data = [_version_dict(v) for v in rows]
    if as_json:
        print_json(data)
        return
    print_table(
        "Policy versions",
        ["id", "kind", "status", "decisions learned", "decisions through", "created", "snips"],
        [
            (
                d["id"],
                d["kind"],
                d["status"],
                f"{d['n_updates']:,}",
                d["trained_through"] or "",
                d["created_at"][:19],
                d["snips"],
            )
            for d in data
        ],
        empty="none yet: `orch learn` trains the first one",
    )


def _version_dict(v: Any) -> dict[str, Any]:
    snips = ""
    if v.ope and "difference" in v.ope:
        snips = _fmt(v.ope["difference"])
    elif v.ope and "candidate" in v.ope:
        snips = _fmt(v.ope["candidate"]["snips"])
    return {
        "id": v.id,
        "kind": v.kind,
        "status": v.status,
        "n_updates": v.n_updates,
        "trained_through": v.trained_through.isoformat() if v.trained_through else None,
        "trained_until": v.trained_until.isoformat() if v.trained_until else None,
        "created_at": v.created_at.isoformat(),
        "parent_id": v.parent_id,
        "params": {k: val for k, val in v.params.items() if k != "context_names"},
        "context_features": len(v.params.get("context_names") or []),
        "ope": v.ope,
        "snips": snips,
    }


@policy_app.command("show")
def policy_show(
    version_id: int = typer.Argument(..., help="Version id."), as_json: bool = JSON_OPT
) -> None:
    """Show one version with its off-policy estimates."""
    from orchestrator.learning import versions
    from orchestrator.storage.db import session_scope

    with session_scope(get_engine()) as s:
        data = _version_dict(versions.get(s, version_id))
    if as_json:
        print_json(data)
        return
    print_table(
        f"Policy version {version_id}",
        ["field", "value"],
        [(k, v) for k, v in data.items() if k not in ("ope", "snips")],
    )
    if data["ope"]:
        print_table(
            "Estimates when it was trained",
            ["policy", "ips", "snips", "dr"],
            [
                (k, *(_fmt(v[e]) for e in ("ips", "snips", "dr")))
                for k, v in data["ope"].items()
                if k != "difference"
            ],
        )
        diff = data["ope"].get("difference")
        if diff:
            console.print(f"paired DR difference, candidate - {diff['reference']}: {_fmt(diff)}")


@policy_app.command("promote")
def policy_promote(version_id: int = typer.Argument(..., help="Version id.")) -> None:
    """Make a version the active policy (the current one is retired)."""
    from orchestrator.learning import versions
    from orchestrator.storage.db import session_scope

    with session_scope(get_engine()) as s:
        v = versions.promote(s, version_id, actor=actor(), reason="manual")
        console.print(f"[green]active[/green]: {v.kind} v{v.id}")


@policy_app.command("rollback")
def policy_rollback() -> None:
    """Retire the active version and bring back the previous one."""
    from orchestrator.learning import versions
    from orchestrator.storage.db import session_scope

    with session_scope(get_engine()) as s:
        v = versions.rollback(s, actor=actor())
        console.print(f"[green]active[/green]: {v.kind} v{v.id}")


@policy_app.command("apprentice")
def policy_apprentice(as_json: bool = JSON_OPT) -> None:
    """How often the apprentice would have made the same choice, per run date and reason."""
    import sqlalchemy as sa

    engine = get_engine()
    with engine.connect() as conn:
        runs = conn.execute(
            sa.text("SELECT run_date, counts FROM run WHERE status = 'done' ORDER BY run_date")
        ).all()
    import orjson

    data = []
    for day, counts in runs:
        c = orjson.loads(counts) if isinstance(counts, str | bytes) else counts
        for reason, (agree, total) in (c.get("apprentice") or {}).items():
            data.append({"run_date": str(day), "reason": reason, "agree": agree, "total": total})
    if as_json:
        print_json(data)
        return
    print_table(
        "Apprentice agreement",
        ["run date", "decided by", "agreed", "decisions", "agreement"],
        [
            (
                d["run_date"],
                d["reason"],
                f"{d['agree']:,}",
                f"{d['total']:,}",
                f"{d['agree'] / max(d['total'], 1):.1%}",
            )
            for d in data
        ],
        empty="no apprentice yet: set settings.policy.apprentice in the plan",
    )


@logs_app.command("import")
def logs_import(
    file: str = typer.Argument(
        ..., help="CSV, Parquet or JSONL: action, propensity, reward, context columns."
    ),
    policy: str | None = typer.Option(None, "--policy", help="Train this kind, not the plan's."),
    fmt: str | None = typer.Option(None, "--format", help="csv, parquet or jsonl."),
    as_json: bool = JSON_OPT,
) -> None:
    """Warm-start a candidate from another system's logged decisions and estimate its value."""
    from orchestrator.learning.warm_start import import_logs

    report = import_logs(get_engine(), file, actor=actor(), kind=policy, fmt=fmt)
    if as_json:
        print_json(report.__dict__)
        return
    console.print(
        f"read {report.rows:,} logged decisions with {len(report.context_features)} context "
        f"features; trained {report.policy} candidate v{report.version_id} on "
        f"{report.trained_on:,}, held out {report.held_out:,} to evaluate"
    )
    if report.estimates:
        print_table(
            "Estimated value per decision on the held-out logs (95% interval)",
            ["policy", "ips", "snips", "dr"],
            [
                (k, *(_fmt(v[e]) for e in ("ips", "snips", "dr")))
                for k, v in report.estimates.items()
            ],
        )
    console.print(f"promote it with `orch policy promote {report.version_id}` when convinced")
