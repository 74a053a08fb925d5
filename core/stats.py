"""Dashboard figures: counts across the workspace, each a single aggregate query."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.models import ClsClass, ClsDataset, ClsImage, ClsLibraryCount, ClsTrainedModel, ClsTrainingRun

FOLD_COUNT_ROWS_PAST = 1000
"""cls_library_counts gains a row per statement that inserts or deletes images; past this many, a
reader folds them into one (summing 1,000 rows is well under a millisecond)."""
_FOLD_COUNT_ROWS = text("WITH gone AS (DELETE FROM cls_library_counts RETURNING images) "
                        "INSERT INTO cls_library_counts (images) SELECT sum(images) FROM gone HAVING count(*) > 0")


def workspace_stats(*, session: Session) -> dict[str, float | int]:
    images = library_size(session=session)
    classes = session.scalar(select(func.count()).select_from(ClsClass)) or 0
    datasets, in_datasets, labeled = session.execute(
        select(func.count(), func.coalesce(func.sum(ClsDataset.image_count), 0),
               func.coalesce(func.sum(ClsDataset.labeled_image_count), 0))
    ).one()
    runs = session.scalar(select(func.count()).select_from(ClsTrainingRun)) or 0
    active_runs = session.scalar(
        select(func.count()).select_from(ClsTrainingRun)
        .where(ClsTrainingRun.status.in_(("preparing", "queued", "training")))
    ) or 0
    models = session.scalar(select(func.count()).select_from(ClsTrainedModel)) or 0
    return {
        "images": images,
        "classes": classes,
        "datasets": datasets,
        "dataset_images": int(in_datasets),
        "labeled_images": int(labeled),
        "labeled_pct": round(100.0 * labeled / in_datasets, 1) if in_datasets else 0.0,
        "training_runs": runs,
        "active_runs": active_runs,
        "models": models,
    }


def library_size(*, session: Session) -> int:
    """How many images the library holds now (pages read it on every run: it is a number on screen)."""
    if session.get_bind().dialect.name != "postgresql":  # SQLite: a small library, counted
        return session.scalar(select(func.count()).select_from(ClsImage)) or 0
    # The triggers' +n/-n rows (core.models.library_aggregates): exact in this snapshot, as they are
    # written in the transactions that insert and delete the images.
    images, rows = session.execute(select(func.coalesce(func.sum(ClsLibraryCount.images), 0),
                                          func.count())).one()
    if rows > FOLD_COUNT_ROWS_PAST:
        # In its own short transaction: a concurrent fold deletes only rows this one did not, and
        # readers see the rows before or the sum after, never both.
        with session.connection().engine.begin() as connection:
            connection.execute(_FOLD_COUNT_ROWS)
    return int(images)
