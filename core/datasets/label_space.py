"""A dataset's label space: its ordered list of classes (DESIGN.md; beyond the plan, whose classes are
only global). The one source, for that dataset, of:

- the number keys 1–9, 0 on the dataset grid, the Labeling page and its review mode, and the bulk
  actions (`keyed_classes`): the space in order, with the user's own pins moved to the front;
- the classes offered while labeling (only the space's active classes);
- the training class mapping and the export's class order (core.datasets.versions, core.datasets.export);
- the per-class rows of the health check (a class of the space with no image is reported).

Invariant: every class a label of the dataset uses is in its space. Imports and AI labels that bring
a new class append it (`_include_classes`, called by the label write path in core.labeling.labels); people
edit the space on the dataset's Settings tab or with `datasets classes NAME`: add an existing or a
new class, reorder, remove a class no label uses. Every change bumps the dataset's revision (it
takes the dataset's write lock), so pages redraw their keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.datasets.locks import lock_dataset
from core.errors import NotFound
from core.ids import as_uuid
from core.models import ClsClass, ClsDataset, ClsDatasetClass, ClsLabel, ClsLabelingPin

KEYED_CLASSES = 10
"""Classes reachable by number keys: 1–9 and 0."""

KEYS = tuple(str(n % 10) for n in range(1, KEYED_CLASSES + 1))


@dataclass(frozen=True)
class SpaceClass:
    """One class of a dataset's space, with how many of the dataset's images carry it."""

    class_id: uuid.UUID
    name: str
    color: str
    is_active: bool
    position: int
    image_count: int


@dataclass(frozen=True)
class ClassKey:
    """A class as the keyboard offers it for one user on one dataset."""

    class_id: uuid.UUID
    name: str
    color: str
    image_count: int  # images of this dataset carrying it
    key: str | None  # "1".."9", "0", or None beyond the tenth class
    pinned: bool


# ---------------------------------------------------------------- reading


def space_class_ids(session: Session, dataset_id: uuid.UUID) -> list[uuid.UUID]:
    """The space's class ids in order."""
    return list(session.scalars(select(ClsDatasetClass.class_id).where(ClsDatasetClass.dataset_id == dataset_id)
                                .order_by(ClsDatasetClass.position, ClsDatasetClass.added_at)))


