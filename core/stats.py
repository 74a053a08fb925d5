"""Dashboard figures: counts across the workspace, each a single aggregate query."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import ClsClass, ClsDataset, ClsImage, ClsTrainedModel, ClsTrainingRun


def workspace_stats(*, session: Session) -> dict[str, float | int]:
    images = session.scalar(select(func.count()).select_from(ClsImage)) or 0
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
    return session.scalar(select(func.count()).select_from(ClsImage)) or 0
