"""Editing a dataset's label space (admin): add existing or new classes, remove unused ones, reorder
(the number keys follow the order), and class names resolved to ids for the CLI and imports."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.datasets.classes import clean_name, get_or_create_class
from core.datasets.label_space import _include_classes, space_class_ids
from core.datasets.locks import lock_dataset
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.models import ClsClass, ClsDataset, ClsDatasetClass, ClsLabel
from core.permissions import requires


def _lock(session: Session, dataset_id) -> ClsDataset:
    return lock_dataset(session, as_uuid(dataset_id, "dataset"))


def _existing_class_ids(session: Session, class_ids: Iterable) -> list[uuid.UUID]:
    ids = list(dict.fromkeys(as_uuid(c, "class") for c in class_ids))
    found = set(session.scalars(select(ClsClass.id).where(ClsClass.id.in_(ids)))) if ids else set()
    missing = [str(c) for c in ids if c not in found]
    if missing:
        raise NotFound(f"class {missing[0]} does not exist")
    return ids


@requires("admin", "changing a dataset's classes")
def add_classes(*, session: Session, actor, dataset_id, class_ids: Iterable = (),
                new_names: Iterable[str] = ()) -> list[uuid.UUID]:
    """Append existing classes (by id) and classes by name (made when no class has the name) to the
    space; those already in it stay where they are. Returns the ids appended."""
    dataset = _lock(session, dataset_id)
    ids = _existing_class_ids(session, class_ids)
    for name in new_names:
        ids.append(get_or_create_class(session=session, actor=actor, name=clean_name(name)).id)
    if not ids:
        raise InvalidInput("name at least one class to add")
    added = _include_classes(session, dataset.id, ids, user_id=actor.id)
    session.flush()
    return added


@requires("admin", "changing a dataset's classes")
def remove_classes(*, session: Session, actor, dataset_id, class_ids: Iterable) -> int:
    """Take classes out of the space; refused, naming them, for classes a label of the dataset uses
    (relabel or clear those images first). Returns how many were removed."""
    dataset = _lock(session, dataset_id)
    ids = list(dict.fromkeys(as_uuid(c, "class") for c in class_ids))
    if not ids:
        raise InvalidInput("name at least one class to remove")
    used = session.execute(
        select(ClsClass.name, func.count()).join(ClsLabel, ClsLabel.class_id == ClsClass.id)
        .where(ClsLabel.dataset_id == dataset.id, ClsLabel.class_id.in_(ids))
        .group_by(ClsClass.name).order_by(ClsClass.name)).all()
    if used:
        listed = ", ".join(f"{name!r} ({count} labels)" for name, count in used)
        raise Conflict(f"dataset {dataset.name!r} still uses {listed}; relabel or clear those images before "
                       "removing the class")
    removed = session.execute(delete(ClsDatasetClass).where(
        ClsDatasetClass.dataset_id == dataset.id, ClsDatasetClass.class_id.in_(ids))).rowcount or 0
    if removed < len(ids):
        absent = len(ids) - removed
        raise NotFound(f"{absent} of the classes to remove are not in dataset {dataset.name!r}'s classes")
    _renumber(session, dataset.id, space_class_ids(session, dataset.id))
    return removed


@requires("admin", "changing a dataset's classes")
def reorder_classes(*, session: Session, actor, dataset_id, class_ids: Iterable) -> list[uuid.UUID]:
    """Put the named classes first, in the order given; the others keep their order after them.
    Returns the new order."""
    dataset = _lock(session, dataset_id)
    first = list(dict.fromkeys(as_uuid(c, "class") for c in class_ids))
    current = space_class_ids(session, dataset.id)
    outside = [str(c) for c in first if c not in set(current)]
    if outside:
        raise InvalidInput(f"class {outside[0]} is not in dataset {dataset.name!r}'s classes; add it first")
    order = first + [c for c in current if c not in set(first)]
    _renumber(session, dataset.id, order)
    return order


def _renumber(session: Session, dataset_id: uuid.UUID, order: list[uuid.UUID]) -> None:
    for position, class_id in enumerate(order):
        session.execute(update(ClsDatasetClass)
                        .where(ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id == class_id)
                        .values(position=position).execution_options(synchronize_session=False))
    session.flush()


def resolve_class_names(session: Session, names: Iterable[str]) -> list[uuid.UUID]:
    """Class ids for names (the CLI's words); an unknown name is refused with the names that exist."""
    ids = []
    for name in names:
        row = session.scalar(select(ClsClass.id).where(ClsClass.name == name.strip()))
        if row is None:
            raise NotFound(f"no class named {name.strip()!r}")
        ids.append(row)
    return ids