def label_space(*, session: Session, dataset_id) -> list[SpaceClass]:
    """The dataset's classes in order, each with its image count in this dataset."""
    dataset_id = as_uuid(dataset_id, "dataset")
    if session.get(ClsDataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    rows = session.execute(
        select(ClsDatasetClass.class_id, ClsDatasetClass.image_count, ClsClass.name, ClsClass.display_name,
               ClsClass.color, ClsClass.is_active)
        .join(ClsClass, ClsClass.id == ClsDatasetClass.class_id)
        .where(ClsDatasetClass.dataset_id == dataset_id)
        .order_by(ClsDatasetClass.position, ClsDatasetClass.added_at)).all()
    return [SpaceClass(class_id=r.class_id, name=r.display_name or r.name, color=r.color, is_active=r.is_active,
                       position=index, image_count=r.image_count)
            for index, r in enumerate(rows)]


def pinned_class_ids(*, session: Session, dataset_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
    row = session.scalar(select(ClsLabelingPin).where(ClsLabelingPin.user_id == user_id,
                                                      ClsLabelingPin.dataset_id == dataset_id))
    return [uuid.UUID(value) for value in row.class_ids] if row else []


def keyed_classes(*, session: Session, dataset_id, user_id: uuid.UUID | None) -> list[ClassKey]:
    """The classes a user labels this dataset with, in key order: their pins (those still in the
    space) first, then the rest of the space in its order; the first ten get keys 1–9, 0. Deactivated
    classes are left out (labels cannot use them)."""
    space = [c for c in label_space(session=session, dataset_id=dataset_id) if c.is_active]
    pins = pinned_class_ids(session=session, dataset_id=as_uuid(dataset_id, "dataset"), user_id=user_id) \
        if user_id else []
    rank = {class_id: index for index, class_id in enumerate(pins)}
    ordered = sorted(space, key=lambda c: (0, rank[c.class_id]) if c.class_id in rank else (1, c.position))
    return [ClassKey(class_id=c.class_id, name=c.name, color=c.color, image_count=c.image_count,
                     key=KEYS[index] if index < KEYED_CLASSES else None, pinned=c.class_id in rank)
            for index, c in enumerate(ordered)]


# ---------------------------------------------------------------- the invariant


def _include_classes(session: Session, dataset_id: uuid.UUID, class_ids: Iterable[uuid.UUID],
                    user_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Append the classes the space lacks (in the order given); returns those added. Called inside a
    write that already holds the dataset's lock (a label write, an import), which checked its role."""
    wanted = list(dict.fromkeys(class_ids))
    if not wanted:
        return []
    present = set(session.scalars(select(ClsDatasetClass.class_id).where(
        ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id.in_(wanted))))
    missing = [class_id for class_id in wanted if class_id not in present]
    if not missing:
        return []
    last = session.scalar(select(func.max(ClsDatasetClass.position))
                          .where(ClsDatasetClass.dataset_id == dataset_id))
    start = -1 if last is None else last
    session.execute(ClsDatasetClass.__table__.insert(), [
        {"id": uuid.uuid4(), "dataset_id": dataset_id, "class_id": class_id, "position": start + 1 + index,
         "user_id": user_id} for index, class_id in enumerate(missing)])
    return missing


def _move_counts(session: Session, dataset_id: uuid.UUID, deltas: dict[uuid.UUID, int]) -> None:
    """Move the space's per-class image counts by what a label write changed (same transaction)."""
    for class_id, delta in sorted(deltas.items(), key=lambda item: str(item[0])):
        if delta:
            session.execute(update(ClsDatasetClass)
                            .where(ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id == class_id)
                            .values(image_count=ClsDatasetClass.image_count + delta)
                            .execution_options(synchronize_session=False))


def _recount(session: Session, dataset_id: uuid.UUID) -> None:
    """Set the space's per-class image counts from the labels (after a merge or a repair)."""
    counts = dict(session.execute(select(ClsLabel.class_id, func.count()).where(ClsLabel.dataset_id == dataset_id)
                                  .group_by(ClsLabel.class_id)).tuples().all())
    _include_classes(session, dataset_id, sorted(counts, key=str))
    for class_id in space_class_ids(session, dataset_id):
        session.execute(update(ClsDatasetClass)
                        .where(ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id == class_id)
                        .values(image_count=counts.get(class_id, 0)).execution_options(synchronize_session=False))


def count_mismatches(session: Session) -> list[str]:
    """Space counts that differ from the labels, and label classes missing from their space."""
    fresh = {(d, c): n for d, c, n in session.execute(
        select(ClsLabel.dataset_id, ClsLabel.class_id, func.count()).group_by(ClsLabel.dataset_id, ClsLabel.class_id))}
    stored = {(d, c): n for d, c, n in session.execute(
        select(ClsDatasetClass.dataset_id, ClsDatasetClass.class_id, ClsDatasetClass.image_count))}
    problems = [f"dataset {d}: class {c} is labeled but not in its classes" for d, c in fresh if (d, c) not in stored]
    problems += [f"dataset {d}: class {c} stored {n} images, actual {fresh.get((d, c), 0)}"
                 for (d, c), n in stored.items() if n != fresh.get((d, c), 0)]
    return problems


def _fill_from_import(session: Session, dataset_id: uuid.UUID, class_ids: Iterable[uuid.UUID],
                     user_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """An import's classes join the dataset's space in the import's own order (the archive's classes by
    name, the catalog's categories), before any image is labeled; the caller checked its role."""
    lock_dataset(session, dataset_id)
    return _include_classes(session, dataset_id, class_ids, user_id=user_id)


def _replace_in_spaces(session: Session, sources: list[uuid.UUID], target: uuid.UUID) -> None:
    """Merging classes: each space holding a source holds the target instead, at the first source's
    place (once). Bumps those datasets' revisions."""
    if session.get(ClsClass, target) is None:
        return  # the merge refuses an unknown target itself
    rows = session.execute(select(ClsDatasetClass.dataset_id, ClsDatasetClass.class_id, ClsDatasetClass.position)
                           .where(ClsDatasetClass.class_id.in_([*sources, target]))).all()
    by_dataset: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
    for dataset_id, class_id, position in rows:
        by_dataset.setdefault(dataset_id, {})[class_id] = position
    for dataset_id in sorted(by_dataset, key=str):
        held = by_dataset[dataset_id]
        if not set(held) & set(sources):
            continue
        lock_dataset(session, dataset_id)
        place = min(held.values())
        session.execute(delete(ClsDatasetClass).where(ClsDatasetClass.dataset_id == dataset_id,
                                                      ClsDatasetClass.class_id.in_([*sources, target])))
        session.execute(ClsDatasetClass.__table__.insert(), [
            {"id": uuid.uuid4(), "dataset_id": dataset_id, "class_id": target, "position": place}])


# ---------------------------------------------------------------- editing (admin)


