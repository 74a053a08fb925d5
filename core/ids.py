"""Ids from users, URLs and forms: one parser, one message."""

from __future__ import annotations

import uuid

from core.errors import InvalidInput


def as_uuid(value, what: str) -> uuid.UUID:
    """`value` as a UUID (a UUID passes through), else InvalidInput naming `what`."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not a valid id (ids are UUIDs)") from None
