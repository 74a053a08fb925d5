"""Roles and the audit trail.

Roles come from configuration (ROLES e-mail/domain → admin | labeler | viewer, DEFAULT_ROLE). Each
guarded service calls `require_role(session=, user_id=, role=, action=)` itself, so no page can
skip a check; a refusal names the role needed. `user_id=None` is the operator's own shell (CLI,
jobs started by an allowed user, tests): it already holds the database credentials.
Destructive actions write one `cls_audit_events` row (who, what, when, how many rows).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import get_settings
from core.errors import PermissionDenied
from core.models import ClsAuditEvent, ClsUser, utcnow
from core.users import ROLES, User, local_user, role_for

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}  # viewer < labeler < admin


def register_user(*, session: Session, user: User) -> None:
    """Record (or refresh) a signed-in user so their id can be resolved to an e-mail and role."""
    row = session.get(ClsUser, user.id)
    if row is None:
        session.add(ClsUser(id=user.id, email=user.email, name=user.name))
    else:
        row.last_seen_at, row.name = utcnow(), user.name


def role_of(*, session: Session, user_id: uuid.UUID) -> str:
    email = session.scalar(select(ClsUser.email).where(ClsUser.id == user_id))
    if email is None:
        local = local_user()
        if user_id == local.id:  # the local user is known without signing in
            return local.role
        # An id no sign-in registered: with ROLES configured it gets the least power; without them
        # every user has DEFAULT_ROLE anyway (one team, no per-person roles), so it gets that.
        return "viewer" if get_settings().roles.strip() else get_settings().default_role
    return role_for(email)


def require_role(*, session: Session, user_id: uuid.UUID | None, role: str, action: str) -> None:
    if user_id is None:
        return
    have = role_of(session=session, user_id=user_id)
    if ROLE_RANK[have] < ROLE_RANK[role]:
        raise PermissionDenied(f"{action} needs the {role} role; you are a {have}")


def can(*, session: Session, user_id: uuid.UUID | None, role: str) -> bool:
    """For pages: hide or disable what the user may not do (core still checks on the action)."""
    return user_id is None or ROLE_RANK[role_of(session=session, user_id=user_id)] >= ROLE_RANK[role]


def audit(*, session: Session, user_id: uuid.UUID | None, action: str, target_type: str | None = None,
          target_id: Any = None, row_count: int = 0, details: dict | None = None) -> None:
    """One row per destructive action, written in the action's own transaction."""
    email = session.scalar(select(ClsUser.email).where(ClsUser.id == user_id)) if user_id else None
    session.add(ClsAuditEvent(user_id=user_id, user_email=email, action=action, target_type=target_type,
                              target_id=str(target_id) if target_id is not None else None,
                              row_count=row_count, details=details or {}))


def recent_audit_events(*, session: Session, limit: int = 100) -> list[ClsAuditEvent]:
    return list(session.scalars(select(ClsAuditEvent).order_by(ClsAuditEvent.created_at.desc()).limit(limit)))
