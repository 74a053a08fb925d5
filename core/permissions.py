"""Roles and the audit trail.

Roles come from configuration (ROLES e-mail/domain → admin | labeler | viewer, DEFAULT_ROLE) and are
resolved again at every check, so a role removed meanwhile is refused at once (jobs included).

Access fails closed, in one place: a service that changes data declares its role with
`@requires("admin", "deleting images")` and takes a required keyword `actor` (a `core.users.User`:
the signed-in user, the local user, or `operator_user()` for the CLI and the jobs it starts). The
decorator checks before the service body runs, so before any write; a missing or None actor is
refused, never taken as "allowed". A service whose role depends on its arguments declares the least
role and calls `require(actor, role, action)` for the rest. `WRITE_SERVICES` lists every declared
service, for the test that discovers writers. Pages use `can_act()` only to hide what core refuses.
Destructive actions write one `cls_audit_events` row (who, what, when, how many rows).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import PermissionDenied
from core.models import ClsAuditEvent, ClsUser, utcnow
from core.users import ROLES, User, role_for

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}  # viewer < labeler < admin
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class WriteRule:
    """What a declared write service needs: the least role, and the action's words for a refusal."""
    role: str
    action: str


# "module.function" → its rule; filled as modules are imported (the discovery test imports them all).
WRITE_SERVICES: dict[str, WriteRule] = {}


def current_role(actor: User) -> str:
    """The actor's role now (configuration is read again: a changed ROLES applies to the next check)."""
    if actor.is_operator:
        return "admin"
    return role_for(actor.email)


def require(actor: User | None, role: str, action: str) -> None:
    """Refuse unless `actor` holds `role` now. No actor is refused: nothing is allowed by omission."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")
    if actor is None:
        raise PermissionDenied(f"{action} needs the {role} role; no signed-in user")
    if not isinstance(actor, User):
        raise TypeError(f"actor must be a core.users.User, not {type(actor).__name__}")
    have = current_role(actor)
    if ROLE_RANK[have] < ROLE_RANK[role]:
        raise PermissionDenied(f"{action} needs the {role} role; you are a {have}")


def requires(role: str, action: str) -> Callable[[F], F]:
    """Declare a write service's role; the wrapper checks `actor` before the body runs.

    The service must take `actor` as a required keyword-only argument (checked here, at import).
    """
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def declare(fn: F) -> F:
        parameter = inspect.signature(fn).parameters.get("actor")
        if (parameter is None or parameter.kind is not inspect.Parameter.KEYWORD_ONLY
                or parameter.default is not inspect.Parameter.empty):
            raise TypeError(f"{fn.__module__}.{fn.__qualname__} must take a required keyword-only `actor`")

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            require(kwargs.get("actor"), role, action)
            return fn(*args, **kwargs)

        guarded.write_rule = WriteRule(role, action)  # type: ignore[attr-defined]
        WRITE_SERVICES[f"{fn.__module__}.{fn.__qualname__}"] = guarded.write_rule  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return declare


def can_act(actor: User | None, role: str) -> bool:
    """For pages: hide or disable what the actor may not do (core still refuses it on the action)."""
    return actor is not None and ROLE_RANK[current_role(actor)] >= ROLE_RANK[role]


def register_user(*, session: Session, user: User) -> None:
    """Record (or refresh) a signed-in user so their id can be resolved to an e-mail and role."""
    row = session.get(ClsUser, user.id)
    if row is None:
        session.add(ClsUser(id=user.id, email=user.email, name=user.name))
    else:
        row.last_seen_at, row.name = utcnow(), user.name


def audit(*, session: Session, actor: User, action: str, target_type: str | None = None,
          target_id: Any = None, row_count: int = 0, details: dict | None = None) -> None:
    """One row per destructive action (who, what, how many), written in the action's own transaction
    by the declared service that did it (bookkeeping: the service already checked the actor)."""
    session.add(ClsAuditEvent(user_id=actor.id, user_email=actor.email, action=action, target_type=target_type,
                              target_id=str(target_id) if target_id is not None else None,
                              row_count=row_count, details=details or {}))


def recent_audit_events(*, session: Session, limit: int = 100) -> list[ClsAuditEvent]:
    return list(session.scalars(select(ClsAuditEvent).order_by(ClsAuditEvent.created_at.desc()).limit(limit)))
