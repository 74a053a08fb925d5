"""Labels: which class(es) each image of a dataset carries, and the counts that follow from them.

Counts, kept exact in the same transaction as the change that moves them:
- `cls_datasets.image_count`: rows of `cls_dataset_images` for the dataset.
- `cls_datasets.labeled_image_count`: images of the dataset with at least one label.
- `cls_datasets.class_count`: distinct classes used by the dataset's labels.
- `cls_classes.image_count`: distinct images carrying the class in any dataset (an image labeled
  "cat" in two datasets counts once).
- `cls_dataset_classes.image_count`: images of the dataset carrying the class (its label space).

Locking: every writer takes row locks in one order — the `cls_datasets` row, then the
`cls_dataset_images` rows (by image id), then the `cls_classes` rows (by id) — so two labelers never
interleave on one image and a count delta is computed under the locks that make it exact. The
dataset's lock is an UPDATE bumping its revision (see lock_dataset); the others are
`SELECT … FOR [NO KEY] UPDATE` (SQLite ignores FOR UPDATE: there the dataset's UPDATE, issued before
any read, takes the database's single write lock for the whole transaction).

Every class a label uses is in the dataset's label space (core.datasets.label_space): the one write path adds
a class it lacks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.datasets.label_space import _include_classes
from core.datasets.locks import lock_classes, lock_dataset, lock_links
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.labeling.counts import (
    _adjust_counts_for_image,
    _apply_label_deltas,
    _classes_in_dataset,
)
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsLabel, ClsLabelChange
from core.permissions import requires
from core.users import User


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- locks and counts


# ---------------------------------------------------------------- validation helpers


def check_classes(session: Session, class_ids: Iterable[uuid.UUID]) -> None:
    ids = set(class_ids)
    if not ids:
        return
    rows = session.execute(select(ClsClass.id, ClsClass.name, ClsClass.is_active)
                           .where(ClsClass.id.in_(ids))).all()
    missing = ids - {row.id for row in rows}
    if missing:
        raise NotFound(f"class {sorted(map(str, missing))[0]} does not exist")
    inactive = [row.name for row in rows if not row.is_active]
    if inactive:
        raise InvalidInput(f"class {inactive[0]!r} is deactivated; reactivate it to label with it")


def _link_or_404(links: dict, dataset: ClsDataset, image_id: uuid.UUID) -> ClsDatasetImage:
    link = links.get(image_id)
    if link is None:
        raise NotFound(f"image {image_id} is not in dataset {dataset.name!r}")
    return link


# ---------------------------------------------------------------- the one write path


def _write_label_set(session: Session, *, dataset: ClsDataset, link: ClsDatasetImage, old_rows: list,
                     new_ids: list, user_id, confidence, is_ai_generated: bool, ai_model, reason: str,
                     track_counts: bool) -> tuple[set, set]:
    """Make the image's labels (`old_rows`, read under the link's lock) exactly `new_ids`; returns
    (added, removed) class ids. Classes whose membership changes must already be locked."""
    old_ids = {row.class_id for row in old_rows}
    new_set = set(new_ids)
    added, removed = new_set - old_ids, old_ids - new_set
    for row in old_rows:
        if row.class_id in removed:
            session.delete(row)
        elif not is_ai_generated or row.is_ai_generated:
            # a manual save over an AI label turns it into a manual one; an AI save never
            # overwrites a label a person set
            row.user_id, row.confidence = user_id, confidence
            row.is_ai_generated, row.ai_model = is_ai_generated, ai_model
    if added:
        _include_classes(session, dataset.id, sorted(added, key=str), user_id=user_id)
    for class_id in sorted(added, key=str):
        session.add(ClsLabel(dataset_id=dataset.id, image_id=link.image_id, class_id=class_id, user_id=user_id,
                             confidence=confidence, is_ai_generated=is_ai_generated, ai_model=ai_model))
    session.flush()
    if added or removed:
        session.add(ClsLabelChange(dataset_id=dataset.id, image_id=link.image_id, user_id=user_id, reason=reason,
                                   old_class_ids=sorted(map(str, old_ids)), new_class_ids=sorted(map(str, new_set)),
                                   split=link.split))
    if track_counts and (added or removed):
        _adjust_counts_for_image(session, dataset_id=dataset.id, image_id=link.image_id, added=added,
                                 removed=removed, had_labels=bool(old_ids), has_labels=bool(new_set))
    link.label_revision = (link.label_revision or 0) + 1
    link.status = "labeled" if new_set else "pending"
    link.labeled_by = user_id if new_set else None
    link.labeled_at = utcnow() if new_set else None
    return added, removed


def _current_class_ids(session: Session, dataset_id: uuid.UUID, image_id: uuid.UUID) -> set:
    return set(session.scalars(select(ClsLabel.class_id).where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)).all())


@requires("labeler", "setting labels")
def set_labels(*, session: Session, actor: User, dataset_id, image_id, class_ids, confidence=None,
               is_ai_generated: bool = False, ai_model=None, expected_revision: int | None = None,
               reason: str = "manual") -> ClsDatasetImage:
    """Make an image's labels exactly `class_ids` (single-label: exactly one; empty clears).

    Raises Conflict when `expected_revision` is given and someone saved this image since.
    """
    dataset_id, image_id = as_uuid(dataset_id, "dataset"), as_uuid(image_id, "image")
    new_ids = list(dict.fromkeys(as_uuid(c, "class") for c in class_ids))
    dataset = lock_dataset(session, dataset_id)
    if dataset.task_type == "single_label" and len(new_ids) > 1:
        raise InvalidInput(f"dataset {dataset.name!r} is single-label: give one class, not {len(new_ids)}")
    if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
        raise InvalidInput(f"confidence must be between 0 and 1, got {confidence}")
    link = _link_or_404(lock_links(session, dataset_id, [image_id]), dataset, image_id)
    if expected_revision is not None and expected_revision != link.label_revision:
        raise Conflict(f"image {image_id} was labeled by someone else since you opened it "
                       f"(revision {link.label_revision}, you had {expected_revision}); reload to see it")
    old_rows = session.scalars(select(ClsLabel).where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)).all()
    old_ids = {row.class_id for row in old_rows}
    locked = lock_classes(session, old_ids ^ set(new_ids))
    for class_id in set(new_ids) - old_ids:
        if class_id not in locked:
            raise NotFound(f"class {class_id} does not exist")
        if not locked[class_id].is_active:
            raise InvalidInput(f"class {locked[class_id].name!r} is deactivated; reactivate it to label with it")
    _write_label_set(session, dataset=dataset, link=link, old_rows=old_rows, new_ids=new_ids, user_id=actor.id,
                     confidence=confidence, is_ai_generated=is_ai_generated, ai_model=ai_model,
                     reason=reason, track_counts=True)
    session.flush()
    return link


@requires("labeler", "clearing labels")
def clear_labels(*, session: Session, actor: User, dataset_id, image_id,
                 expected_revision: int | None = None) -> ClsDatasetImage:
    return set_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id, class_ids=[],
                      expected_revision=expected_revision, reason="manual")


@requires("labeler", "setting labels")
def toggle_label(*, session: Session, actor: User, dataset_id, image_id, class_id,
                 expected_revision: int | None = None) -> ClsDatasetImage:
    """Multi-label: add the class if absent, remove it if present. Single-label: set or clear it."""
    dataset_id, image_id = as_uuid(dataset_id, "dataset"), as_uuid(image_id, "image")
    class_id = as_uuid(class_id, "class")
    dataset = session.get(ClsDataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    current = _current_class_ids(session, dataset_id, image_id)
    if class_id in current:
        new_ids = current - {class_id}
    else:
        new_ids = {class_id} if dataset.task_type == "single_label" else current | {class_id}
    return set_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id,
                      class_ids=sorted(new_ids, key=str), expected_revision=expected_revision)


# ---------------------------------------------------------------- reading and review


def labels_for_images(*, session: Session, dataset_id, image_ids) -> dict[uuid.UUID, list[ClsLabel]]:
    dataset_id = as_uuid(dataset_id, "dataset")
    ids = [as_uuid(i, "image") for i in image_ids]
    result: dict[uuid.UUID, list[ClsLabel]] = {i: [] for i in ids}
    for start in range(0, len(ids), 1000):
        for label in session.scalars(select(ClsLabel).where(
                ClsLabel.dataset_id == dataset_id, ClsLabel.image_id.in_(ids[start:start + 1000]))
                .order_by(ClsLabel.created_at)):
            result[label.image_id].append(label)
    return result


@requires("labeler", "reviewing labels")
def mark_reviewed(*, session: Session, actor: User, dataset_id, image_id) -> None:
    """Accept the image's labels as they are (AI labels become reviewed)."""
    dataset_id, image_id = as_uuid(dataset_id, "dataset"), as_uuid(image_id, "image")
    dataset = lock_dataset(session, dataset_id)
    link = _link_or_404(lock_links(session, dataset_id, [image_id]), dataset, image_id)
    result = session.execute(update(ClsLabel).where(ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)
                             .values(is_reviewed=True, reviewed_by=actor.id, reviewed_at=utcnow()))
    if not result.rowcount:
        raise InvalidInput(f"image {image_id} has no label to accept")
    link.status = "labeled"
    link.label_revision = (link.label_revision or 0) + 1
    session.flush()


