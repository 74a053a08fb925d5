"""ORM models: the plan's `040_classification.sql` as SQLAlchemy 2.0 typed models, portable across
SQLite and Postgres (Uuid, JSON→JSONB, lists as JSON). Changes from the plan are listed in DESIGN.md;
columns added beyond the plan say why in a comment.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    cast,
    column,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from core.library.hamming import band_values, hash_to_int
from core.vocabulary import (
    IMAGE_SOURCES,
    IMAGE_STATUSES,
    JOB_QUEUES,
    JOB_STATUSES,
    MODEL_TYPES,
    PRODUCT_IMAGE_TYPES,
    RUN_STATUSES,
    SPLITS,
    TASK_TYPES,
)

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


def _in(column: str, values: tuple[str, ...]) -> str:
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


class ClsImage(TimestampMixin, Base):
    __tablename__ = "cls_images"
    __table_args__ = (
        CheckConstraint(_in("source", IMAGE_SOURCES), name="source"),
        CheckConstraint(_in("status", IMAGE_STATUSES), name="status"),
        Index("idx_cls_images_user", "user_id"),
        Index("idx_cls_images_status", "status"),
        Index("idx_cls_images_source", "source"),
        Index("idx_cls_images_folder", "folder"),
        Index("idx_cls_images_file_hash", "file_hash"),
        Index("idx_cls_images_phash", "phash"),
        Index("idx_cls_images_phash_band0", "phash_band0"),
        Index("idx_cls_images_phash_band1", "phash_band1"),
        Index("idx_cls_images_phash_band2", "phash_band2"),
        Index("idx_cls_images_created", "created_at"),
        Index("idx_cls_images_source_ref", "source_type", "source_id"),
        # Beyond the plan, for the Images page at 100k+ rows (bench/bench_images_page.py): the tag
        # filter (`?|`, GIN on Postgres) and the name/size sorts use an index, not a scan and sort.
        Index("idx_cls_images_tags", "tags", postgresql_using="gin"),
        Index("idx_cls_images_name", "original_filename"),
        Index("idx_cls_images_size", "file_size_bytes"),
        # The page's text search (ILIKE '%term%' on the name and on the tags as text, core/library/images.py)
        # through trigrams: Postgres only (pg_trgm, see POSTGRES_EXTENSIONS); SQLite scans.
        # migrations/env.py renders Postgres-only indexes into a block of the migration that runs on
        # Postgres alone. 100,000 images: search 114 ms → ≈ 35 ms (bench/bench_images_page.py).
        Index("idx_cls_images_name_trgm", "original_filename", postgresql_using="gin",
              postgresql_ops={"original_filename": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        Index("idx_cls_images_tags_trgm", cast(column("tags"), Text).label("tags_text"), postgresql_using="gin",
              postgresql_ops={"tags_text": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    filename: Mapped[str] = mapped_column(Text)  # <uuid>.<ext>
    original_filename: Mapped[str | None] = mapped_column(Text)
    # The plan's Supabase public URL; here set only when storage has a public base URL.
    image_url: Mapped[str | None] = mapped_column(Text)
    storage_path: Mapped[str] = mapped_column(Text)  # storage key of the original bytes
    thumbnail_path: Mapped[str | None] = mapped_column(Text)  # storage key of the 256 px JPEG
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    file_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))  # Pillow's format name: JPEG, PNG…
    source: Mapped[str] = mapped_column(String(32), default="upload", server_default="upload")
    folder: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    file_hash: Mapped[str | None] = mapped_column(String(64))  # SHA-256 hex of the original bytes
    phash: Mapped[str | None] = mapped_column(String(16))  # 64-bit pHash, hex
    # Beyond the plan, for near duplicates (core/library/duplicates.py, core/library/hamming.py): the pHash cut into
    # three indexed bands of 21/21/22 bits, so a Hamming-radius query is a few hundred index probes, not
    # a scan; and a 256-bit pHash of the thumbnail that confirms (or rejects) each pHash candidate.
    phash_band0: Mapped[int | None] = mapped_column(Integer)
    phash_band1: Mapped[int | None] = mapped_column(Integer)
    phash_band2: Mapped[int | None] = mapped_column(Integer)
    phash256: Mapped[str | None] = mapped_column(String(64))
    source_type: Mapped[str | None] = mapped_column(String(32))  # product, cutout, od_image
    source_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default=text("'{}'"))

    @validates("phash")
    def _set_phash_bands(self, _key: str, value: str | None) -> str | None:
        """Every ORM write of the pHash keeps its indexed bands in step."""
        bands = band_values(hash_to_int(value)) if value else (None, None, None)
        self.phash_band0, self.phash_band1, self.phash_band2 = bands
        return value


# ---------------------------------------------------------------- classes and datasets


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
        CheckConstraint(_in("task_type", TASK_TYPES), name="task_type"),
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
        CheckConstraint(_in("status", IMAGE_STATUSES), name="status"),
        CheckConstraint(f"split IS NULL OR {_in('split', SPLITS)}", name="split"),
        UniqueConstraint("dataset_id", "image_id", name="uq_cls_dataset_images_dataset_image"),
        Index("idx_cls_dataset_images_dataset", "dataset_id"),
        Index("idx_cls_dataset_images_image", "image_id"),
        Index("idx_cls_dataset_images_status", "dataset_id", "status"),
        Index("idx_cls_dataset_images_split", "dataset_id", "split"),
        # The labeling queue walks (dataset, [status,] added_at, image_id) in order from a cursor.
        Index("idx_cls_dataset_images_queue", "dataset_id", "status", "added_at", "image_id"),
        Index("idx_cls_dataset_images_order", "dataset_id", "added_at", "image_id"),
        # Beyond the plan: "how many of the queue do other labelers hold now" reads only live leases.
        Index("idx_cls_dataset_images_reserved", "dataset_id", "reserved_until"),
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
        Index("idx_cls_labels_class", "class_id"),
        # Beyond the plan: "does this image carry this class in another dataset?" (class image counts)
        Index("idx_cls_labels_image_class", "image_id", "class_id"),
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


# ---------------------------------------------------------------- training and models


class ClsTrainingRun(TimestampMixin, Base):
    __tablename__ = "cls_training_runs"
    __table_args__ = (
        CheckConstraint(_in("model_type", MODEL_TYPES), name="model_type"),
        CheckConstraint(_in("task_type", TASK_TYPES), name="task_type"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
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


# ---------------------------------------------------------------- jobs and audit


class ClsJob(Base):
    """One row per background job; every long action shows its row as a progress bar."""

    __tablename__ = "cls_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint(_in("queue", JOB_QUEUES), name="queue"),
        Index("idx_cls_jobs_status", "status"),
        Index("idx_cls_jobs_created", "created_at"),
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


# ---------------------------------------------------------------- platform source tables
# In a real deployment these are the platform's existing tables; here migrations create them and
# `python -m core demo` fills them.


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("idx_products_category", "category"),
        Index("idx_products_brand", "brand"),
        Index("idx_products_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="matched", server_default="matched")
    barcode: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    images: Mapped[list[ProductImage]] = relationship(back_populates="product")


class ProductImage(Base):
    __tablename__ = "product_images"
    __table_args__ = (
        CheckConstraint(_in("image_type", PRODUCT_IMAGE_TYPES), name="image_type"),
        Index("idx_product_images_product", "product_id", "image_type", "frame_index"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("products.id", ondelete="CASCADE"))
    image_type: Mapped[str] = mapped_column(String(16))
    frame_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    product: Mapped[Product] = relationship(back_populates="images")


class Cutout(Base):
    __tablename__ = "cutouts"
    __table_args__ = (Index("idx_cutouts_matched_product", "matched_product_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    storage_key: Mapped[str] = mapped_column(Text)
    matched_product_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class OdImage(Base):
    __tablename__ = "od_images"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    filename: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    folder: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
