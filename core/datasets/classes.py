"""Classes: the workspace's class definitions (name, color, hierarchy), merge and delete.

A class's `image_count` is the number of distinct images labeled with it in any dataset; see
core/labeling/labels.py for how every count is kept exact.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import delete, distinct, func, select, update
from sqlalchemy.orm import Session

from core.datasets.label_space import _replace_in_spaces
from core.datasets.locks import lock_classes, lock_dataset
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.labeling.counts import _recount_class_counts, _recount_dataset_counts
from core.models import ClsClass, ClsDatasetImage, ClsLabel, ClsLabelChange
from core.permissions import audit, requires
from core.users import User

MAX_NAME_LENGTH = 100
COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")
# Distinct, readable colors handed out in turn to classes created without one.
PALETTE = ("#3B82F6", "#EF4444", "#10B981", "#F59E0B", "#8B5CF6", "#EC4899", "#14B8A6", "#F97316",
           "#6366F1", "#84CC16", "#06B6D4", "#A855F7", "#E11D48", "#22C55E", "#EAB308", "#0EA5E9")


def clean_name(name) -> str:
    if not isinstance(name, str):
        raise InvalidInput("class name must be text")
    cleaned = name.strip()
    if not cleaned:
        raise InvalidInput("class name is empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidInput(f"class name is {len(cleaned)} characters; at most {MAX_NAME_LENGTH} allowed")
    if any(ord(ch) < 32 for ch in cleaned):
        raise InvalidInput(f"class name {cleaned[:40]!r} contains control characters")
    return cleaned


def clean_color(color: str | None) -> str | None:
    if color is None or color == "":
        return None
    color = color.strip()
    if not COLOR_RE.match(color):
        raise InvalidInput(f"color {color!r} is not a #RRGGBB hex color")
    return color.upper()


def _next_color(session: Session) -> str:
    count = session.scalar(select(func.count()).select_from(ClsClass)) or 0
    return PALETTE[count % len(PALETTE)]


def get_class(*, session: Session, class_id) -> ClsClass:
    row = session.get(ClsClass, as_uuid(class_id, "class"))
    if row is None:
        raise NotFound(f"class {class_id} does not exist")
    return row


def get_class_by_name(*, session: Session, name: str) -> ClsClass:
    row = session.scalars(select(ClsClass).where(ClsClass.name == clean_name(name))).one_or_none()
    if row is None:
        raise NotFound(f"no class named {name.strip()!r}")
    return row


def _check_parent(session: Session, class_id: uuid.UUID | None, parent_class_id) -> uuid.UUID | None:
    if parent_class_id in (None, ""):
        return None
    parent_id = as_uuid(parent_class_id, "parent class")
    ancestor = session.get(ClsClass, parent_id)
    if ancestor is None:
        raise NotFound(f"parent class {parent_id} does not exist")
    seen = set()
    while ancestor is not None and ancestor.id not in seen:
        if ancestor.id == class_id:
            raise InvalidInput("a class cannot be its own ancestor")
        seen.add(ancestor.id)
        ancestor = session.get(ClsClass, ancestor.parent_class_id) if ancestor.parent_class_id else None
    return parent_id


@requires("admin", "creating a class")
def create_class(*, session: Session, actor: User, name, display_name=None, description=None, color=None,
                 parent_class_id=None) -> ClsClass:
    name = clean_name(name)
    if session.scalar(select(ClsClass.id).where(ClsClass.name == name)):
        raise Conflict(f"a class named {name!r} already exists")
    row = ClsClass(name=name, user_id=actor.id, display_name=(display_name or "").strip() or None,
                   description=(description or "").strip() or None,
                   color=clean_color(color) or _next_color(session),
                   parent_class_id=_check_parent(session, None, parent_class_id))
    session.add(row)
    session.flush()
    return row


@requires("admin", "creating a class")
def get_or_create_class(*, session: Session, actor: User, name, color=None) -> ClsClass:
    name = clean_name(name)
    row = session.scalars(select(ClsClass).where(ClsClass.name == name)).one_or_none()
    if row is not None:
        return row
    # A savepoint: a concurrent import creating the same name must not abort the caller's transaction.
    try:
        with session.begin_nested():
            return create_class(session=session, actor=actor, name=name, color=color)
    except Exception:
        row = session.scalars(select(ClsClass).where(ClsClass.name == name)).one_or_none()
        if row is None:
            raise
        return row


@requires("admin", "creating classes")
def bulk_create_classes(*, session: Session, actor: User, text: str) -> dict:
    """One class per non-empty line; existing names are reported, bad lines explained per line."""
    created, existing, errors = [], [], []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            name = clean_name(line)
        except InvalidInput as exc:
            errors.append({"line": number, "error": str(exc)})
            continue
        if name in seen or session.scalar(select(ClsClass.id).where(ClsClass.name == name)):
            existing.append(name)
            continue
        seen.add(name)
        created.append(create_class(session=session, actor=actor, name=name).name)
    return {"created": created, "existing": existing, "errors": errors}


@requires("admin", "editing a class")
def update_class(*, session: Session, actor: User, class_id, **changes) -> ClsClass:
    """Change name, display_name, description, color, parent_class_id or is_active."""
    row = get_class(session=session, class_id=class_id)
    allowed = {"name", "display_name", "description", "color", "parent_class_id", "is_active"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"cannot change {', '.join(sorted(unknown))} of a class")
    if "name" in changes:
        name = clean_name(changes["name"])
        if name != row.name and session.scalar(select(ClsClass.id).where(ClsClass.name == name)):
            raise Conflict(f"a class named {name!r} already exists")
        row.name = name
    if "display_name" in changes:
        row.display_name = (changes["display_name"] or "").strip() or None
    if "description" in changes:
        row.description = (changes["description"] or "").strip() or None
    if "color" in changes:
        row.color = clean_color(changes["color"]) or row.color
    if "parent_class_id" in changes:
        row.parent_class_id = _check_parent(session, row.id, changes["parent_class_id"])
    if "is_active" in changes:
        row.is_active = bool(changes["is_active"])
    session.flush()
    return row


def list_classes(*, session: Session, active_only: bool = False) -> list[ClsClass]:
    query = select(ClsClass).order_by(func.lower(ClsClass.name))
    if active_only:
        query = query.where(ClsClass.is_active.is_(True))
    return list(session.scalars(query).all())


def class_tree(*, session: Session, active_only: bool = False) -> list[tuple[int, ClsClass]]:
    """Classes in depth-first order with their depth, for the hierarchy view."""
    rows = list_classes(session=session, active_only=active_only)
    ids = {row.id for row in rows}
    children: dict = {}
    for row in rows:
        parent = row.parent_class_id if row.parent_class_id in ids else None
        children.setdefault(parent, []).append(row)
    ordered: list[tuple[int, ClsClass]] = []

    def walk(parent, depth):
        for child in children.get(parent, []):
            if any(child is seen for _, seen in ordered):
                continue
            ordered.append((depth, child))
            walk(child.id, depth + 1)

    walk(None, 0)
    return ordered


def labels_using(*, session: Session, class_id) -> int:
    """How many label rows carry the class (what deleting it removes)."""
    return session.scalar(select(func.count()).select_from(ClsLabel)
                          .where(ClsLabel.class_id == as_uuid(class_id, "class"))) or 0


def _datasets_using(session: Session, class_ids) -> list[uuid.UUID]:
    return sorted(session.scalars(select(distinct(ClsLabel.dataset_id))
                                  .where(ClsLabel.class_id.in_(list(class_ids)))).all(), key=str)


def _ancestors(session: Session, row: ClsClass) -> list[uuid.UUID]:
    found: list[uuid.UUID] = []
    parent_id = row.parent_class_id
    while parent_id is not None and parent_id not in found:
        found.append(parent_id)
        parent = session.get(ClsClass, parent_id)
        parent_id = parent.parent_class_id if parent else None
    return found


def _move_labels(session: Session, *, actor: User, sources: list[uuid.UUID],
                 target_id: uuid.UUID) -> tuple[dict[tuple, set], int, int]:
    """Every label of a source class becomes a target label (an image that already had the target
    keeps one); returns the class sets before, per (dataset, image), and how many moved and dropped."""
    affected = session.execute(select(ClsLabel.dataset_id, ClsLabel.image_id, ClsLabel.class_id)
                               .where(ClsLabel.class_id.in_([*sources, target_id]))).all()
    before: dict[tuple, set] = {}
    for dataset_id, image_id, class_id in affected:
        before.setdefault((dataset_id, image_id), set()).add(class_id)
    moved = dropped = 0
    for (dataset_id, image_id), class_ids in before.items():
        from_sources = [c for c in class_ids if c in sources]
        if not from_sources:
            continue
        keep_source = None if target_id in class_ids else from_sources[0]
        for class_id in from_sources:
            label = (ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id, ClsLabel.class_id == class_id)
            if class_id == keep_source:
                session.execute(update(ClsLabel).where(*label).values(class_id=target_id))
                moved += 1
            else:
                session.execute(delete(ClsLabel).where(*label))
                dropped += 1
        session.execute(update(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id)
            .values(label_revision=ClsDatasetImage.label_revision + 1))
        session.add(ClsLabelChange(dataset_id=dataset_id, image_id=image_id, user_id=actor.id, reason="merge",
                                   old_class_ids=sorted(map(str, class_ids)),
                                   new_class_ids=sorted(map(str, (class_ids - set(sources)) | {target_id}))))
    return before, moved, dropped


def _adopt_children(session: Session, target: ClsClass, sources: list[uuid.UUID]) -> None:
    """Children of a source move under the target (an ancestor of the target moves to the top instead)."""
    ancestors = _ancestors(session, target)
    if target.parent_class_id in sources:
        target.parent_class_id = None
    session.execute(update(ClsClass).where(ClsClass.parent_class_id.in_(sources), ClsClass.id != target.id,
                                           ClsClass.id.not_in(ancestors or [target.id]))
                    .values(parent_class_id=target.id))


@requires("admin", "merging classes")
def merge_classes(*, session: Session, actor: User, source_ids, target_id) -> dict:
    """Move every label of the source classes to the target and delete the sources.

    An image that had a source and the target (multi-label) keeps one target label; a single-label
    image has one label before and after. Children of a source move under the target.
    """
    target_id = as_uuid(target_id, "target class")
    sources = list(dict.fromkeys(as_uuid(s, "source class") for s in source_ids))
    if not sources:
        raise InvalidInput("choose at least one class to merge into the target")
    if target_id in sources:
        raise InvalidInput("the target class cannot also be a source")
    for dataset_id in _datasets_using(session, sources):  # lock order: datasets, then classes
        lock_dataset(session, dataset_id)
    _replace_in_spaces(session, sources, target_id)  # the target takes the sources' place in each dataset
    classes = lock_classes(session, [*sources, target_id])
    missing = [str(c) for c in [*sources, target_id] if c not in classes]
    if missing:
        raise NotFound(f"class {missing[0]} does not exist")
    before, moved, dropped = _move_labels(session, actor=actor, sources=sources, target_id=target_id)
    _adopt_children(session, classes[target_id], sources)
    names = [classes[s].name for s in sources]
    session.flush()
    for source in sources:
        session.delete(classes[source])
    session.flush()
    datasets = sorted({d for d, _ in before}, key=str)
    for dataset_id in datasets:
        _recount_dataset_counts(session, dataset_id)
    _recount_class_counts(session, [target_id])
    audit(session=session, actor=actor, action="merge_classes", target_type="class", target_id=target_id,
          row_count=moved + dropped, details={"sources": names, "target": classes[target_id].name})
    session.flush()
    return {"target": classes[target_id].name, "merged": names, "labels_moved": moved,
            "duplicate_labels_dropped": dropped, "datasets": len(datasets),
            "image_count": classes[target_id].image_count}


@requires("admin", "deleting a class")
def delete_class(*, session: Session, actor: User, class_id) -> int:
    """Delete a class and its labels; returns how many labels were removed."""
    class_id = as_uuid(class_id, "class")
    datasets = _datasets_using(session, [class_id])
    for dataset_id in datasets:
        lock_dataset(session, dataset_id)
    row = lock_classes(session, [class_id]).get(class_id)
    if row is None:
        raise NotFound(f"class {class_id} does not exist")
    labeled = session.execute(select(ClsLabel.dataset_id, ClsLabel.image_id).where(ClsLabel.class_id == class_id)).all()
    removed = session.execute(delete(ClsLabel).where(ClsLabel.class_id == class_id)).rowcount or 0
    for dataset_id, image_id in labeled:
        remaining = session.scalar(select(func.count()).select_from(ClsLabel).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)) or 0
        values = {"label_revision": ClsDatasetImage.label_revision + 1}
        if not remaining:
            values.update(status="pending", labeled_by=None, labeled_at=None)
        session.execute(update(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id).values(**values))
    session.execute(update(ClsClass).where(ClsClass.parent_class_id == class_id)
                    .values(parent_class_id=row.parent_class_id))
    audit(session=session, actor=actor, action="delete_class", target_type="class", target_id=class_id,
          row_count=removed, details={"name": row.name})
    session.delete(row)
    session.flush()
    for dataset_id in datasets:
        _recount_dataset_counts(session, dataset_id)
    return removed
