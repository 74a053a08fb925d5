"""Row locks every dataset write takes, in one order (dataset, then its image rows, then classes), so
two writers cannot deadlock; the dataset lock also bumps its revision (the pages' freshness key)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.models import ClsClass, ClsDataset, ClsDatasetImage


def lock_dataset(session: Session, dataset_id: uuid.UUID) -> ClsDataset:
    """Take the dataset's write lock (first in the lock order) and return the fresh row.

    The lock is an UPDATE that bumps the dataset's revision: every write to a dataset takes this lock,
    so the revision moves in the write's own transaction and pages that key their caches on it never
    show numbers older than a committed write. (Postgres: the UPDATE holds the row as FOR NO KEY
    UPDATE would; SQLite: it takes the database's single write lock before any read.)"""
    session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id)
                    .values(revision=ClsDataset.revision + 1).execution_options(synchronize_session=False))
    dataset = session.scalars(
        select(ClsDataset).where(ClsDataset.id == dataset_id).execution_options(populate_existing=True)
    ).one_or_none()
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


def lock_links(session: Session, dataset_id: uuid.UUID, image_ids: Iterable[uuid.UUID]) -> dict:
    """Lock the dataset's rows for these images (sorted, so two bulk actions cannot deadlock)."""
    ids = sorted(set(image_ids), key=str)
    links: dict[uuid.UUID, ClsDatasetImage] = {}
    for start in range(0, len(ids), 1000):
        rows = session.scalars(
            select(ClsDatasetImage)
            .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(ids[start:start + 1000]))
            .order_by(ClsDatasetImage.image_id).with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        links.update({row.image_id: row for row in rows})
    return links


def lock_classes(session: Session, class_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ClsClass]:
    ids = sorted(set(class_ids), key=str)
    if not ids:
        return {}
    rows = session.scalars(
        select(ClsClass).where(ClsClass.id.in_(ids)).order_by(ClsClass.id)
        .with_for_update(key_share=True).execution_options(populate_existing=True)
    ).all()
    return {row.id: row for row in rows}
