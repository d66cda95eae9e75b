"""`orch journeys`: the plan's journeys, their steps and where their customers stand."""

from __future__ import annotations

import typer

from orchestrator.cli.common import get_engine, new_app, print_json, print_table

journeys_app = new_app("Journeys: time-bound flows (welcome series, abandoned cart).")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


@journeys_app.command("list")
def journeys_list(as_json: bool = JSON_OPT) -> None:
    """List the journeys: entry, exit, steps and how many customers are in each."""
    from orchestrator.reports.journeys import journey_views

    views = journey_views(get_engine())
    if as_json:
        print_json([v.as_dict() for v in views])
        return
    print_table(
        "Journeys",
        ["id", "status", "entry", "exit", "steps", "priority", "active", "exited", "completed"],
        [
            (
                v.spec.id,
                v.spec.status,
                _trigger(v.spec.entry),
                _trigger(v.spec.exit),
                len(v.spec.steps),
                v.spec.priority if v.spec.priority is not None else "first",
                f"{v.customers.get('active', 0):,}",
                f"{v.customers.get('exited', 0):,}",
                f"{v.customers.get('completed', 0):,}",
            )
            for v in views
        ],
        empty="the plan has no journeys",
        justify={k: "right" for k in ("steps", "active", "exited", "completed")},
    )


@journeys_app.command("show")
def journeys_show(
    journey_id: str = typer.Argument(..., help="Journey id."), as_json: bool = JSON_OPT
) -> None:
    """Show a journey's steps, customers at each step, and each step's decisions."""
    from orchestrator.plan import ReentryAfter
    from orchestrator.reports.journeys import journey_views

    (view,) = journey_views(get_engine(), journey_id)
    if as_json:
        print_json(view.as_dict())
        return
    spec = view.spec
    reentry = (
        f"after {spec.reentry.after_days} days"
        if isinstance(spec.reentry, ReentryAfter)
        else "never"
    )
    print_table(
        f"Journey {spec.id}",
        ["setting", "value"],
        [
            ("entry", _trigger(spec.entry)),
            ("exit", _trigger(spec.exit)),
            ("re-entry", reentry),
            ("control fraction", f"{spec.control_fraction:.0%}"),
            ("priority", spec.priority if spec.priority is not None else "ahead of all"),
            ("caps", "exempt" if spec.cap_exempt else "apply"),
            ("customers", ", ".join(f"{k} {v:,}" for k, v in sorted(view.customers.items()))),
            (
                "test / control",
                f"{view.groups.get('test', 0):,} / {view.groups.get('control', 0):,}",
            ),  # noqa: E501
        ],
    )
    print_table(
        "Steps",
        ["step", "day", "campaign", "treatment", "when blocked", "waiting", "test", "control"],
        [
            (
                k,
                s.day,
                s.campaign,
                s.treatment or "(policy)",
                f"{s.when_blocked} ({spec.defer_days} d)" if s.when_blocked == "defer" else "skip",
                f"{view.at_step.get(k, 0):,}",
                f"{view.decisions.get(k, {}).get('test', 0):,}",
                f"{view.decisions.get(k, {}).get('control', 0):,}",
            )
            for k, s in enumerate(spec.steps, start=1)
        ],
        justify={k: "right" for k in ("step", "day", "waiting", "test", "control")},
    )


def _trigger(trigger: object) -> str:
    if trigger is None:
        return "-"
    event = getattr(trigger, "event", None)
    return f"event {event}" if event else f"rule {getattr(trigger, 'rule', '')}"
