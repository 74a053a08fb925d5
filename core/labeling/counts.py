"""The denormalized counts labels move (core.labeling.labels explains the rules): dataset image,
labeled and class counts, class image counts and the label space's per-class counts, moved by deltas
in the writer's transaction, recounted from scratch where a delta would be unclear, and checked."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import distinct, exists, func, select, update
from sqlalchemy.orm import Session

from core.datasets import label_space
from core.datasets.locks import lock_classes
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsLabel


def _recount_dataset_counts(session: Session, dataset_id: uuid.UUID) -> None:
    """Set the dataset's three counts from fresh COUNTs (caller holds the dataset lock)."""
    session.flush()
    image_count = session.scalar(select(func.count()).select_from(ClsDatasetImage)
                                 .where(ClsDatasetImage.dataset_id == dataset_id)) or 0
    labeled, classes = session.execute(
        select(func.count(distinct(ClsLabel.image_id)), func.count(distinct(ClsLabel.class_id)))
        .where(ClsLabel.dataset_id == dataset_id)
    ).one()
    session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id).values(
        image_count=image_count, labeled_image_count=labeled or 0, class_count=classes or 0))
    label_space._recount(session, dataset_id)


def _recount_class_counts(session: Session, class_ids: Iterable[uuid.UUID] | None = None) -> None:
    """Set classes' image counts from fresh COUNTs (caller holds their locks); None: every class."""
    session.flush()
    ids = None if class_ids is None else sorted(set(class_ids), key=str)
    if ids == []:
        return
    query = select(ClsLabel.class_id, func.count(distinct(ClsLabel.image_id))).group_by(ClsLabel.class_id)
    targets = select(ClsClass.id)
    if ids is not None:
        query = query.where(ClsLabel.class_id.in_(ids))
        targets = targets.where(ClsClass.id.in_(ids))
    counts = dict(session.execute(query).all())
    for class_id in session.scalars(targets).all():
        session.execute(update(ClsClass).where(ClsClass.id == class_id)
                        .values(image_count=counts.get(class_id, 0)))


def _adjust_counts_for_image(session: Session, *, dataset_id: uuid.UUID, image_id: uuid.UUID,
                             added: set, removed: set, had_labels: bool, has_labels: bool) -> None:
    """Delta update after one image's label set changed (locks on dataset, image and classes held).

    A class enters or leaves the dataset's class count when no *other* image of the dataset has it;
    it gains or loses this image when the image has it in no *other* dataset.
    """
    class_delta = 0
    label_space._move_counts(session, dataset_id, {**{c: 1 for c in added}, **{c: -1 for c in removed}})
    for class_id, sign in [(c, 1) for c in added] + [(c, -1) for c in removed]:
        in_other_images, in_other_datasets = session.execute(select(
            exists().where(ClsLabel.dataset_id == dataset_id, ClsLabel.class_id == class_id,
                           ClsLabel.image_id != image_id),
            exists().where(ClsLabel.image_id == image_id, ClsLabel.class_id == class_id,
                           ClsLabel.dataset_id != dataset_id))).one()
        if not in_other_images:
            class_delta += sign
        if not in_other_datasets:
            session.execute(update(ClsClass).where(ClsClass.id == class_id)
                            .values(image_count=ClsClass.image_count + sign))
    labeled_delta = int(has_labels) - int(had_labels)
    if class_delta or labeled_delta:
        session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id).values(
            labeled_image_count=ClsDataset.labeled_image_count + labeled_delta,
            class_count=ClsDataset.class_count + class_delta))