@requires("labeler", "skipping images")
def skip_image(*, session: Session, actor: User, dataset_id, image_id) -> ClsDatasetImage:
    """Mark an image skipped (its labels, if any, stay)."""
    dataset_id, image_id = as_uuid(dataset_id, "dataset"), as_uuid(image_id, "image")
    dataset = lock_dataset(session, dataset_id)
    link = _link_or_404(lock_links(session, dataset_id, [image_id]), dataset, image_id)
    link.status = "skipped"
    link.labeled_by, link.labeled_at = actor.id, utcnow()
    link.label_revision = (link.label_revision or 0) + 1
    session.flush()
    return link


def _delete_labels_of_images(session: Session, *, dataset_id: uuid.UUID, image_ids: list) -> set:
    """Remove every label of these images in one dataset (dataset and links locked by the caller),
    moving the dataset's labeled/class counts and the classes' image counts by the difference;
    returns the classes touched."""
    before: dict = {}
    for start in range(0, len(image_ids), 1000):
        for image_id, class_id in session.execute(select(ClsLabel.image_id, ClsLabel.class_id).where(
                ClsLabel.dataset_id == dataset_id, ClsLabel.image_id.in_(image_ids[start:start + 1000]))):
            before.setdefault(image_id, set()).add(class_id)
    if not before:
        return set()
    touched = set().union(*before.values())
    had = _classes_in_dataset(session, dataset_id, touched)
    labeled = list(before)
    for start in range(0, len(labeled), 1000):
        session.execute(delete(ClsLabel).where(ClsLabel.dataset_id == dataset_id,
                                               ClsLabel.image_id.in_(labeled[start:start + 1000]))
                        .execution_options(synchronize_session=False))
    _apply_label_deltas(session, dataset_id=dataset_id, before=before, after={i: set() for i in before},
                       had_classes=had)
    return touched


