"""What splitting knows of a dataset's images (ImageFacts: labels, split, hashes) and the groups
that must share a split: exact and near duplicates (as core.library.duplicates finds and confirms
them), and which of those groups straddle splits."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.library.duplicates import DEFAULT_THRESHOLD, check_threshold, ensure_fine_hashes, near_duplicate_components
from core.models import ClsDataset, ClsDatasetImage, ClsImage, ClsLabel
from core.storage import get_storage
from core.vocabulary import TRAINING_SPLITS


@dataclass(slots=True)  # 200,000 of them at once: no per-instance dict
class ImageFacts:
    """What splits, versions, health and export need to know about one image of a dataset."""

    image_id: uuid.UUID
    split: str
    status: str
    class_ids: list[uuid.UUID] = field(default_factory=list)
    file_hash: str | None = None
    phash: str | None = None
    width: int | None = None
    height: int | None = None
    original_filename: str | None = None
    filename: str = ""
    storage_path: str = ""


BY_INT = attrgetter("int")
"""Sort key of UUIDs: the same order as their text, without building it."""


def get_dataset(session: Session, dataset_id: uuid.UUID) -> ClsDataset:
    dataset = session.get(ClsDataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def dataset_image_facts(session: Session, dataset_id: uuid.UUID) -> list[ImageFacts]:
    """Every image of the dataset with its split, status and class ids (sorted), in image-id order.

    Read as plain rows (no ORM result processing) and sorted by the UUIDs themselves (their order is
    their text's order): at 200,000 images the ORM rows and str() sort keys were most of its time."""
    connection = session.connection()
    labels: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for image_id, class_id in connection.execute(
        select(ClsLabel.image_id, ClsLabel.class_id).where(ClsLabel.dataset_id == dataset_id)
    ):
        labels[image_id].append(class_id)
    rows = connection.execute(
        select(ClsDatasetImage.image_id, ClsDatasetImage.split, ClsDatasetImage.status, ClsImage.file_hash,
               ClsImage.phash, ClsImage.width, ClsImage.height, ClsImage.original_filename,
               ClsImage.filename, ClsImage.storage_path)
        .join(ClsImage, ClsImage.id == ClsDatasetImage.image_id)
        .where(ClsDatasetImage.dataset_id == dataset_id)
    )
    no_labels: list[uuid.UUID] = []
    facts = [
        ImageFacts(image_id, split or "unassigned", status, sorted(labels.get(image_id, no_labels), key=BY_INT), file_hash,
                   phash, width, height, original_filename, filename, storage_path)
        for image_id, split, status, file_hash, phash, width, height, original_filename, filename, storage_path
        in rows
    ]
    facts.sort(key=attrgetter("image_id.int"))  # C-level int compares; UUID.__lt__ is Python
    return facts


def resolve_threshold(near_duplicate_threshold: int | None) -> int:
    """None → the platform's near-duplicate distance (core.library.duplicates.DEFAULT_THRESHOLD); 0 → only
    identical files group images; else a pHash distance checked by core.library.duplicates."""
    if near_duplicate_threshold is None:
        return DEFAULT_THRESHOLD
    return check_threshold(near_duplicate_threshold)


def duplicate_groups(facts: list[ImageFacts], near_duplicate_threshold: int = 0, *, session: Session | None = None,
                     storage=None) -> list[set[uuid.UUID]]:
    """Groups (2+ images) linked by identical SHA-256, or by a pHash within the threshold that the
    256-bit hash confirms (core.library.duplicates: the Duplicates view's own definition, so a
    plain 64-bit pHash match between unrelated images never chains a dataset into one group).

    Graph components come from scipy; `session` and `storage` compute missing confirm hashes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not facts:
        return []
    index = {fact.image_id: i for i, fact in enumerate(facts)}
    edges: list[tuple[int, int]] = []
    first_seen: dict[str, int] = {}
    for i, fact in enumerate(facts):
        if fact.file_hash:
            edges.append((first_seen.setdefault(fact.file_hash, i), i))
    if near_duplicate_threshold and session is not None:
        for component in _near_components(facts, near_duplicate_threshold, session, storage):
            members = [index[image_id] for image_id in component]
            edges.extend((members[0], other) for other in members[1:])
    rows, cols = zip(*edges, strict=True) if edges else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(facts), len(facts)))
    _, component_of = connected_components(graph, directed=False)
    groups: dict[int, set[uuid.UUID]] = defaultdict(set)
    for i, component in enumerate(component_of):
        groups[component].add(facts[i].image_id)
    return [group for group in groups.values() if len(group) > 1]


def _near_components(facts: list[ImageFacts], threshold: int, session: Session, storage) -> list[set[uuid.UUID]]:
    """pHash candidates first (fast), then the confirm hash only for the images in a candidate group."""
    hashes = {fact.image_id: fact.phash for fact in facts if fact.phash}
    candidates = near_duplicate_components(hashes, threshold)
    involved = set().union(*candidates) if candidates else set()
    if not involved:
        return []
    if storage is None:
        storage = get_storage()
    fine = ensure_fine_hashes(session=session, storage=storage, image_ids=involved)
    return near_duplicate_components({i: hashes[i] for i in involved}, threshold, confirm_hashes=fine)


EXAMPLES = 5
"""Straddling groups listed by name in a report (the count is always exact)."""


def _straddles(group: set[uuid.UUID], splits: dict[uuid.UUID, str]) -> bool:
    return len({splits.get(i) for i in group} & set(TRAINING_SPLITS)) > 1


def straddling_report(labeled: list[ImageFacts], groups: list[set[uuid.UUID]],
                      splits: dict[uuid.UUID, str] | None = None) -> dict[str, Any]:
    """Duplicate groups whose members sit in more than one split (`splits`: the splits to judge, by
    default the images' own): how many, how many images, and the first few named by file."""
    by_id = {fact.image_id: fact for fact in labeled}
    splits = splits or {fact.image_id: fact.split for fact in labeled}
    straddling = sorted((g for g in groups if _straddles(g, splits)), key=lambda g: str(min(g, key=str)))
    examples = [[{"image_id": str(i), "filename": by_id[i].original_filename or by_id[i].filename,
                  "split": splits.get(i)} for i in sorted(group, key=lambda i: (str(splits.get(i)), str(i)))]
                for group in straddling[:EXAMPLES]]
    return {"count": len(straddling), "images": sum(len(g) for g in straddling), "examples": examples}
