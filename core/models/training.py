"""Training runs and the trained models they leave."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JsonType, TimestampMixin, in_values
from core.vocabulary import MODEL_TYPES, RUN_STATUSES, TASK_TYPES


class ClsTrainingRun(TimestampMixin, Base):
    __tablename__ = "cls_training_runs"
    __table_args__ = (
        CheckConstraint(in_values("model_type", MODEL_TYPES), name="model_type"),
        CheckConstraint(in_values("task_type", TASK_TYPES), name="task_type"),
        CheckConstraint(in_values("status", RUN_STATUSES), name="status"),
        Index("idx_cls_training_runs_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="SET NULL"))
    dataset_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cls_dataset_versions.id", ondelete="SET NULL")
    )
    model_type: Mapped[str] = mapped_column(String(16))
    model_size: Mapped[str] = mapped_column(String(32))
    task_type: Mapped[str] = mapped_column(String(16))
    num_classes: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    current_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_epochs: Mapped[int | None] = mapped_column(Integer)
    best_accuracy: Mapped[float | None] = mapped_column(Float)
    best_f1: Mapped[float | None] = mapped_column(Float)
    best_top5_accuracy: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    metrics_history: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    # The plan's runpod_job_id: here the cls_jobs row that runs it (RQ job id is on that row).
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("cls_jobs.id", ondelete="SET NULL"))
    checkpoint_key: Mapped[str | None] = mapped_column(Text)  # last epoch's checkpoint, for resume
    log_tail: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClsTrainedModel(TimestampMixin, Base):
    __tablename__ = "cls_trained_models"
    __table_args__ = (
        # The plan's trigger, as a partial unique index: one default per (user, model_type).
        Index(
            "uq_cls_trained_models_default",
            "user_id",
            "model_type",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    training_run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cls_training_runs.id", ondelete="SET NULL")
    )
    dataset_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cls_dataset_versions.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    model_type: Mapped[str] = mapped_column(String(16))
    model_size: Mapped[str] = mapped_column(String(32))
    timm_name: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(16))
    # The plan's *_url columns hold storage keys here (storage.url(key) makes a link).
    checkpoint_url: Mapped[str | None] = mapped_column(Text)
    onnx_url: Mapped[str | None] = mapped_column(Text)
    torchscript_url: Mapped[str | None] = mapped_column(Text)
    # Size, mean, std, interpolation, crop: ONNX inference reproduces torch's numbers with it.
    preprocessing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    num_classes: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[Any]] = mapped_column()
    class_mapping: Mapped[dict[str, Any]] = mapped_column()
    accuracy: Mapped[float | None] = mapped_column(Float)
    f1_score: Mapped[float | None] = mapped_column(Float)
    top5_accuracy: Mapped[float | None] = mapped_column(Float)
    precision_macro: Mapped[float | None] = mapped_column(Float)
    recall_macro: Mapped[float | None] = mapped_column(Float)
    confusion_matrix: Mapped[list[Any] | None] = mapped_column(JsonType)
    per_class_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Storage key of per-image class probabilities on val/test (misclassified view, thresholds).
    predictions_key: Mapped[str | None] = mapped_column(Text)
    # Saved thresholds: {"abstain": p} (single-label) or {"per_class": {name: t}} (multi-label).
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    export_check: Mapped[dict[str, Any]] = mapped_column(default=dict)  # max abs diff per format
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
