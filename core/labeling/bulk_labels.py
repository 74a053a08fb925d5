"""Labels on many images at once (labeler role): set, add or remove one class, or clear, in batches the
caller commits one by one; every count moves by each batch's own difference."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.datasets.label_space import _include_classes
from core.datasets.locks import lock_dataset, lock_links
from core.db import insert_rows
from core.errors import InvalidInput, NotFound
from core.ids import as_uuid
from core.labeling.counts import _apply_label_deltas, _classes_in_dataset
from core.labeling.labels import check_classes, labels_for_images
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsLabel, ClsLabelChange, utcnow
from core.permissions import audit, requires
from core.users import User

BULK_MODES = ("replace", "add", "remove")



def key_press_mode(*, session: Session, dataset_id, image_ids, class_id) -> str:
    """What a class key does to selected images: on a single-label dataset the class replaces; on a
    multi-label one it is added, or removed when every selected image already has it."""
    dataset = session.get(ClsDataset, as_uuid(dataset_id, "dataset"))
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    if dataset.task_type != "multi_label":
        return "replace"
    class_id, ids = as_uuid(class_id, "class"), [as_uuid(i, "image") for i in image_ids]
    current = labels_for_images(session=session, dataset_id=dataset.id, image_ids=ids)
    return "remove" if all(any(lab.class_id == class_id for lab in current[i]) for i in ids) else "add"

@requires("labeler", "changing labels in bulk")
def bulk_set_label(*, session: Session, actor: User, dataset_id, image_ids, class_id, mode: str = "replace") -> int:
    """One class on many images: `replace` (the image's labels become exactly this class), `add`
    (multi-label only; single-label datasets replace), `remove`. Returns how many images changed.
    One transaction: for thousands of images use core.library.bulk.set_label (batches)."""
    changed = set_label_batch(session=session, actor=actor, dataset_id=dataset_id, image_ids=image_ids,
                              class_id=class_id, mode=mode)
    if changed:  # a person's bulk change (imports call set_label_batch: their job records them)
        audit(session=session, actor=actor, action="bulk_set_label", target_type="dataset",
              target_id=dataset_id, row_count=changed, details={"class_id": str(class_id), "mode": mode})
    return changed


def check_bulk_label(*, session: Session, dataset_id, class_id, mode: str) -> None:
    """What set_label_batch refuses, checked once before the first batch."""
    if mode not in BULK_MODES:
        raise InvalidInput(f"mode must be one of {', '.join(BULK_MODES)}, not {mode!r}")
    dataset_id, class_id = as_uuid(dataset_id, "dataset"), as_uuid(class_id, "class")
    if session.get(ClsDataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    if mode != "remove":
        check_classes(session, [class_id])
    elif session.get(ClsClass, class_id) is None:
        raise NotFound(f"class {class_id} does not exist")


@requires("labeler", "changing labels in bulk")
def set_label_batch(*, session: Session, actor: User, dataset_id, image_ids, class_id, mode: str = "replace") -> int:
    """bulk_set_label's work on one batch, without the audit (the caller's): a batched action checks
    the actor again at each batch."""
    if mode not in BULK_MODES:
        raise InvalidInput(f"mode must be one of {', '.join(BULK_MODES)}, not {mode!r}")
    dataset_id, class_id = as_uuid(dataset_id, "dataset"), as_uuid(class_id, "class")
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    dataset = lock_dataset(session, dataset_id)
    if mode != "remove":
        check_classes(session, [class_id])
    elif session.get(ClsClass, class_id) is None:
        raise NotFound(f"class {class_id} does not exist")
    if dataset.task_type == "single_label" and mode == "add":
        mode = "replace"

    def target(current: set) -> set:
        if mode == "replace":
            return {class_id}
        if mode == "add":
            return current | {class_id}
        return current - {class_id}

    return _bulk_apply(session, dataset=dataset, image_ids=ids, target=target, user_id=actor.id, reason="bulk")


@requires("labeler", "clearing labels in bulk")
def bulk_clear_labels(*, session: Session, actor: User, dataset_id, image_ids) -> int:
    cleared = clear_labels_batch(session=session, actor=actor, dataset_id=dataset_id, image_ids=image_ids)
    if cleared:
        audit(session=session, actor=actor, action="bulk_clear_labels", target_type="dataset",
              target_id=dataset_id, row_count=cleared)
    return cleared


@requires("labeler", "clearing labels in bulk")
def clear_labels_batch(*, session: Session, actor: User, dataset_id, image_ids) -> int:
    """bulk_clear_labels's work on one batch, without the audit (the caller's)."""
    dataset = lock_dataset(session, as_uuid(dataset_id, "dataset"))
    ids = list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))
    return _bulk_apply(session, dataset=dataset, image_ids=ids, target=lambda current: set(),
                       user_id=actor.id, reason="bulk")


def _write_label_sets(session: Session, *, dataset: ClsDataset, links: dict, current: dict, plans: dict,
                      changed: list, user_id, reason: str) -> None:
    """`_write_label_set` for many images at once, in a few set-based statements per 1,000 images
    (an import labels thousands of images per call). Counts are the caller's (a recount)."""
    now = utcnow()
    _include_classes(session, dataset.id, sorted({c for i in changed for c in plans[i] - current[i]}, key=str),
                    user_id=user_id)
    for start in range(0, len(changed), 1000):
        chunk = changed[start:start + 1000]
        removals: dict = {}
        for image_id in chunk:
            for class_id in current[image_id] - plans[image_id]:
                removals.setdefault(class_id, []).append(image_id)
        for class_id, image_ids in removals.items():
            session.execute(delete(ClsLabel).where(ClsLabel.dataset_id == dataset.id, ClsLabel.class_id == class_id,
                                                   ClsLabel.image_id.in_(image_ids)))
        session.execute(update(ClsLabel).where(ClsLabel.dataset_id == dataset.id, ClsLabel.image_id.in_(chunk))
                        .values(user_id=user_id, confidence=None, is_ai_generated=False, ai_model=None)
                        .execution_options(synchronize_session=False))
        added = [{"id": uuid.uuid4(), "dataset_id": dataset.id, "image_id": image_id, "class_id": class_id,
                  "user_id": user_id, "is_ai_generated": False, "is_reviewed": False, "created_at": now,
                  "updated_at": now}
                 for image_id in chunk for class_id in sorted(plans[image_id] - current[image_id], key=str)]
        insert_rows(session, ClsLabel.__table__, added)
        session.execute(ClsLabelChange.__table__.insert(), [
            {"id": uuid.uuid4(), "dataset_id": dataset.id, "image_id": image_id, "user_id": user_id,
             "reason": reason, "old_class_ids": sorted(map(str, current[image_id])),
             "new_class_ids": sorted(map(str, plans[image_id])), "split": links[image_id].split, "created_at": now}
            for image_id in chunk])
        labeled = [i for i in chunk if plans[i]]
        cleared = [i for i in chunk if not plans[i]]
        for ids, values in ((labeled, {"status": "labeled", "labeled_by": user_id, "labeled_at": now}),
                            (cleared, {"status": "pending", "labeled_by": None, "labeled_at": None})):
            if ids:
                session.execute(update(ClsDatasetImage).where(
                    ClsDatasetImage.dataset_id == dataset.id, ClsDatasetImage.image_id.in_(ids))
                    .values(label_revision=ClsDatasetImage.label_revision + 1, **values)
                    .execution_options(synchronize_session=False))
    if changed:  # the links and labels in the session were changed behind its back
        session.expire_all()


