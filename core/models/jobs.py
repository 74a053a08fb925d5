"""Background jobs, the users who act, and the audit trail of destructive actions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JsonType, in_values, utcnow
from core.vocabulary import JOB_QUEUES, JOB_STATUSES


class ClsJob(Base):
    """One row per background job; every long action shows its row as a progress bar."""

    __tablename__ = "cls_jobs"
    __table_args__ = (
        CheckConstraint(in_values("status", JOB_STATUSES), name="status"),
        CheckConstraint(in_values("queue", JOB_QUEUES), name="queue"),
        Index("idx_cls_jobs_status", "status"),
        Index("idx_cls_jobs_created", "created_at"),
        Index("idx_cls_jobs_parent", "parent_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. url_import, training, batch_prediction
    queue: Mapped[str] = mapped_column(String(16))
    function: Mapped[str] = mapped_column(Text)  # dotted path of the job function in jobs/
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_total: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    queue_job_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A chunk of a fanned-out job (core/jobs/fanout.py) names its parent; the parent's row is what people see.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("cls_jobs.id", ondelete="CASCADE"))


class ClsJobItem(Base):
    """What a fanned-out job did to one item (an image predicted, an archive member imported), written in
    the transaction that applied it: the primary key makes a chunk run twice (its worker died) apply
    each item once, and the parent's summary is counted from these rows, so its counts are exact."""

    __tablename__ = "cls_job_items"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_jobs.id", ondelete="CASCADE"), primary_key=True)
    item_key: Mapped[str] = mapped_column(Text, primary_key=True)  # an image id or an archive member's name
    image_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    outcome: Mapped[str] = mapped_column(String(16))
    added: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # added to the dataset
    labels: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # labels written


class ClsUser(Base):
    """People who used the app (recorded at sign-in), so core can check a user id's role:
    the role itself is computed from configuration (ROLES) at each check, never stored."""

    __tablename__ = "cls_users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class ClsAuditEvent(Base):
    """Destructive actions: who, what, when, how many rows."""

    __tablename__ = "cls_audit_events"
    __table_args__ = (Index("idx_cls_audit_events_created", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    user_email: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(Text)
    row_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
