"""`orch simulate` and `orch demo`: the engine against a simulated world, closed loop."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import typer

from orchestrator.cli.common import console, err_console, plain_progress, print_json, print_table
from orchestrator.errors import InputError

FORMATS = ("table", "json")
COMPARISON_COLUMNS = (
    "policy",
    "per customer-day",
    "total",
    "of oracle",
    "vs best single",
    "vs static",
    "1st promotion",
    "sends/day",
)


def _progress_bars(names: list[str], days: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    tasks = {name: progress.add_task(name, total=days) for name in names}

    def update(name: str, done: int, total: int) -> None:
        progress.update(tasks[name], completed=done, total=total)

    return progress, update


def _simulate_with_progress(spec: Any, names: list[str], n_days: int, **options: Any) -> Any:
    """Run the loop with a progress bar per contender; keep results.json and the learning
    curve in ``out_dir`` when there is one."""
    from simulations.loop import simulate as run_simulation
    from simulations.plot import learning_curve

    plain = plain_progress()
    if plain is not None:
        result = run_simulation(spec, names, progress=plain, **options)
    else:
        progress, update = _progress_bars(names, n_days)
        with progress:
            result = run_simulation(spec, names, progress=update, **options)
    out = options.get("out_dir")
    if out is not None:
        (out / "results.json").write_text(json.dumps(result.to_json(), indent=2))
        learning_curve(result, out / "learning_curve.png")
    return result


def comparison_rows(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of the comparison table from ``SimulationResult.to_json()``."""
    pols = data["policies"]
    best = pols.get("best-single", {}).get("incremental_value")
    static = pols.get("static", {}).get("incremental_value")
    rows = []
    order = sorted(pols, key=lambda k: -pols[k]["incremental_value"])
    for name in order:
        p = pols[name]
        value = p["incremental_value"]
        share = p["share_of_oracle"]

        def ratio(ref: float | None, value: float = value) -> str:
            if ref is None or ref <= 0:
                return "-"
            return f"{value / ref:.2f}×"

        rows.append(
            (
                name,
                f"{p['value_per_customer_day']:+.4f}",
                f"{value:+,.0f}",
                "-" if share is None else f"{share:.0%}",
                ratio(best),
                ratio(static),
                "-" if p["first_promotion_day"] is None else str(p["first_promotion_day"]),
                f"{sum(p['daily']['sends']) / max(len(p['daily']['sends']), 1):,.0f}",
            )
        )
    return rows


def print_comparison(data: dict[str, Any]) -> None:
    lo, hi = data["measured_days"]
    print_table(
        f"{data['scenario']}: {data['customers']:,} customers, days {lo}-{hi} of {data['days']} "
        f"(seed {data['seed']}); true incremental value of what each policy sent",
        COMPARISON_COLUMNS,
        comparison_rows(data),
        justify={c: "right" for c in ("per customer-day", "total", "of oracle", "sends/day")},
    )


def simulate(
    scenario: str = typer.Argument(..., help="A scenario name (see --list) or a YAML file."),
    policies: list[str] = typer.Option(
        [],
        "--policy",
        "-p",
        help="A contender (repeatable): uniform, static, best-single, egreedy, lints, vw, oracle.",
    ),
    customers: int | None = typer.Option(None, "--customers", help="Customers (scenario's)."),
    days: int | None = typer.Option(None, "--days", help="Simulated days (scenario's)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the world (scenario's)."),
    measure_from: int | None = typer.Option(
        None, "--measure-from", help="First day counted in totals (default: drift day or half)."
    ),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    out: Path | None = typer.Option(
        None, "--out", help="Keep the databases, results.json and learning_curve.png here."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Parallel processes (CPUs)."),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="A PostgreSQL server URL: one database per contender there (default SQLite files).",
    ),
    replay: bool = typer.Option(
        False,
        "--replay",
        help="Off-policy replay instead: log the first --policy (default uniform), then estimate "
        "static, best-single, uniform, no-send and oracle on its logs (ips, dm, dr) and compare "
        "with their true values: bias and interval coverage per estimator.",
    ),
) -> None:
    """Run contenders through the closed loop on a simulated world and compare them."""
    from simulations.loop import CONTENDERS
    from simulations.scenario import load_scenario

    if fmt not in FORMATS:
        raise InputError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    names = list(dict.fromkeys(policies or ["static", "best-single", "lints", "oracle"]))
    for name in names:
        if name not in CONTENDERS:
            raise InputError(
                f"--policy: unknown contender {name!r}; choose from {', '.join(CONTENDERS)}"
            )
    spec = load_scenario(scenario)
    n_days = days or spec.days
    if replay:
        _replay(spec, (policies or ["uniform"])[0], customers, n_days, seed, database_url, out, fmt)
        return
    result = _simulate_with_progress(
        spec,
        names,
        n_days,
        customers=customers,
        days=days,
        seed=seed,
        measure_from=measure_from,
        database_url=database_url,
        out_dir=out,
        workers=workers,
    )
    data = result.to_json()
    if fmt == "json":
        print_json(data)
        return
    print_comparison(data)
    if out is not None:
        console.print(f"results: {out / 'results.json'}; curve: {out / 'learning_curve.png'}")


