"""Dataset versions: immutable snapshots of a dataset's labeled images for training.

A version freezes the class mapping (class id → index, in the dataset's label-space order), the split and the
labels of every labeled image into a manifest in storage, `versions/<version_id>/manifest.jsonl`, one
JSON object per image:

    {"image_id": str, "key": storage key of the original bytes, "sha256": str,
     "filename": original filename, "labels": [indices into class_names], "split": "train"|"val"|"test"}

The cls_dataset_versions row holds the mapping, names, counts, image ids per split and the manifest's
SHA-256 (read_manifest verifies it). Later label edits never change an existing version.

Labeled images with no split when a version is created are first given one by the dataset's ratios
(stratified, `splits.assign_unassigned`), leaving every assigned image where it is, whoever assigned
it (a person, an archive's train/valid/test folders): a version always covers every labeled image and
never moves one. What would hurt training (classes without val or test images, near duplicates
across splits) is reported before a version is made (core.datasets.split_checks.version_warnings).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.datasets.label_space import space_class_ids
from core.datasets.locks import lock_dataset
from core.datasets.split_facts import dataset_image_facts, get_dataset
from core.datasets.splits import assign_unassigned
from core.errors import Conflict, InvalidInput, NotFound
from core.models import ClsClass, ClsDataset, ClsDatasetVersion
from core.permissions import requires
from core.users import User
from core.vocabulary import TRAINING_SPLITS

MAX_NOTES = 2000


def manifest_key(version_id: uuid.UUID) -> str:
    return f"versions/{version_id}/manifest.jsonl"


def _lock_dataset(session: Session, dataset_id: uuid.UUID):
    """The dataset's write lock (core.datasets.locks.lock_dataset), so two version creations of one dataset
    take numbers one after the other (the unique (dataset_id, version_number) constraint backs this
    up) and pages see the new version (the lock bumps the dataset's revision)."""
    try:
        return lock_dataset(session, dataset_id)
    except NotFound:
        raise NotFound(f"no dataset {dataset_id}") from None


def class_order(session: Session, dataset_id: uuid.UUID, used: set[uuid.UUID]) -> list[ClsClass]:
    """The version's classes: those labeled images use, in the dataset's label-space order (a class of
    the space with no labeled image is left out: a model cannot learn it)."""
    rows = {row.id: row for row in session.scalars(select(ClsClass).where(ClsClass.id.in_(used)))}
    order = [class_id for class_id in space_class_ids(session, dataset_id) if class_id in rows]
    stray = sorted((rows[c] for c in rows if c not in set(order)), key=lambda row: (row.name, str(row.id)))
    return [rows[class_id] for class_id in order] + stray


@requires("admin", "creating a dataset version")
def create_version(*, session: Session, actor: User, storage, dataset_id: uuid.UUID,
                   notes: str | None = None) -> ClsDatasetVersion:
    """Snapshot every labeled image of the dataset (labels, split, class mapping) as the next version."""
    if notes is not None and len(notes) > MAX_NOTES:
        raise InvalidInput(f"notes are {len(notes)} characters; at most {MAX_NOTES} are allowed")
    dataset = _lock_dataset(session, dataset_id)
    assign_unassigned(session=session, actor=actor, dataset_id=dataset_id, storage=storage)
    facts = dataset_image_facts(session, dataset_id)
    labeled = [fact for fact in facts if fact.class_ids]
    if not labeled:
        raise InvalidInput(f"dataset {dataset.name!r} has no labeled images; label some before creating a version")
    if dataset.task_type == "single_label":
        several = [str(fact.image_id) for fact in labeled if len(fact.class_ids) > 1]
        if several:
            raise InvalidInput(
                f"{len(several)} image(s) have several labels in single-label dataset {dataset.name!r} "
                f"(e.g. {', '.join(several[:3])}); fix them first (the health check lists them all)")
    unsplit = [str(fact.image_id) for fact in labeled if fact.split not in TRAINING_SPLITS]
    if unsplit:  # assign_unassigned gives every labeled image a split; this guards the contract
        raise Conflict(f"{len(unsplit)} labeled image(s) have no split; run split first")

    ordered = class_order(session, dataset_id, {c for fact in labeled for c in fact.class_ids})
    mapping = {row.id: index for index, row in enumerate(ordered)}
    class_names = [row.name for row in ordered]

    labeled.sort(key=lambda fact: (TRAINING_SPLITS.index(fact.split), str(fact.image_id)))
    lines, per_class, by_split = [], defaultdict(Counter), defaultdict(list)
    for fact in labeled:
        indices = sorted(mapping[c] for c in fact.class_ids)
        sha256 = fact.file_hash or hashlib.sha256(storage.get(fact.storage_path)).hexdigest()
        lines.append(json.dumps({
            "image_id": str(fact.image_id), "key": fact.storage_path, "sha256": sha256,
            "filename": fact.original_filename or fact.filename, "labels": indices, "split": fact.split,
        }, ensure_ascii=False, sort_keys=True))
        by_split[fact.split].append(str(fact.image_id))
        for index in indices:
            per_class[class_names[index]][fact.split] += 1
    body = ("\n".join(lines) + "\n").encode()

    number = (session.scalar(select(func.max(ClsDatasetVersion.version_number))
                             .where(ClsDatasetVersion.dataset_id == dataset_id)) or 0) + 1
    version = ClsDatasetVersion(
        id=uuid.uuid4(), dataset_id=dataset_id, version_number=number, user_id=actor.id,
        task_type=dataset.task_type, image_count=len(facts), labeled_image_count=len(labeled),
        class_count=len(class_names), class_mapping={str(c): i for c, i in mapping.items()},
        class_names=class_names, split_counts={s: len(by_split[s]) for s in TRAINING_SPLITS},
        train_image_ids=by_split["train"], val_image_ids=by_split["val"], test_image_ids=by_split["test"],
        per_class_counts={name: {s: per_class[name][s] for s in TRAINING_SPLITS} for name in class_names},
        notes=notes or None, manifest_sha256=hashlib.sha256(body).hexdigest(),
    )
    version.manifest_key = manifest_key(version.id)
    # The object first, then its row; a failed insert removes the object again.
    storage.put(version.manifest_key, body, "application/x-ndjson")
    try:
        session.add(version)
        session.flush()
    except BaseException:
        storage.delete(version.manifest_key)
        raise
    return version


def read_manifest(*, storage, version: ClsDatasetVersion) -> list[dict[str, Any]]:
    """The version's manifest lines, after checking the bytes are the ones the version recorded."""
    if not version.manifest_key:
        raise NotFound(f"version {version.version_number} has no manifest")
    body = storage.get(version.manifest_key)
    if hashlib.sha256(body).hexdigest() != version.manifest_sha256:
        raise Conflict(f"the manifest of version {version.version_number} ({version.manifest_key}) does not match "
                       "its recorded SHA-256: it was changed after the version was made")
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def list_versions(*, session: Session, dataset_id: uuid.UUID) -> list[ClsDatasetVersion]:
    get_dataset(session, dataset_id)
    return list(session.scalars(select(ClsDatasetVersion).where(ClsDatasetVersion.dataset_id == dataset_id)
                                .order_by(ClsDatasetVersion.version_number.desc())))


def get_version(*, session: Session, dataset_id: uuid.UUID, number: int | None = None) -> ClsDatasetVersion:
    """Version `number` of the dataset, or its latest when number is None."""
    dataset = get_dataset(session, dataset_id)
    query = select(ClsDatasetVersion).where(ClsDatasetVersion.dataset_id == dataset_id)
    if number is None:
        version = session.scalar(query.order_by(ClsDatasetVersion.version_number.desc()).limit(1))
        if version is None:
            raise NotFound(f"dataset {dataset.name!r} has no versions yet; create one first")
        return version
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidInput(f"version number must be a whole number ≥ 1, not {number!r}")
    version = session.scalar(query.where(ClsDatasetVersion.version_number == number))
    if version is None:
        raise NotFound(f"dataset {dataset.name!r} has no version {number}")
    return version


def version_summary(version: ClsDatasetVersion) -> dict[str, Any]:
    return {
        "id": str(version.id), "dataset_id": str(version.dataset_id), "version_number": version.version_number,
        "task_type": version.task_type, "created_at": version.created_at, "notes": version.notes,
        "image_count": version.image_count, "labeled_image_count": version.labeled_image_count,
        "class_count": version.class_count, "class_names": version.class_names,
        "split_counts": version.split_counts, "per_class_counts": version.per_class_counts,
        "manifest_key": version.manifest_key, "manifest_sha256": version.manifest_sha256,
    }


def _labels_by_image(storage, version: ClsDatasetVersion) -> dict[str, tuple[frozenset[str], str]]:
    names = version.class_names
    return {line["image_id"]: (frozenset(names[i] for i in line["labels"]), line["split"])
            for line in read_manifest(storage=storage, version=version)}


def compare_versions(*, session: Session, storage, dataset_id: uuid.UUID, number_a: int,
                     number_b: int) -> dict[str, Any]:
    """What changed from version a to version b: per-class counts per split, classes added or
    removed, and images added, removed, relabeled or moved to another split (from the manifests)."""
    a = get_version(session=session, dataset_id=dataset_id, number=number_a)
    b = get_version(session=session, dataset_id=dataset_id, number=number_b)
    classes = sorted(set(a.class_names) | set(b.class_names))
    per_class = []
    for name in classes:
        counts_a = (a.per_class_counts or {}).get(name, {})
        counts_b = (b.per_class_counts or {}).get(name, {})
        total_a, total_b = sum(counts_a.values()), sum(counts_b.values())
        per_class.append({"class": name, "a": counts_a, "b": counts_b, "total_a": total_a, "total_b": total_b,
                          "delta": total_b - total_a})
    images_a, images_b = _labels_by_image(storage, a), _labels_by_image(storage, b)
    common = images_a.keys() & images_b.keys()
    return {
        "a": a.version_number, "b": b.version_number,
        "classes_added": sorted(set(b.class_names) - set(a.class_names)),
        "classes_removed": sorted(set(a.class_names) - set(b.class_names)),
        "per_class": per_class,
        "split_counts": {"a": a.split_counts, "b": b.split_counts},
        "images_added": sorted(images_b.keys() - images_a.keys()),
        "images_removed": sorted(images_a.keys() - images_b.keys()),
        "images_relabeled": sorted(i for i in common if images_a[i][0] != images_b[i][0]),
        "images_moved": sorted(i for i in common if images_a[i][1] != images_b[i][1]),
    }


def unassigned_labeled_count(*, session: Session, dataset_id: uuid.UUID) -> int:
    """Labeled images without a split: create_version assigns them by the dataset's ratios. Kept by
    database triggers on every label and membership write (core.models.dataset_aggregates), so it is
    exact in this snapshot, a writer's own uncommitted changes included; counting them joined the
    dataset's rows with its labels (180-370 ms at 200,000 images)."""
    return session.scalar(select(ClsDataset.unassigned_labeled_count).where(ClsDataset.id == dataset_id)) or 0
