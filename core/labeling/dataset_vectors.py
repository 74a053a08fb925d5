"""A dataset's images as embedding vectors, for the labeling tools that choose images by them (the
"most useful next" queue, label by cluster): read from this process's copy of the embedding index
(core.similarity.search keeps one per process, built from the shards once), never from the shards
again per request. Also the model's say on each image: its unreviewed AI labels (written by a
registered model's auto-labeling, core.prediction.auto_label), the platform's record of its predictions."""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import func, or_, select

from core.models import ClsDatasetImage, ClsLabel
from core.similarity.embeddings import find_index
from core.similarity.search import loaded_index
from core.storage import get_storage


def _unreviewed_ai(dataset_id: uuid.UUID):
    return (ClsLabel.dataset_id == dataset_id) & ClsLabel.is_ai_generated.is_(True) & ClsLabel.is_reviewed.is_(False)


def awaiting_person():
    """SQL on ClsDatasetImage: no person has labeled the image yet (no label, or only unreviewed AI
    labels), and it is not skipped."""
    from sqlalchemy import exists

    manual = exists().where(ClsLabel.dataset_id == ClsDatasetImage.dataset_id,
                            ClsLabel.image_id == ClsDatasetImage.image_id,
                            or_(ClsLabel.is_ai_generated.is_(False), ClsLabel.is_reviewed.is_(True)))
    return or_(ClsDatasetImage.status == "pending", (ClsDatasetImage.status == "labeled") & ~manual)


def dataset_image_ids(session, dataset_id: uuid.UUID, *, unlabeled_only: bool = False) -> list[uuid.UUID]:
    """The dataset's images in the order they were added (only those awaiting a person, if asked)."""
    query = select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)
    if unlabeled_only:
        query = query.where(awaiting_person())
    return list(session.scalars(query.order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)))


def vectors_of(session, image_ids: list[uuid.UUID], *, source: str | None = None, storage=None
               ) -> tuple[uuid.UUID, list[uuid.UUID], np.ndarray]:
    """(index id, the ids the index holds, their unit vectors as float32) for these images, in the
    order given; images the index lacks (added since the last embedding run) are left out."""
    if storage is None:
        storage = get_storage()
    row = find_index(session=session, source=source)
    loaded = loaded_index(session, storage, row)
    with loaded.lock:
        pairs = [(i, loaded.position_of[i]) for i in image_ids if i in loaded.position_of]
        vectors = loaded.vectors.vectors([p for _, p in pairs]) if pairs else np.zeros((0, int(row.dim or 0)),
                                                                                         dtype=np.float32)
    return row.id, [i for i, _ in pairs], vectors


def ai_predictions(session, dataset_id: uuid.UUID, image_ids: list[uuid.UUID] | None = None
                   ) -> dict[uuid.UUID, tuple[uuid.UUID, float | None]]:
    """image → (class, confidence) of its most confident unreviewed AI label."""
    query = select(ClsLabel.image_id, ClsLabel.class_id, ClsLabel.confidence).where(_unreviewed_ai(dataset_id))
    if image_ids is not None:
        query = query.where(ClsLabel.image_id.in_(image_ids))
    found: dict[uuid.UUID, tuple[uuid.UUID, float | None]] = {}
    for image_id, class_id, confidence in session.execute(query.order_by(ClsLabel.confidence.asc().nulls_first())):
        found[image_id] = (class_id, confidence)  # ascending: the most confident label is kept
    return found


def predictions_version(session, dataset_id: uuid.UUID) -> tuple:
    """Changes whenever the dataset's unreviewed AI labels do (count and newest write): the key under
    which an order built on them stays valid."""
    count, newest = session.execute(select(func.count(), func.max(ClsLabel.updated_at))
                                    .where(_unreviewed_ai(dataset_id))).one()
    return int(count or 0), str(newest)