def list_scenarios() -> None:
    """List the scenarios that ship with orch."""
    from simulations.scenario import list_scenarios as names
    from simulations.scenario import load_scenario

    rows = []
    for name in names():
        s = load_scenario(name)
        rows.append(
            (
                name,
                f"{s.customers:,}",
                s.days,
                s.drift_day if s.drift_day is not None else "-",
                s.description,
            )
        )
    print_table("Scenarios", ["name", "customers", "days", "drift day", "description"], rows)


def comparison_html(data: dict[str, Any], curve_png: bytes) -> str:
    """The demo's learning section: the curve and the comparison, as HTML."""
    from html import escape

    from orchestrator.reports.html import img

    cells = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>"
        for row in comparison_rows(data)
    )
    lo, hi = data["measured_days"]
    return (
        f"<section><h2>The engine learning: {escape(data['scenario'])} world, "
        f"{data['customers']:,} customers, {data['days']} days</h2>"
        + img(curve_png, "learning curve")
        + f"<p class='notes'>True incremental value of what each policy sent (the world knows "
        f"it), days {lo} to {hi}; the oracle sends the truly best action under the same "
        "rules.</p><table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in COMPARISON_COLUMNS)
        + f"</tr></thead><tbody>{cells}</tbody></table></section>"
    )


def demo(
    customers: int = typer.Option(20_000, "--customers", help="Customers of the world."),
    days: int = typer.Option(60, "--days", help="Simulated days."),
    policy: str = typer.Option("lints", "--policy", help="The bandit: lints, vw or egreedy."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the world (scenario's)."),
    out: Path = typer.Option(Path("out/demo"), "--out", help="Databases, report and plots."),
    workers: int | None = typer.Option(None, "--workers", help="Parallel processes (CPUs)."),
) -> None:
    """The product in a few minutes: a simulated shop run day by day, bandit vs the rest.

    Runs the `standard` world (hidden personas, twenty campaigns, a taste drift on day 30)
    through the closed loop for the bandit, the marketer's static ranking, the best single
    campaign and the oracle, each on its own SQLite database in --out; prints the comparison
    and the bandit's uplift report, and writes an HTML report that shows the engine learning.
    """
    from datetime import timedelta

    from orchestrator.cli import report_cmds
    from orchestrator.reports.render import uplift_table
    from orchestrator.reports.uplift import uplift_report
    from orchestrator.storage.db import make_engine
    from simulations.loop import LEARNERS
    from simulations.scenario import load_scenario

    if policy not in LEARNERS:
        raise InputError(f"--policy: {policy!r} is not a learning policy ({', '.join(LEARNERS)})")
    spec = load_scenario("standard")
    names = [policy, "static", "best-single", "oracle"]
    out.mkdir(parents=True, exist_ok=True)
    console.print(
        f"simulating {customers:,} customers of the '{spec.name}' world for {days} days: "
        f"{', '.join(names)}, each on its own database in {out}"
    )
    result = _simulate_with_progress(
        spec, names, days, customers=customers, days=days, seed=seed, out_dir=out, workers=workers
    )
    data = result.to_json()
    curve = out / "learning_curve.png"
    print_comparison(data)
    engine = make_engine(result.runs[policy].database_url)
    as_of = spec.start + timedelta(days=days)
    console.print(f"\nUplift of the {policy} bandit's campaigns against their control groups")
    console.print(uplift_table(uplift_report(engine, as_of=as_of)))
    report = uplift_report(engine, as_of=as_of, by=["lifecycle"], detail=True)
    html_path = out / "report.html"
    report_cmds._uplift_visual(
        engine, report, "html", str(html_path), extra=[comparison_html(data, curve.read_bytes())]
    )
    engine.dispose()
    console.print(f"\nHTML report: {html_path}  (learning curve: {curve})")


def _replay(
    spec: Any,
    logging_policy: str,
    customers: int | None,
    days: int,
    seed: int | None,
    database_url: str | None,
    out: Path | None,
    fmt: str,
) -> None:
    """`orch simulate --replay`: OPE estimators against the truth on one simulation's logs."""
    from simulations.loop import database_for
    from simulations.ope_replay import TARGETS, replay_logged

    folder = out or Path(tempfile.mkdtemp(prefix="orch-replay-"))
    folder.mkdir(parents=True, exist_ok=True)
    progress, update = _progress_bars([logging_policy], days)
    with progress:
        report = replay_logged(
            spec,
            customers=customers or spec.customers,
            days=days,
            seed=spec.seed if seed is None else seed,
            database_url=database_for(f"replay_{logging_policy}", folder, database_url),
            logging_policy=logging_policy,
            targets=TARGETS,
            progress=update,
        )
    data = report.to_json()
    if out is not None:
        (out / "replay.json").write_text(json.dumps(data, indent=2))
    if fmt == "json":
        print_json(data)
        return
    print_table(
        f"Off-policy replay on {report.decisions:,} decisions logged by {logging_policy} "
        f"({spec.name}, {days} days): value per decision relative to sending nothing",
        ["estimator", "target", "true value", "mean estimate", "bias", "rmse", "coverage"],
        [
            (
                r["estimator"],
                r["target"],
                f"{r['true_value']:+.3f}",
                f"{r['mean_estimate']:+.3f}",
                f"{r['bias']:+.3f}",
                f"{r['rmse']:.3f}",
                f"{r['coverage']:.0%} of {r['slices']}",
            )
            for r in report.rows()
        ],
        justify={c: "right" for c in ("true value", "mean estimate", "bias", "rmse")},
    )
