"""The ORM's foundation: Base with the naming convention and the Postgres extensions created before
the tables, the portable JSON type (JSONB on Postgres), timestamps and the CHECK helper every table
module uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DDL, JSON, DateTime, MetaData, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def in_values(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


POSTGRES_EXTENSIONS = ("pg_trgm",)
"""Postgres extensions the schema needs (trigram indexes for the Images page search); created before the tables
by create_all (the listener below) and by the migration (migrations/env.py)."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION, info={"postgres_extensions": POSTGRES_EXTENSIONS})
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


for _extension in POSTGRES_EXTENSIONS:
    event.listen(Base.metadata, "before_create",
                 DDL(f"CREATE EXTENSION IF NOT EXISTS {_extension}").execute_if(dialect="postgresql"))


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


# ---------------------------------------------------------------- classification image library


# ---------------------------------------------------------------- classes and datasets


# ---------------------------------------------------------------- training and models


# ---------------------------------------------------------------- jobs and audit


# ---------------------------------------------------------------- platform source tables
# In a real deployment these are the platform's existing tables; here migrations create them and
# `python -m core demo` fills them.


