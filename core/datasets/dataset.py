"""Datasets: create, edit, delete; which library images they hold (the grid query: core.datasets.grid).

Counts (image, labeled, class) follow the rules in core/labeling/labels.py and change in the same
transaction as the rows they count.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, distinct, exists, func, or_, select, update
from sqlalchemy.orm import Session

from core.datasets.locks import lock_classes, lock_dataset, lock_links
from core.db import insert_rows
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.labeling.counts import _recount_class_counts, _recount_dataset_counts
from core.labeling.labels import _delete_labels_of_images
from core.models import ClsDataset, ClsDatasetImage, ClsImage, ClsJob, ClsLabel
from core.permissions import audit, requires
from core.users import User
from core.vocabulary import SPLITS, TASK_TYPES, TRAINING_SPLITS

MAX_NAME_LENGTH = 200
DEFAULT_SPLIT_RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_PREPROCESSING = {"image_size": 224, "normalize": True}


def clean_dataset_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("dataset name is empty")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"dataset name is {len(name)} characters; at most {MAX_NAME_LENGTH} allowed")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidInput(f"dataset name {name[:40]!r} contains control characters")
    return name


def clean_split_ratios(ratios) -> dict:
    if ratios is None:
        return dict(DEFAULT_SPLIT_RATIOS)
    if not isinstance(ratios, dict) or set(ratios) - {"train", "val", "test"}:
        raise InvalidInput("split ratios take the keys train, val and test")
    try:
        cleaned = {key: float(ratios.get(key, 0.0)) for key in TRAINING_SPLITS}
    except (TypeError, ValueError):
        raise InvalidInput("split ratios must be numbers") from None
    if any(not 0.0 <= value <= 1.0 for value in cleaned.values()):
        raise InvalidInput("each split ratio must be between 0 and 1")
    if abs(sum(cleaned.values()) - 1.0) > 1e-6:
        raise InvalidInput(f"split ratios must add up to 1 (they add up to {sum(cleaned.values()):.3f})")
    if cleaned["train"] <= 0:
        raise InvalidInput("the train ratio must be above 0")
    return cleaned


def clean_preprocessing(preprocessing) -> dict:
    if preprocessing is None:
        return dict(DEFAULT_PREPROCESSING)
    if not isinstance(preprocessing, dict):
        raise InvalidInput("preprocessing must be a mapping such as {'image_size': 224}")
    cleaned = {**DEFAULT_PREPROCESSING, **preprocessing}
    size = cleaned["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 2048:
        raise InvalidInput(f"image_size must be a whole number of pixels from 16 to 2048, not {size!r}")
    cleaned["normalize"] = bool(cleaned["normalize"])
    return cleaned


# ---------------------------------------------------------------- datasets


@requires("admin", "creating a dataset")
def create_dataset(*, session: Session, actor: User, name, task_type: str = "single_label", description=None,
                   split_ratios=None, preprocessing=None) -> ClsDataset:
    name = clean_dataset_name(name)
    if task_type not in TASK_TYPES:
        raise InvalidInput(f"task type must be {' or '.join(TASK_TYPES)}, not {task_type!r}")
    if session.scalar(select(ClsDataset.id).where(ClsDataset.name == name)):
        raise Conflict(f"a dataset named {name!r} already exists")
    row = ClsDataset(name=name, task_type=task_type, user_id=actor.id,
                     description=(description or "").strip() or None,
                     split_ratios=clean_split_ratios(split_ratios), preprocessing=clean_preprocessing(preprocessing))
    session.add(row)
    session.flush()
    return row


def get_dataset(*, session: Session, dataset_id) -> ClsDataset:
    row = session.get(ClsDataset, as_uuid(dataset_id, "dataset"))
    if row is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return row


def get_dataset_by_name(*, session: Session, name) -> ClsDataset:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("dataset name is empty")
    row = session.scalars(select(ClsDataset).where(ClsDataset.name == name.strip())).one_or_none()
    if row is None:
        raise NotFound(f"no dataset named {name.strip()!r}")
    return row


def dataset_revision(*, session: Session, dataset_id) -> int:
    """The dataset's revision (bumped by every write to it; pages key their caches on it); -1 if gone."""
    revision = session.scalar(select(ClsDataset.revision).where(ClsDataset.id == as_uuid(dataset_id, "dataset")))
    return -1 if revision is None else revision


WRITING_JOB_KINDS = ("dataset_import", "products_import", "cutouts_import", "od_import", "url_import",
                     "batch_prediction")
"""Job kinds that add images or labels to the dataset named in their parameters."""


