"""Who is acting: an OIDC user (Streamlit's st.user, read by the page layer and passed in here) or
the single local user when no login is configured. Ids are stable UUIDs derived from the e-mail."""

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
