"""Classes, datasets and what they hold: a dataset's images, its label space, labels, label history, pins and versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, TimestampMixin, in_values, utcnow
from core.vocabulary import IMAGE_STATUSES, SPLITS, TASK_TYPES


class ClsClass(TimestampMixin, Base):
    __tablename__ = "cls_classes"
    # One shared workspace per deployment (DESIGN.md): names are unique workspace-wide,
    # not per user as in the plan's UNIQUE(user_id, name).
    __table_args__ = (UniqueConstraint("name", name="uq_cls_classes_name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    color: Mapped[str] = mapped_column(String(16), default="#3B82F6", server_default="#3B82F6")
    parent_class_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("cls_classes.id", ondelete="SET NULL")
    )
    image_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class ClsDataset(TimestampMixin, Base):
    __tablename__ = "cls_datasets"
    __table_args__ = (
        CheckConstraint(in_values("task_type", TASK_TYPES), name="task_type"),
        # Datasets are addressed by name from the CLI; one workspace, so names are unique.
        UniqueConstraint("name", name="uq_cls_datasets_name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(16), default="single_label", server_default="single_label")
    image_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    labeled_image_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Beyond the plan: labeled images without a split, kept by database triggers on labels, memberships
    # and images (core.models.dataset_aggregates); no service writes it.
    unassigned_labeled_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    class_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    split_ratios: Mapped[dict[str, Any]] = mapped_column(
        default=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        server_default=text("""'{"train": 0.8, "val": 0.1, "test": 0.1}'"""),
    )
    preprocessing: Mapped[dict[str, Any]] = mapped_column(
        default=lambda: {"image_size": 224, "normalize": True},
        server_default=text("""'{"image_size": 224, "normalize": true}'"""),
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Beyond the plan: bumped in the transaction of every write to the dataset (its images, labels,
    # splits, label space), by taking its write lock (core.datasets.locks.lock_dataset); pages include it in
    # what they cache for the dataset, so no screen shows numbers older than the last write.
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ClsDatasetClass(Base):
    """Beyond the plan: a dataset's label space, its ordered list of classes (DESIGN.md). The order
    gives the number keys (after a user's pins), the training class mapping and the export's columns;
    every class a label of the dataset uses is in it (core.datasets.label_space)."""

    __tablename__ = "cls_dataset_classes"
    __table_args__ = (
        UniqueConstraint("dataset_id", "class_id", name="uq_cls_dataset_classes_dataset_class"),
        # deleting or merging a class finds the spaces that hold it
        Index("idx_cls_dataset_classes_class", "class_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    class_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_classes.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # images of this dataset carrying the class: kept exact by the label write path (core/labeling/labels.py)
    image_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # who added it (None: an import or the migration)
    added_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class ClsDatasetImage(Base):
    __tablename__ = "cls_dataset_images"
    __table_args__ = (
        CheckConstraint(in_values("status", IMAGE_STATUSES), name="status"),
        CheckConstraint(f"split IS NULL OR {in_values('split', SPLITS)}", name="split"),
        UniqueConstraint("dataset_id", "image_id", name="uq_cls_dataset_images_dataset_image"),
        Index("idx_cls_dataset_images_dataset", "dataset_id"),
        Index("idx_cls_dataset_images_image", "image_id"),
        Index("idx_cls_dataset_images_status", "dataset_id", "status"),
        Index("idx_cls_dataset_images_split", "dataset_id", "split"),
        # The labeling queue walks (dataset, [status,] added_at, image_id) in order from a cursor.
        Index("idx_cls_dataset_images_queue", "dataset_id", "status", "added_at", "image_id"),
        Index("idx_cls_dataset_images_order", "dataset_id", "added_at", "image_id"),
        # Beyond the plan (Postgres): a rare class's images looked up by id with their order key from
        # the index alone (the dataset grid's class filter, core/datasets/grid.py).
        Index("idx_cls_dataset_images_image_order", "dataset_id", "image_id",
              postgresql_include=["added_at"]).ddl_if(dialect="postgresql"),
        # Beyond the plan: "how many of the queue do other labelers hold now" reads only live leases.
        Index("idx_cls_dataset_images_reserved", "dataset_id", "reserved_until"),
        # Beyond the plan: a page's own reservations (release, every next image) found by holder; only
        # held rows are indexed. Without it each release read all of a dataset's rows: 70-110 ms at
        # 200,000 images (bench/bench_scale.py).
        Index("idx_cls_dataset_images_holder", "reserved_by", postgresql_where=text("reserved_by IS NOT NULL"),
              sqlite_where=text("reserved_by IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_images.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    split: Mapped[str | None] = mapped_column(String(16), default="unassigned", server_default="unassigned")
    added_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    # Beyond the plan, for several labelers at once: who labeled last and when, a revision number a
    # save must match (no silent overwrite), and a short reservation in the unlabeled queue.
    labeled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    labeled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    label_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reserved_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reserved_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClsLabel(TimestampMixin, Base):
    __tablename__ = "cls_labels"
    __table_args__ = (
        # Multi-label: several rows per image, never the same class twice. Single-label's
        # "one row per image" is enforced by the labeling service under a row lock.
        UniqueConstraint("dataset_id", "image_id", "class_id", name="uq_cls_labels_dataset_image_class"),
        Index("idx_cls_labels_dataset", "dataset_id"),
        Index("idx_cls_labels_image", "dataset_id", "image_id"),
        # (Beyond the plan: with dataset and image, a rare class's images in the dataset grid are read
        # from the index alone, not from 1,000+ scattered table pages.)
        Index("idx_cls_labels_class", "class_id", "dataset_id", "image_id"),
        # Beyond the plan: "does this image carry this class in another dataset?" (class image counts)
        Index("idx_cls_labels_image_class", "image_id", "class_id"),
        # Beyond the plan: the dataset grid's "AI labels" and "not reviewed" totals walk only those
        # labels, in image order (core/datasets/grid.py; 200-330 ms -> 25-55 ms at 200,000 images).
        Index("idx_cls_labels_ai", "dataset_id", "image_id", postgresql_where=text("is_ai_generated"),
              sqlite_where=text("is_ai_generated")),
        Index("idx_cls_labels_unreviewed", "dataset_id", "image_id", postgresql_where=text("NOT is_reviewed"),
              sqlite_where=text("NOT is_reviewed")),
        # Beyond the plan: AI labels not reviewed (the review queue's total where each image has one label)
        Index("idx_cls_labels_ai_unreviewed", "dataset_id", "image_id",
              postgresql_where=text("is_ai_generated AND NOT is_reviewed"),
              sqlite_where=text("is_ai_generated AND NOT is_reviewed")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_images.id", ondelete="CASCADE"))
    class_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_classes.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # who set it (beyond the plan)
    confidence: Mapped[float | None] = mapped_column(Float)
    is_ai_generated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    ai_model: Mapped[str | None] = mapped_column(Text)
    is_reviewed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClsLabelingPin(Base):
    """Beyond the plan: the classes one user pinned to keys 1–0 on one dataset's labeling page."""

    __tablename__ = "cls_labeling_pins"
    __table_args__ = (UniqueConstraint("user_id", "dataset_id", name="uq_cls_labeling_pins_user_dataset"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    class_ids: Mapped[list[Any]] = mapped_column(default=list)  # in key order: first gets key 1
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class ClsLabelChange(Base):
    """Beyond the plan: every label change made from model output (label-error finder, review) is
    recorded with who, when and old → new, so a team can audit what a model made them change."""

    __tablename__ = "cls_label_changes"
    # image_id: deleting images checks this foreign key row by row; without an index each check scans the table.
    __table_args__ = (Index("idx_cls_label_changes_dataset", "dataset_id", "created_at"),
                      Index("idx_cls_label_changes_image", "image_id"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_images.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reason: Mapped[str] = mapped_column(String(32))  # manual, review, label_error_finder, bulk, merge
    old_class_ids: Mapped[list[Any]] = mapped_column(default=list)
    new_class_ids: Mapped[list[Any]] = mapped_column(default=list)
    split: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class ClsDatasetVersion(Base):
    __tablename__ = "cls_dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version_number", name="uq_cls_dataset_versions_number"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_datasets.id", ondelete="CASCADE"))
    version_number: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    task_type: Mapped[str] = mapped_column(String(16), default="single_label", server_default="single_label")
    image_count: Mapped[int] = mapped_column(Integer)
    labeled_image_count: Mapped[int] = mapped_column(Integer)
    class_count: Mapped[int] = mapped_column(Integer)
    class_mapping: Mapped[dict[str, Any]] = mapped_column()  # {class_id: index}
    class_names: Mapped[list[Any]] = mapped_column()
    split_counts: Mapped[dict[str, Any]] = mapped_column()
    train_image_ids: Mapped[list[Any]] = mapped_column(default=list)
    val_image_ids: Mapped[list[Any]] = mapped_column(default=list)
    test_image_ids: Mapped[list[Any]] = mapped_column(default=list)
    # The frozen labels live in a manifest (one JSON line per image: image_id, key, sha256, labels,
    # split); training reads only it, so a version trains the same way forever.
    manifest_key: Mapped[str | None] = mapped_column(Text)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    per_class_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {class: {split: n}}
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