def jobs_writing_to(*, session: Session, dataset_id) -> int:
    """Queued or running jobs that will change this dataset (imports into it, AI labels): while any
    runs, the dataset's page refreshes its counts by itself."""
    target = str(as_uuid(dataset_id, "dataset"))
    params = session.scalars(select(ClsJob.params).where(ClsJob.status.in_(("queued", "running")),
                                                         ClsJob.kind.in_(WRITING_JOB_KINDS))).all()
    return sum(1 for p in params if str((p or {}).get("dataset_id")) == target)


def list_datasets(*, session: Session) -> list[ClsDataset]:
    return list(session.scalars(select(ClsDataset).order_by(ClsDataset.created_at.desc())).all())


@requires("admin", "editing a dataset")
def update_dataset(*, session: Session, actor: User, dataset_id, **changes) -> ClsDataset:
    """Change name, description, task_type, split_ratios or preprocessing."""
    allowed = {"name", "description", "task_type", "split_ratios", "preprocessing"}
    if set(changes) - allowed:
        raise InvalidInput(f"cannot change {', '.join(sorted(set(changes) - allowed))} of a dataset")
    dataset = lock_dataset(session, as_uuid(dataset_id, "dataset"))
    if "name" in changes:
        name = clean_dataset_name(changes["name"])
        if name != dataset.name and session.scalar(select(ClsDataset.id).where(ClsDataset.name == name)):
            raise Conflict(f"a dataset named {name!r} already exists")
        dataset.name = name
    if "description" in changes:
        dataset.description = (changes["description"] or "").strip() or None
    if "task_type" in changes and changes["task_type"] != dataset.task_type:
        task_type = changes["task_type"]
        if task_type not in TASK_TYPES:
            raise InvalidInput(f"task type must be {' or '.join(TASK_TYPES)}, not {task_type!r}")
        if task_type == "single_label":
            several = session.scalar(select(func.count()).select_from(
                select(ClsLabel.image_id).where(ClsLabel.dataset_id == dataset.id)
                .group_by(ClsLabel.image_id).having(func.count() > 1).subquery())) or 0
            if several:
                raise Conflict(f"{several} images carry several labels; reduce them to one before "
                               "making the dataset single-label")
        dataset.task_type = task_type
    if "split_ratios" in changes:
        dataset.split_ratios = clean_split_ratios(changes["split_ratios"])
    if "preprocessing" in changes:
        dataset.preprocessing = clean_preprocessing(changes["preprocessing"])
    session.flush()
    return dataset


@requires("admin", "deleting a dataset")
def delete_dataset(*, session: Session, actor: User, dataset_id) -> dict:
    """Delete the dataset, its memberships and labels (library images stay)."""
    dataset = lock_dataset(session, as_uuid(dataset_id, "dataset"))
    touched = set(session.scalars(select(distinct(ClsLabel.class_id)).where(ClsLabel.dataset_id == dataset.id)).all())
    lock_classes(session, touched)
    labels = session.execute(delete(ClsLabel).where(ClsLabel.dataset_id == dataset.id)).rowcount or 0
    images = dataset.image_count
    audit(session=session, actor=actor, action="delete_dataset", target_type="dataset", target_id=dataset.id,
          row_count=images, details={"name": dataset.name, "labels": labels})
    session.delete(dataset)
    session.flush()
    _recount_class_counts(session, touched)
    return {"name": dataset.name, "images": images, "labels": labels}


@requires("admin", "recounting a dataset")
def recount_dataset(*, session: Session, actor: User, dataset_id) -> None:
    """Recompute the dataset's counts and its classes' image counts from the rows."""
    dataset_id = as_uuid(dataset_id, "dataset")
    lock_dataset(session, dataset_id)
    touched = set(session.scalars(select(distinct(ClsLabel.class_id)).where(ClsLabel.dataset_id == dataset_id)).all())
    lock_classes(session, touched)
    _recount_dataset_counts(session, dataset_id)
    _recount_class_counts(session, touched)


# ---------------------------------------------------------------- membership


@requires("admin", "adding images to a dataset")
def add_images_to_dataset(*, session: Session, actor: User, dataset_id, image_ids, split=None) -> int:
    """Add library images (those already in the dataset are left as they are); returns how many
    were added. Unknown ids are refused by name and nothing is added."""
    dataset_id = as_uuid(dataset_id, "dataset")
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    if split is not None and split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    lock_dataset(session, dataset_id)
    known: set = set()
    present: set = set()
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        known |= set(session.scalars(select(ClsImage.id).where(ClsImage.id.in_(chunk))).all())
        present |= set(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(chunk))).all())
    missing = [i for i in ids if i not in known]
    if missing:
        raise NotFound(f"{len(missing)} image id(s) are not in the library (first: {missing[0]})")
    new = [i for i in ids if i not in present]
    if new:
        insert_rows(session, ClsDatasetImage.__table__, [
            {"id": uuid.uuid4(), "dataset_id": dataset_id, "image_id": i, "status": "pending",
             "split": split or "unassigned", "label_revision": 0} for i in new])
        session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id)
                        .values(image_count=ClsDataset.image_count + len(new)))
    session.flush()
    return len(new)