def count_mismatches(*, session: Session) -> list[str]:
    """Every stored count that differs from a fresh COUNT (empty when all are exact)."""
    problems = []
    images = dict(session.execute(select(ClsDatasetImage.dataset_id, func.count())
                                  .group_by(ClsDatasetImage.dataset_id)).all())
    labeled = dict(session.execute(select(ClsLabel.dataset_id, func.count(distinct(ClsLabel.image_id)))
                                   .group_by(ClsLabel.dataset_id)).all())
    classes = dict(session.execute(select(ClsLabel.dataset_id, func.count(distinct(ClsLabel.class_id)))
                                   .group_by(ClsLabel.dataset_id)).all())
    unassigned_labeled = dict(session.execute(
        select(ClsDatasetImage.dataset_id, func.count())
        .where((ClsDatasetImage.split.is_(None)) | (ClsDatasetImage.split == "unassigned"),
               exists().where(ClsLabel.dataset_id == ClsDatasetImage.dataset_id,
                              ClsLabel.image_id == ClsDatasetImage.image_id))
        .group_by(ClsDatasetImage.dataset_id)).all())
    for dataset in session.execute(select(ClsDataset.id, ClsDataset.name, ClsDataset.image_count,
                                          ClsDataset.labeled_image_count, ClsDataset.class_count,
                                          ClsDataset.unassigned_labeled_count)).all():
        fresh = (images.get(dataset.id, 0), labeled.get(dataset.id, 0), classes.get(dataset.id, 0),
                 unassigned_labeled.get(dataset.id, 0))
        stored = (dataset.image_count, dataset.labeled_image_count, dataset.class_count,
                  dataset.unassigned_labeled_count)
        if fresh != stored:
            problems.append(f"dataset {dataset.name!r}: stored images/labeled/classes/unassigned labeled {stored}, "
                            f"actual {fresh}")
    per_class = dict(session.execute(select(ClsLabel.class_id, func.count(distinct(ClsLabel.image_id)))
                                     .group_by(ClsLabel.class_id)).all())
    for row in session.execute(select(ClsClass.id, ClsClass.name, ClsClass.image_count)).all():
        if row.image_count != per_class.get(row.id, 0):
            problems.append(f"class {row.name!r}: stored {row.image_count} images, actual {per_class.get(row.id, 0)}")
    return problems + label_space.count_mismatches(session)


def _classes_in_dataset(session: Session, dataset_id: uuid.UUID, class_ids: Iterable[uuid.UUID]) -> set:
    """Which of these classes at least one label of the dataset uses (one indexed probe per class)."""
    return {class_id for class_id in class_ids if session.scalar(select(exists().where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.class_id == class_id)))}


def _apply_label_deltas(session: Session, *, dataset_id: uuid.UUID, before: dict, after: dict,
                       had_classes: set) -> None:
    """Move the counts by what a batch changed, without recounting the whole dataset or class.

    `before`/`after`: each changed image's class set in this dataset (read and written under the
    dataset and link locks); `had_classes`: which of the touched classes the dataset used before the
    writes. The touched classes are locked here, after the writes, so their rows are held only until
    the commit that follows; the "has it in another dataset" probes run after that lock, so they see
    every concurrent writer of the same class that committed first (READ COMMITTED: a fresh snapshot
    per statement), and a writer that comes later waits for ours.
    """
    added: dict = {}
    removed: dict = {}
    for image_id, old in before.items():
        new = after[image_id]
        for class_id in new - old:
            added.setdefault(class_id, []).append(image_id)
        for class_id in old - new:
            removed.setdefault(class_id, []).append(image_id)
    touched = set(added) | set(removed)
    lock_classes(session, touched)
    session.flush()
    label_space._move_counts(session, dataset_id, {c: len(added.get(c, ())) - len(removed.get(c, ())) for c in touched})
    for class_id in sorted(touched, key=str):
        delta = 0
        for image_ids, sign in ((added.get(class_id, []), 1), (removed.get(class_id, []), -1)):
            for start in range(0, len(image_ids), 1000):
                chunk = image_ids[start:start + 1000]
                elsewhere = set(session.scalars(select(distinct(ClsLabel.image_id)).where(
                    ClsLabel.class_id == class_id, ClsLabel.image_id.in_(chunk),
                    ClsLabel.dataset_id != dataset_id)).all())
                delta += sign * (len(chunk) - len(elsewhere & set(chunk)))
        if delta:
            session.execute(update(ClsClass).where(ClsClass.id == class_id)
                            .values(image_count=ClsClass.image_count + delta))
    has = _classes_in_dataset(session, dataset_id, touched)
    class_delta = len(has - had_classes) - len((had_classes & touched) - has)
    labeled_delta = (sum(1 for i in before if after[i] and not before[i])
                     - sum(1 for i in before if before[i] and not after[i]))
    if class_delta or labeled_delta:
        session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id).values(
            labeled_image_count=ClsDataset.labeled_image_count + labeled_delta,
            class_count=ClsDataset.class_count + class_delta))
