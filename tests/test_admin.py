"""Plan apply/diff/export and the imperative admin edits, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from orchestrator import admin
from orchestrator.errors import CampaignNotFound, InputError, NotFound, PlanError
from orchestrator.storage.models import AuditLog, PlanRevision, Treatment

SMALL = Path(__file__).parent / "data" / "plan_small.yaml"


@pytest.fixture
def applied(engine: sa.Engine) -> sa.Engine:
    admin.apply_plan_file(engine, SMALL, actor="ana")
    return engine


def _count(engine: sa.Engine, model: type) -> int:
    with Session(engine) as s:
        return len(s.exec(select(model)).all())


def test_apply_records_revision_and_audit(engine: sa.Engine) -> None:
    result = admin.apply_plan_file(engine, SMALL, actor="ana")
    assert any(str(c).startswith("+ campaign birthday") for c in result.changes)
    assert result.revision_id is not None
    [entry] = admin.list_audit(engine)
    assert (entry.actor, entry.action, entry.revision_id) == ("ana", "plan.apply", 1)
    assert "+ campaign winback" in "\n".join(entry.changes)


def test_export_then_apply_changes_nothing(applied: sa.Engine, tmp_path: Path) -> None:
    exported = tmp_path / "exported.yaml"
    exported.write_text(admin.export_plan(applied))
    assert admin.diff_plan_file(applied, exported) == []
    result = admin.apply_plan_file(applied, exported, actor="ana")
    assert result.changes == [] and result.revision_id is None
    assert _count(applied, PlanRevision) == 1


def test_diff_shows_field_changes_and_apply_writes_them(applied: sa.Engine, tmp_path: Path) -> None:
    edited = tmp_path / "plan.yaml"
    edited.write_text(
        SMALL.read_text()
        .replace("control_fraction: 0.15", "control_fraction: 0.2")
        .replace(
            "{if_received: winback, exclude: discount, days: 30}",
            "{if_received: winback, exclude: discount, days: 45}",
        )
    )
    changes = [str(c) for c in admin.diff_plan_file(applied, edited)]
    assert changes == [
        "~ campaign winback.control_fraction: 0.15 -> 0.2",
        "~ exclusion winback -> discount.days: 30 -> 45",
    ]
    admin.apply_plan_file(applied, edited, actor="bo")
    plan = admin.current_plan(applied)
    assert plan.campaign("winback").control_fraction == 0.2
    assert plan.exclusions[0].days == 45
    assert admin.list_audit(applied)[-1].actor == "bo"


def test_a_campaign_left_out_is_archived_not_deleted(applied: sa.Engine, tmp_path: Path) -> None:
    text = SMALL.read_text()
    without = text[: text.index("  - id: winback")] + "exclusions: []\n"
    path = tmp_path / "plan.yaml"
    path.write_text(without)
    changes = [str(c) for c in admin.apply_plan_file(applied, path, actor="ana").changes]
    assert "~ campaign winback.status: 'active' -> 'archived'" in changes
    assert "winback" not in admin.export_plan(applied)
    assert "winback" in admin.export_plan(applied, include_archived=True)
    assert admin.current_plan(applied).campaign("winback").status == "archived"
    # Applying the export again changes nothing; resuming brings it back.
    path.write_text(admin.export_plan(applied))
    assert admin.apply_plan_file(applied, path, actor="ana").changes == []
    admin.set_campaign_status(applied, "winback", "active", actor="ana")
    assert "winback" in admin.export_plan(applied)


def test_removed_treatment_is_retired_and_kept(applied: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        SMALL.read_text().replace(
            "      - {id: pct10, cost: 0.01, features: {discount: 0.10, kind: discount}, "
            "payload: {template: spring-10}}\n",
            "",
        )
    )
    assert "- campaign discount treatment pct10" in [
        str(c) for c in admin.apply_plan_file(applied, path, actor="ana").changes
    ]
    with Session(applied) as s:
        row = s.get(Treatment, ("discount", "pct10"))
    assert row is not None and row.status == "retired" and row.cost == 0.01
    assert [t.id for t in admin.current_plan(applied).campaign("discount").treatments] == ["pct20"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("control_fraction: 0.15", "control_fraction: 1.5"),
        ("exclude: discount", "exclude: winback"),
        ("p_alive > 0.2", "p_alivee > 0.2"),
        ("policy: {name: uniform}", "policy: {name: magic}"),
    ],
)
def test_bad_plan_leaves_database_exactly_as_before(
    applied: sa.Engine, tmp_path: Path, snapshot, old: str, new: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SMALL.read_text().replace(old, new, 1).replace("days: 30", "days: 31"))
    before = snapshot(applied)
    with pytest.raises(PlanError):
        admin.apply_plan_file(applied, path, actor="eve")
    assert snapshot(applied) == before


def test_pause_resume_archive_are_audited(applied: sa.Engine) -> None:
    admin.set_campaign_status(applied, "discount", "paused", actor="ana")
    assert admin.current_plan(applied).campaign("discount").status == "paused"
    again = admin.set_campaign_status(applied, "discount", "paused", actor="ana")
    assert again.changes == [] and again.revision_id is None
    admin.set_campaign_status(applied, "discount", "active", actor="ana")
    entries = admin.list_audit(applied)
    assert [e.action for e in entries] == ["plan.apply", "campaign.pause", "campaign.resume"]
    assert entries[1].changes == ["~ campaign discount.status: active -> paused"]


def test_priority_set_and_clear(applied: sa.Engine, snapshot) -> None:
    admin.set_priority(applied, "winback", 2, actor="ana")
    assert admin.current_plan(applied).campaign("winback").priority == 2
    before = snapshot(applied)
    with pytest.raises(InputError, match="priority 2 is already given to 'winback'"):
        admin.set_priority(applied, "discount", 2, actor="ana")
    with pytest.raises(CampaignNotFound, match="no campaign with id 'nope'"):
        admin.set_priority(applied, "nope", 3, actor="ana")
    with pytest.raises(InputError, match="priority must be 1 or more"):
        admin.set_priority(applied, "discount", 0, actor="ana")
    assert snapshot(applied) == before
    admin.set_priority(applied, "winback", None, actor="ana")
    assert admin.current_plan(applied).campaign("winback").priority is None


def test_exclusions_add_remove(applied: sa.Engine, snapshot) -> None:
    admin.add_exclusion(applied, "birthday", "discount", 14, actor="ana")
    pairs = {(x.if_received, x.exclude, x.days) for x in admin.current_plan(applied).exclusions}
    assert ("birthday", "discount", 14) in pairs
    before = snapshot(applied)
    with pytest.raises(PlanError, match="cannot exclude itself"):
        admin.add_exclusion(applied, "birthday", "birthday", 14, actor="ana")
    with pytest.raises(CampaignNotFound):
        admin.add_exclusion(applied, "birthday", "ghost", 14, actor="ana")
    with pytest.raises(InputError, match="days"):
        admin.add_exclusion(applied, "birthday", "winback", 0, actor="ana")
    with pytest.raises(NotFound, match="no exclusion"):
        admin.remove_exclusion(applied, "discount", "birthday", actor="ana")
    assert snapshot(applied) == before
    admin.remove_exclusion(applied, "birthday", "discount", actor="ana")
    assert len(admin.current_plan(applied).exclusions) == 1


def test_caps_set_change_remove(applied: sa.Engine, snapshot) -> None:
    admin.set_cap(applied, channel="sms", max_contacts=1, per_days=14, actor="ana")
    admin.set_cap(applied, channel=None, max_contacts=4, per_days=7, actor="ana")
    caps = {c.key: c.max for c in admin.current_plan(applied).caps}
    assert caps[("channel", "sms", 14)] == 1 and caps[("global", "", 7)] == 4
    before = snapshot(applied)
    with pytest.raises(InputError, match="greater than or equal to 1"):
        admin.set_cap(applied, channel=None, max_contacts=-1, per_days=7, actor="ana")
    with pytest.raises(NotFound):
        admin.remove_cap(applied, channel="push", per_days=7, actor="ana")
    assert snapshot(applied) == before
    admin.remove_cap(applied, channel="sms", per_days=14, actor="ana")
    assert ("channel", "sms", 14) not in {c.key for c in admin.current_plan(applied).caps}


def test_audit_since_filters(applied: sa.Engine) -> None:
    from datetime import datetime, timedelta

    assert admin.list_audit(applied, since=datetime.utcnow() + timedelta(days=1)) == []
    assert len(admin.list_audit(applied, since=datetime(2000, 1, 1))) == 1
    with Session(applied) as s:
        entry = s.exec(select(AuditLog)).one()
    assert entry.after["campaign birthday"].startswith("email, 1 treatment, priority 1")


def test_validating_a_small_file_reports_no_problem_of_campaigns_it_leaves_out(
    engine: sa.Engine, tmp_path: Path
) -> None:
    # The stored plan declares attributes its rules use; a new file declares none and names
    # one campaign. The others would be archived: their rules are not the file's problems.
    examples = Path(__file__).resolve().parent.parent / "examples" / "plan.yaml"
    admin.apply_plan_file(engine, examples, actor="ana")
    path = tmp_path / "small.yaml"
    path.write_text(
        "version: 1\ncampaigns:\n  - id: hello\n    channel: email\n"
        "    target: \"lifecycle_stage == 'active'\"\n    treatments: [{id: a}]\n"
    )
    plan = admin.validate_plan_file(path, engine=engine)
    assert [c.id for c in plan.campaigns] == ["hello"]
    # A problem of the file itself is still found, at its own line.
    path.write_text(path.read_text().replace("lifecycle_stage", "lifecycle_stag"))
    with pytest.raises(PlanError, match=r"small.yaml:5: campaigns\[0\] \(hello\).target: unknown"):
        admin.validate_plan_file(path, engine=engine)