@requires("admin", "removing images from a dataset")
def remove_images_from_dataset(*, session: Session, actor: User, dataset_id, image_ids) -> int:
    """Take images out of the dataset with their labels (the library keeps them); returns how many."""
    dataset_id = as_uuid(dataset_id, "dataset")
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    lock_dataset(session, dataset_id)
    links = lock_links(session, dataset_id, ids)
    present = [i for i in ids if i in links]
    if not present:
        return 0
    _delete_labels_of_images(session, dataset_id=dataset_id, image_ids=present)
    removed = 0
    for start in range(0, len(present), 1000):
        removed += session.execute(delete(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(present[start:start + 1000]))
            .execution_options(synchronize_session=False)).rowcount or 0
    # the image count moves by the rows removed (their labels' counts moved above): no recount of
    # the whole dataset, so a batch costs the same on a 100-image and a 100,000-image dataset
    session.execute(update(ClsDataset).where(ClsDataset.id == dataset_id)
                    .values(image_count=ClsDataset.image_count - removed))
    session.expire_all()
    return len(present)


@requires("admin", "deleting images")
def detach_images_everywhere(*, session: Session, actor: User, image_ids) -> int:
    """Call before deleting library images: takes them out of every dataset with counts kept exact
    (a bare cascade would leave the denormalized counts wrong). Returns memberships removed."""
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    datasets: set = set()
    for start in range(0, len(ids), 1000):
        datasets |= set(session.scalars(select(distinct(ClsDatasetImage.dataset_id))
                                        .where(ClsDatasetImage.image_id.in_(ids[start:start + 1000]))).all())
    return sum(remove_images_from_dataset(session=session, actor=actor, dataset_id=d, image_ids=ids)
               for d in sorted(datasets, key=str))


@requires("admin", "setting splits")
def set_split(*, session: Session, actor: User, dataset_id, image_ids, split: str) -> int:
    """Manual split assignment for some images of the dataset; returns how many rows changed."""
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    dataset_id = as_uuid(dataset_id, "dataset")
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    lock_dataset(session, dataset_id)
    changed = 0
    for start in range(0, len(ids), 1000):
        changed += session.execute(update(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(ids[start:start + 1000]),
            or_(ClsDatasetImage.split.is_(None), ClsDatasetImage.split != split)).values(split=split)).rowcount or 0
    return changed


# ---------------------------------------------------------------- library selection by filters


def library_image_ids(*, session: Session, folder: str | None = None, tags: list[str] | None = None,
                      source: str | None = None, status: str | None = None, search: str | None = None,
                      not_in_dataset=None, limit: int | None = None) -> list[uuid.UUID]:
    """Library image ids matching simple filters (folder, any of tags, source, status, file name)."""
    query = select(ClsImage.id).order_by(ClsImage.created_at, ClsImage.id)
    if folder:
        query = query.where(ClsImage.folder == folder)
    if source:
        query = query.where(ClsImage.source == source)
    if status:
        query = query.where(ClsImage.status == status)
    if search:
        pattern = f"%{search.strip()}%"
        query = query.where(or_(ClsImage.original_filename.ilike(pattern), ClsImage.filename.ilike(pattern)))
    if not_in_dataset is not None:
        query = query.where(~exists().where(ClsDatasetImage.image_id == ClsImage.id,
                                            ClsDatasetImage.dataset_id == as_uuid(not_in_dataset, "dataset")))
    ids = list(session.scalars(query).all())
    if tags:
        wanted = set(tags)
        rows = session.execute(select(ClsImage.id, ClsImage.tags).where(ClsImage.id.in_(ids))).all() if ids else []
        tagged = {row.id for row in rows if wanted & set(row.tags or [])}
        ids = [i for i in ids if i in tagged]
    return ids[:limit] if limit else ids


def split_counts(*, session: Session, dataset_id) -> dict[str, int]:
    rows = session.execute(select(ClsDatasetImage.split, func.count()).where(
        ClsDatasetImage.dataset_id == as_uuid(dataset_id, "dataset")).group_by(ClsDatasetImage.split)).all()
    return {split or "unassigned": count for split, count in rows}
