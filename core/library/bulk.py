"""Bulk actions on many images (tag, add to a dataset, set or clear a label, remove from a dataset,
delete): the same services as for a few images, applied in batches, each batch its own short
transaction, so an action on 100,000 images never holds a lock that a labeler waits on for long.

Batches are sized by time: the first has FIRST_BATCH images, and each next one is resized so that its
transaction takes about TARGET_BATCH_S (between MIN_BATCH and MAX_BATCH images); a labeler saving on
the same dataset or with the same class waits for at most one batch. Counts stay exact batch by batch
(each batch moves them by its own difference, core.labeling.counts._apply_label_deltas).

An action that stops part-way (an error, the process killed) keeps the batches already committed,
each consistent; running it again finishes the rest (every action is idempotent: tags already there,
images already in the dataset or already labeled so, images already deleted are skipped). The audit
row of a destructive action is written with its first batch and its row count grows with each batch,
in that batch's transaction, so it always says how many rows were really changed.

Each action declares its role and every batch calls a declared service with the same actor, so the
role is checked again per batch: a role removed part-way stops the action after the current batch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import select, update

from core.datasets.dataset import add_images_to_dataset, detach_images_everywhere, remove_images_from_dataset
from core.db import session_scope
from core.errors import InvalidInput, NotFound, UserError
from core.ids import as_uuid
from core.labeling.bulk_labels import check_bulk_label, clear_labels_batch, set_label_batch
from core.library.images import _delete_images, clean_tags, update_tags
from core.models import ClsAuditEvent, ClsDataset, ClsImage
from core.permissions import requires
from core.users import User
from core.vocabulary import SPLITS

TARGET_BATCH_S = 0.25
FIRST_BATCH = 200
MIN_BATCH = 50
MAX_BATCH = 2000

Progress = Callable[[int, int, str], None]


class _Audit:
    """One audit row for the whole action, inserted with the first batch that changed rows and
    incremented by every later one (in each batch's own transaction)."""

    def __init__(self, actor: User, action: str, target_type: str, target_id=None, details: dict | None = None):
        self.actor, self.action, self.target_type = actor, action, target_type
        self.target_id = str(target_id) if target_id is not None else None
        self.details, self.id = details or {}, None

    def add(self, session, rows: int) -> None:
        if not rows:
            return
        if self.id is None:
            self.id = uuid.uuid4()
            session.add(ClsAuditEvent(id=self.id, user_id=self.actor.id, user_email=self.actor.email, action=self.action,
                                      target_type=self.target_type, target_id=self.target_id, row_count=rows,
                                      details={**self.details, "batched": True}))
        else:
            session.execute(update(ClsAuditEvent).where(ClsAuditEvent.id == self.id)
                            .values(row_count=ClsAuditEvent.row_count + rows))


def _unique_ids(image_ids: Iterable) -> list[uuid.UUID]:
    return list(dict.fromkeys(as_uuid(i, "image") for i in image_ids))


def run_in_batches(ids: list, apply: Callable, *, audit: _Audit | None = None, progress: Progress | None = None,
                   what: str = "images", target_s: float = TARGET_BATCH_S, first: int = FIRST_BATCH) -> int:
    """`apply(session, chunk) -> rows changed` over `ids`, one transaction per batch, batch sizes
    adapted to take about `target_s` each; returns the total. A failing batch is rolled back alone
    and the error says how many were done before it."""
    done = changed = 0
    size = max(MIN_BATCH, min(MAX_BATCH, first))
    if progress is not None and ids:  # the checks are done: the batches start
        progress(0, len(ids), f"0 of {len(ids):,} {what}")
    while done < len(ids):
        chunk = ids[done:done + size]
        started = time.perf_counter()
        try:
            with session_scope() as session:
                rows = apply(session, chunk)
                if audit is not None:
                    audit.add(session, rows)
        except UserError as exc:
            if done:
                exc.args = (f"{exc} (stopped after {done:,} of {len(ids):,} {what}; "
                            f"{changed:,} changed were kept: run it again to finish)",)
            raise
        took = time.perf_counter() - started
        done += len(chunk)
        changed += rows
        scale = min(1.5, max(0.25, target_s / max(took, 1e-3)))  # grow slowly: timings here are noisy
        size = max(MIN_BATCH, min(MAX_BATCH, int(size * scale)))
        if progress is not None:
            progress(done, len(ids), f"{done:,} of {len(ids):,} {what}")
    return changed


# ---------------------------------------------------------------- library images


@requires("admin", "tagging images")
def tag_images(*, actor: User, image_ids: Iterable, add: Iterable[str] = (), remove: Iterable[str] = (),
               replace: Iterable[str] | None = None, progress: Progress | None = None) -> int:
    """core.library.images.update_tags in batches; returns how many images changed."""
    add, remove = clean_tags(list(add)), clean_tags(list(remove))  # refused before the first batch
    replace = clean_tags(list(replace)) if replace is not None else None
    return run_in_batches(_unique_ids(image_ids), lambda session, chunk: update_tags(
        session=session, actor=actor, image_ids=chunk, add=add, remove=remove, replace=replace), progress=progress)


@requires("admin", "deleting images")
def delete_images(*, actor: User, image_ids: Iterable, storage, progress: Progress | None = None) -> int:
    """Delete library images in batches (each: out of every dataset with counts kept exact, rows
    deleted, objects removed once it commits). Admins only (checked again each batch); one audit row
    with the total."""
    def apply(session, chunk) -> int:
        # Two transactions per batch: the first takes the images out of their datasets (it holds the
        # dataset and class rows that labelers need, briefly); the second deletes the image rows,
        # whose cascades lock nothing a labeler of other images waits on. The second detaches again
        # (one query when nothing came back in between), so no membership is ever cascaded away with
        # its counts left behind.
        with session_scope() as first:
            detach_images_everywhere(session=first, actor=actor, image_ids=chunk)
        return _delete_images(session=session, actor=actor, storage=storage, image_ids=chunk)

    return run_in_batches(_unique_ids(image_ids), apply, audit=_Audit(actor, "delete_images", "image"),
                          progress=progress)


# ---------------------------------------------------------------- dataset membership and labels


def _dataset_exists(dataset_id: uuid.UUID) -> None:
    with session_scope() as session:
        if session.get(ClsDataset, dataset_id) is None:
            raise NotFound(f"dataset {dataset_id} does not exist")


@requires("admin", "adding images to a dataset")
def add_to_dataset(*, actor: User, dataset_id, image_ids: Iterable, split=None,
                   progress: Progress | None = None) -> int:
    """Add library images to a dataset in batches (those already in it are left); unknown ids are
    refused by name before anything is added. Returns how many were added."""
    dataset_id = as_uuid(dataset_id, "dataset")
    if split is not None and split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    ids = _unique_ids(image_ids)
    _dataset_exists(dataset_id)
    with session_scope() as session:
        known: set = set()
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            known |= set(session.scalars(select(ClsImage.id).where(ClsImage.id.in_(chunk))).all())
    missing = [i for i in ids if i not in known]
    if missing:
        raise NotFound(f"{len(missing)} image id(s) are not in the library (first: {missing[0]})")
    return run_in_batches(ids, lambda session, chunk: add_images_to_dataset(
        session=session, actor=actor, dataset_id=dataset_id, image_ids=chunk, split=split), progress=progress)


@requires("admin", "removing images from a dataset")
def remove_from_dataset(*, actor: User, dataset_id, image_ids: Iterable, progress: Progress | None = None) -> int:
    """Take images out of a dataset with their labels, in batches; returns how many."""
    dataset_id = as_uuid(dataset_id, "dataset")
    _dataset_exists(dataset_id)
    return run_in_batches(_unique_ids(image_ids), lambda session, chunk: remove_images_from_dataset(
        session=session, actor=actor, dataset_id=dataset_id, image_ids=chunk), progress=progress)


@requires("labeler", "changing labels in bulk")
def set_label(*, actor: User, dataset_id, image_ids: Iterable, class_id, mode: str = "replace",
              progress: Progress | None = None) -> int:
    """core.labeling.bulk_labels.bulk_set_label in batches (labeler role, checked again each batch; one audit row)."""
    dataset_id, class_id = as_uuid(dataset_id, "dataset"), as_uuid(class_id, "class")
    with session_scope() as session:
        check_bulk_label(session=session, dataset_id=dataset_id, class_id=class_id, mode=mode)
    audit = _Audit(actor, "bulk_set_label", "dataset", dataset_id, {"class_id": str(class_id), "mode": mode})
    return run_in_batches(_unique_ids(image_ids), lambda session, chunk: set_label_batch(
        session=session, actor=actor, dataset_id=dataset_id, image_ids=chunk, class_id=class_id, mode=mode),
        audit=audit, progress=progress)


@requires("labeler", "clearing labels in bulk")
def clear_labels(*, actor: User, dataset_id, image_ids: Iterable, progress: Progress | None = None) -> int:
    """core.labeling.bulk_labels.bulk_clear_labels in batches (labeler role, checked again each batch; one audit row)."""
    dataset_id = as_uuid(dataset_id, "dataset")
    _dataset_exists(dataset_id)
    audit = _Audit(actor, "bulk_clear_labels", "dataset", dataset_id)
    return run_in_batches(_unique_ids(image_ids), lambda session, chunk: clear_labels_batch(
        session=session, actor=actor, dataset_id=dataset_id, image_ids=chunk), audit=audit, progress=progress)
