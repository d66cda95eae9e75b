"""Policy versions: create, load, promote, roll back (each change in the audit log)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, select

from orchestrator.errors import InputError, NotFound
from orchestrator.storage.models import PolicyVersion, utcnow
from orchestrator.storage.plan_repo import add_audit
from policies import POLICIES, Policy

STATUSES = ("candidate", "active", "retired", "apprentice")


def instantiate(kind: str, params: dict[str, Any], state: bytes | None) -> Policy:
    """A policy of ``kind`` with the constructor ``params`` and learned ``state``."""
    if kind not in POLICIES:
        raise InputError(f"unknown policy {kind!r}; choose one of {', '.join(sorted(POLICIES))}")
    ctor = {k: v for k, v in params.items() if k != "context_names"}
    try:
        policy = POLICIES[kind](**ctor)
        if state:
            policy.set_state(state)
    except (TypeError, ValueError) as exc:
        raise InputError(f"policy {kind!r} with params {ctor}: {exc}") from None
    if params.get("context_names"):
        policy.set_feature_names(list(params["context_names"]))
    return policy


def latest(session: Session, kind: str, statuses: tuple[str, ...]) -> PolicyVersion | None:
    return session.exec(
        select(PolicyVersion)
        .where(col(PolicyVersion.kind) == kind, col(PolicyVersion.status).in_(statuses))
        .order_by(col(PolicyVersion.id).desc())
    ).first()


def active(session: Session, kind: str | None = None) -> PolicyVersion | None:
    query = select(PolicyVersion).where(col(PolicyVersion.status) == "active")
    if kind is not None:
        query = query.where(col(PolicyVersion.kind) == kind)
    return session.exec(query.order_by(col(PolicyVersion.id).desc())).first()


def get(session: Session, version_id: int) -> PolicyVersion:
    version = session.get(PolicyVersion, version_id)
    if version is None:
        raise NotFound(f"no policy version {version_id}")
    return version


def save(
    session: Session,
    *,
    kind: str,
    policy: Policy,
    params: dict[str, Any],
    status: str,
    parent: PolicyVersion | None,
    n_new: int,
    trained_until: datetime | None,
    trained_through: date | None = None,
    ope: dict[str, Any] | None = None,
) -> PolicyVersion:
    """A new version; ``trained_until`` is the watermark of the rewards learned (when they
    matured), ``trained_through`` the latest run date of the decisions learned (the parent's if
    later): the data's date a marketer reads."""
    version = PolicyVersion(
        kind=kind,
        params=params,
        state=policy.get_state(),
        state_version=policy.state_version,
        status=status,
        trained_until=trained_until,
        trained_through=max(
            [d for d in (trained_through, parent.trained_through if parent else None) if d],
            default=None,
        ),
        n_updates=(parent.n_updates if parent else 0) + n_new,
        parent_id=parent.id if parent else None,
        ope=ope,
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    return version


def promote(session: Session, version_id: int, *, actor: str, reason: str) -> PolicyVersion:
    """Make a version active; the previously active one of any kind is retired."""
    version = get(session, version_id)
    if version.status == "active":
        raise InputError(f"policy version {version_id} is already active")
    if version.status == "apprentice":
        raise InputError(f"policy version {version_id} is an apprentice; it cannot act")
    previous = active(session)
    if previous is not None:
        previous.status = "retired"
        session.add(previous)
    version.status = "active"
    session.add(version)
    add_audit(
        session,
        actor=actor,
        action="policy.promote",
        target=f"{version.kind} v{version.id}",
        before={"active": previous.id if previous else None},
        after={"active": version.id, "reason": reason},
    )
    session.flush()
    return version


def rollback(session: Session, *, actor: str) -> PolicyVersion:
    """Retire the active version and bring back the one active before it."""
    current = active(session)
    if current is None:
        raise InputError("no active policy version to roll back")
    previous = session.exec(
        select(PolicyVersion)
        .where(col(PolicyVersion.status) == "retired", col(PolicyVersion.id) != current.id)
        .order_by(col(PolicyVersion.id).desc())
    ).first()
    if previous is None:
        raise InputError(f"policy version {current.id} is the first one; nothing to roll back to")
    current.status, previous.status = "retired", "active"
    session.add(current)
    session.add(previous)
    add_audit(
        session,
        actor=actor,
        action="policy.rollback",
        target=f"{current.kind} v{current.id}",
        before={"active": current.id},
        after={"active": previous.id},
    )
    session.flush()
    return previous
