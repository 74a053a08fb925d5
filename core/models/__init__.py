"""ORM models: the plan's `040_classification.sql` as SQLAlchemy 2.0 typed models, portable across
SQLite and Postgres (Uuid, JSON→JSONB, lists as JSON), one module per area: `base` (Base, naming
convention, timestamps), `library` (images), `library_aggregates` (tags one a row, the image count), `datasets` (classes, datasets, labels, versions), `dataset_aggregates` (a dataset's count kept by triggers),
`training` (runs, trained models), `jobs` (jobs, users, audit), `similarity` (embedding indexes), `platform` (the platform's own source
tables). Changes from the plan are listed in DESIGN.md. Import the classes from here: importing this
package registers every table on Base.metadata (Alembic and create_all need them all)."""

import core.models.dataset_aggregates  # noqa: F401  (its triggers, on Base.metadata)
from core.models.base import Base, utcnow
from core.models.datasets import (
    ClsClass,
    ClsDataset,
    ClsDatasetClass,
    ClsDatasetImage,
    ClsDatasetVersion,
    ClsLabel,
    ClsLabelChange,
    ClsLabelingPin,
)
from core.models.jobs import ClsAuditEvent, ClsJob, ClsJobItem, ClsUser
from core.models.library import ClsImage
from core.models.library_aggregates import ClsImageTag, ClsLibraryCount
from core.models.platform import Cutout, OdImage, Product, ProductImage
from core.models.similarity import ClsEmbeddingIndex
from core.models.training import ClsTrainedModel, ClsTrainingRun

__all__ = [
    "Base", "ClsAuditEvent", "ClsClass", "ClsDataset", "ClsDatasetClass", "ClsDatasetImage", "ClsDatasetVersion",
    "ClsEmbeddingIndex", "ClsImage", "ClsImageTag", "ClsLibraryCount", "ClsJob", "ClsJobItem", "ClsLabel", "ClsLabelChange", "ClsLabelingPin", "ClsTrainedModel", "ClsTrainingRun",
    "ClsUser", "Cutout", "OdImage", "Product", "ProductImage", "utcnow",
]