def _bulk_apply(session: Session, *, dataset: ClsDataset, image_ids: list, target, user_id, reason: str) -> int:
    links = lock_links(session, dataset.id, image_ids)
    missing = [i for i in image_ids if i not in links]
    if missing:
        raise NotFound(f"{len(missing)} of the images are not in dataset {dataset.name!r} (first: {missing[0]})")
    current: dict[uuid.UUID, set] = {i: set() for i in image_ids}
    for start in range(0, len(image_ids), 1000):
        for image_id, class_id in session.execute(select(ClsLabel.image_id, ClsLabel.class_id).where(
                ClsLabel.dataset_id == dataset.id, ClsLabel.image_id.in_(image_ids[start:start + 1000]))):
            current[image_id].add(class_id)
    plans = {i: target(current[i]) for i in image_ids}
    changed = [i for i in image_ids if plans[i] != current[i]]
    if not changed:
        return 0
    touched = set().union(*(current[i] ^ plans[i] for i in changed))
    had = _classes_in_dataset(session, dataset.id, touched)
    _write_label_sets(session, dataset=dataset, links=links, current=current, plans=plans, changed=changed,
                      user_id=user_id, reason=reason)
    _apply_label_deltas(session, dataset_id=dataset.id, before={i: current[i] for i in changed},
                       after={i: plans[i] for i in changed}, had_classes=had)
    session.flush()
    return len(changed)


