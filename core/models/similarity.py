"""Embedding indexes: one row per embedding model over the library (core/similarity/). The vectors
themselves are float16 shards in object storage; the row lists them and says how many are valid."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, TimestampMixin, in_values

EMBEDDING_INDEX_STATUSES = ("empty", "building", "ready", "failed")


class ClsEmbeddingIndex(TimestampMixin, Base):
    __tablename__ = "cls_embedding_indexes"
    __table_args__ = (
        CheckConstraint(in_values("status", EMBEDDING_INDEX_STATUSES), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # What makes the vectors: "model:<trained model id>" or "timm:<family>/<size>[@<weights>]"; one
    # index per source, so a second run extends the first.
    source: Mapped[str] = mapped_column(Text, unique=True)
    model_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cls_trained_models.id", ondelete="SET NULL"))
    timm_name: Mapped[str] = mapped_column(String(128))
    preprocessing: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    dim: Mapped[int | None] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # [{"vectors": key, "ids": key, "count": n}, ...]: shard objects are only ever appended to, so the
    # first `count` rows of each are final; a reader reads no further than the row says.
    shards: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    status: Mapped[str] = mapped_column(String(16), default="empty", server_default="empty")
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("cls_jobs.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
