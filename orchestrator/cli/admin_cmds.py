"""Quick edits of single rules: campaigns, priorities, exclusions, caps, and the audit log."""

from __future__ import annotations

from typing import Any

import typer

from orchestrator.cli.common import (
    actor,
    console,
    get_engine,
    new_app,
    parse_day,
    print_changes,
    print_json,
    print_table,
)

campaigns_app = new_app("List, show, pause, resume and archive campaigns.")
priority_app = new_app("Set or clear a campaign's manual priority (lower wins).")
exclusions_app = new_app("Rules of the form: having received A in the last N days excludes B.")
caps_app = new_app("Frequency caps: at most N contacts per rolling D days, global or per channel.")

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _report(result: Any) -> None:
    print_changes(result.changes, none_message="no change: already so")
    if result.revision_id is not None:
        console.print(f"[dim]recorded as plan revision {result.revision_id}[/dim]")


# --- campaigns -----------------------------------------------------------------------------


@campaigns_app.command("list")
def campaigns_list(
    status: str | None = typer.Option(
        None, "--status", help="Only campaigns with this status (active, paused, archived)."
    ),
    channel: str | None = typer.Option(None, "--channel", help="Only this channel."),
    as_json: bool = JSON_OPT,
) -> None:
    """List campaigns in plan order (archived ones only with --status archived)."""
    from orchestrator.admin import current_plan

    plan = current_plan(get_engine())
    rows = [
        c
        for c in plan.campaigns
        if (status is None and c.status != "archived" or c.status == status)
        and (channel is None or c.channel == channel)
    ]
    if as_json:
        print_json([c.model_dump(mode="json") for c in rows])
        return
    print_table(
        "Campaigns",
        ["id", "name", "channel", "status", "priority", "dates", "treatments", "control"],
        [
            (
                c.id,
                c.name,
                c.channel,
                c.status,
                c.priority,
                _dates(c.start, c.end),
                ", ".join(t.id for t in c.treatments),
                f"{c.control_fraction:.0%}",
            )
            for c in rows
        ],
        empty="no campaigns (apply a plan with `orch plan apply FILE`)",
    )


def _dates(start: Any, end: Any) -> str:
    if start is None and end is None:
        return "always"
    return f"{start or '…'} → {end or '…'}"


@campaigns_app.command("show")
def campaigns_show(
    campaign_id: str = typer.Argument(..., help="Campaign id."), as_json: bool = JSON_OPT
) -> None:
    """Show one campaign with its rule and treatments."""
    from orchestrator.admin import current_plan
    from orchestrator.errors import CampaignNotFound

    plan = current_plan(get_engine())
    camp = plan.campaign(campaign_id)
    if camp is None:
        raise CampaignNotFound(campaign_id)
    if as_json:
        print_json(camp.model_dump(mode="json"))
        return
    fields = [
        ("id", camp.id),
        ("name", camp.name),
        ("channel", camp.channel),
        ("status", camp.status),
        ("dates", _dates(camp.start, camp.end)),
        ("target", camp.target),
        ("priority", camp.priority if camp.priority is not None else "(policy decides)"),
        ("measurement window", f"{camp.measurement_days} days"),
        ("cooldown", f"{camp.cooldown_days} days"),
        ("control group", f"{camp.control_fraction:.1%}"),
    ]
    excl = [
        f"{x.if_received} in last {x.days}d" for x in plan.exclusions if x.exclude == campaign_id
    ]
    fields.append(("excluded after", ", ".join(excl) or "(none)"))
    print_table(f"Campaign {camp.id}", ["field", "value"], fields)
    print_table(
        "Treatments",
        ["id", "cost", "features", "payload"],
        [(t.id, t.cost, t.features or "", t.payload or "") for t in camp.treatments],
    )


def _status_command(status: str, verb: str, doc: str) -> None:
    def command(campaign_id: str = typer.Argument(..., help="Campaign id.")) -> None:
        from orchestrator.admin import set_campaign_status

        _report(set_campaign_status(get_engine(), campaign_id, status, actor=actor()))

    command.__doc__ = doc
    campaigns_app.command(verb)(command)


_status_command("paused", "pause", "Stop choosing a campaign until it is resumed.")
_status_command("active", "resume", "Make a paused (or archived) campaign active again.")
_status_command("archived", "archive", "Retire a campaign; its history is kept.")


# --- priorities ----------------------------------------------------------------------------


