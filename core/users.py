"""Who is acting: an OIDC user (Streamlit's st.user, read by the page layer and passed in here), the
single local user when no login is configured, or the operator (the CLI, and jobs it starts: it
already holds the database credentials). Ids are stable UUIDs derived from the e-mail.

A `User` is the `actor` every writing service takes (core.permissions checks its role)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core.config import get_settings

USER_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-4f3b-9a57-1f0b6f7c2a10")
ROLES = ("viewer", "labeler", "admin")


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    name: str
    role: str
    is_local: bool = False
    is_operator: bool = False


Actor = User  # what services call the one acting; one type for people and the operator

OPERATOR_EMAIL = "operator@cli"


def user_id_for(email: str) -> uuid.UUID:
    return uuid.uuid5(USER_NAMESPACE, email.strip().lower())


def role_for(email: str) -> str:
    """Roles from ROLES="alice@x.com=admin,x.com=labeler": exact e-mail first, then domain."""
    settings = get_settings()
    email = email.strip().lower()
    domain = email.rpartition("@")[2]
    by_email, by_domain = {}, {}
    for item in filter(None, (part.strip() for part in settings.roles.split(","))):
        who, _, role = item.partition("=")
        (by_email if "@" in who else by_domain)[who.strip().lower()] = role.strip()
    return by_email.get(email) or by_domain.get(domain) or settings.default_role


def local_user() -> User:
    email = get_settings().local_user_email
    return User(id=user_id_for(email), email=email, name="Local user", role=role_for(email), is_local=True)


def oidc_user(email: str, name: str | None = None) -> User:
    return User(id=user_id_for(email), email=email, name=name or email, role=role_for(email))


def operator_user() -> User:
    """The explicit identity of the CLI and of the jobs it starts: always admin, never implied by a
    missing argument (there is no `actor=None`)."""
    return User(id=user_id_for(OPERATOR_EMAIL), email=OPERATOR_EMAIL, name="Operator (CLI)", role="admin",
                is_operator=True)


def actor_from_record(record: dict) -> User:
    """An actor rebuilt from `actor_record` (job parameters): its role is resolved again when checked."""
    email = str(record.get("email") or "")
    if record.get("operator"):
        return operator_user()
    if record.get("local"):
        return local_user() if email == local_user().email else oidc_user(email)
    return oidc_user(email, record.get("name"))


def actor_record(actor: User) -> dict:
    """What a job stores of the actor who started it (JSON-safe)."""
    return {"id": str(actor.id), "email": actor.email, "name": actor.name, "local": actor.is_local,
            "operator": actor.is_operator}