@priority_app.command("set")
def priority_set(
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    priority: int = typer.Argument(..., help="1 is the highest; must be unique."),
) -> None:
    """Give a campaign a manual priority: eligible customers get it before the policy runs."""
    from orchestrator.admin import set_priority

    _report(set_priority(get_engine(), campaign_id, priority, actor=actor()))


@priority_app.command("clear")
def priority_clear(campaign_id: str = typer.Argument(..., help="Campaign id.")) -> None:
    """Remove a campaign's manual priority: the policy decides for it again."""
    from orchestrator.admin import set_priority

    _report(set_priority(get_engine(), campaign_id, None, actor=actor()))


# --- exclusions ----------------------------------------------------------------------------


@exclusions_app.command("add")
def exclusions_add(
    if_received: str = typer.Argument(..., help="Campaign whose receipt excludes."),
    exclude: str = typer.Argument(..., help="Campaign that is then excluded."),
    days: int = typer.Option(..., "--days", help="For how many days after receipt."),
) -> None:
    """Add an exclusion (or change its days)."""
    from orchestrator.admin import add_exclusion

    _report(add_exclusion(get_engine(), if_received, exclude, days, actor=actor()))


@exclusions_app.command("remove")
def exclusions_remove(
    if_received: str = typer.Argument(..., help="Campaign whose receipt excludes."),
    exclude: str = typer.Argument(..., help="Campaign that is excluded."),
) -> None:
    """Remove an exclusion."""
    from orchestrator.admin import remove_exclusion

    _report(remove_exclusion(get_engine(), if_received, exclude, actor=actor()))


@exclusions_app.command("list")
def exclusions_list(as_json: bool = JSON_OPT) -> None:
    """List exclusions."""
    from orchestrator.admin import current_plan

    rows = current_plan(get_engine()).exclusions
    if as_json:
        print_json([x.model_dump() for x in rows])
        return
    print_table(
        "Exclusions",
        ["if received", "exclude", "for days"],
        [(x.if_received, x.exclude, x.days) for x in rows],
        empty="none",
    )


# --- caps ----------------------------------------------------------------------------------


@caps_app.command("set")
def caps_set(
    max_contacts: int = typer.Option(..., "--max", help="Contacts allowed in the window."),
    per_days: int = typer.Option(..., "--per-days", help="Rolling window length in days."),
    channel: str | None = typer.Option(
        None, "--channel", help="Channel to cap; omit for the global cap."
    ),
) -> None:
    """Set a cap: at most --max contacts per rolling --per-days days."""
    from orchestrator.admin import set_cap

    _report(
        set_cap(
            get_engine(),
            channel=channel,
            max_contacts=max_contacts,
            per_days=per_days,
            actor=actor(),
        )
    )


@caps_app.command("remove")
def caps_remove(
    per_days: int = typer.Option(..., "--per-days", help="Window of the cap to remove."),
    channel: str | None = typer.Option(None, "--channel", help="Channel; omit for global."),
) -> None:
    """Remove a cap."""
    from orchestrator.admin import remove_cap

    _report(remove_cap(get_engine(), channel=channel, per_days=per_days, actor=actor()))


@caps_app.command("list")
def caps_list(as_json: bool = JSON_OPT) -> None:
    """List caps."""
    from orchestrator.admin import current_plan

    rows = current_plan(get_engine()).caps
    if as_json:
        print_json([c.model_dump() for c in rows])
        return
    print_table(
        "Frequency caps",
        ["scope", "channel", "max contacts", "per days"],
        [(c.scope, c.channel or "all", c.max, c.per_days) for c in rows],
        empty="none",
    )


# --- audit ---------------------------------------------------------------------------------


def audit(
    since: str | None = typer.Option(None, "--since", help="Only changes from this date on."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show who changed what and when."""
    from datetime import datetime

    from orchestrator.admin import list_audit

    day = parse_day(since, option="--since")
    start = datetime(day.year, day.month, day.day) if day else None
    rows = list_audit(get_engine(), since=start)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    print_table(
        "Audit log",
        ["id", "at (UTC)", "actor", "action", "target", "changes"],
        [
            (r.id, r.at.strftime("%Y-%m-%d %H:%M:%S"), r.actor, r.action, r.target, _cut(r.changes))
            for r in rows
        ],
        empty="no changes recorded",
    )


def _cut(changes: list[str], limit: int = 6) -> str:
    shown = changes[:limit]
    more = f"\n… and {len(changes) - limit} more" if len(changes) > limit else ""
    return "\n".join(shown) + more
