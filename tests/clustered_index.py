"""A dataset whose images have known embedding vectors: `groups` tight clusters (plus, if asked, one
far outlier per cluster), recorded as a real embedding index (float16 shards in the stack's storage,
one ClsEmbeddingIndex row), so the labeling tools that read vectors are tested without a model."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np

from core.models import ClsDatasetImage, ClsEmbeddingIndex, utcnow
from core.similarity import shards
from tests.factories import ADMIN, add_to_space, make_class, make_dataset, make_image_row

DIM = 16


def cluster_vectors(groups: int, per_group: int, *, outliers: bool, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Unit vectors around `groups` orthogonal directions; group of each (−1: an outlier, halfway to
    the next direction)."""
    rng = np.random.default_rng(seed)
    vectors, group_of = [], []
    for group in range(groups):
        centre = np.eye(DIM)[group]
        for _ in range(per_group):
            vectors.append(centre + rng.normal(0, 0.05, DIM))
            group_of.append(group)
        if outliers:
            vectors.append(centre + 0.8 * np.eye(DIM)[(group + 1) % groups] + rng.normal(0, 0.05, DIM))
            group_of.append(-1)
    vectors = np.array(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), group_of


def record_index(session, storage, ids: list[uuid.UUID], vectors: np.ndarray, source: str = "timm:test/fixed@none"):
    row = session.query(ClsEmbeddingIndex).filter_by(source=source).one_or_none()
    if row is None:
        row = ClsEmbeddingIndex(source=source, timm_name="fixed", status="ready")
        session.add(row)
        session.flush()
    recorded = shards.append(storage, actor=ADMIN, index_id=row.id, shards=list(row.shards or []), ids=ids,
                             vectors=vectors)
    row.shards, row.dim, row.count = recorded, int(vectors.shape[1]), sum(int(s["count"]) for s in recorded)
    session.flush()
    return row


def clustered_dataset(session, storage, *, groups: int = 3, per_group: int = 8, outliers: bool = True,
                      name: str = "clustered", classes: int = 3):
    """(dataset id, image ids, group of each image, class ids): the images embedded in groups."""
    vectors, group_of = cluster_vectors(groups, per_group, outliers=outliers)
    dataset = make_dataset(session, name)
    class_ids = [make_class(session, f"{name}-c{i}").id for i in range(classes)]
    base = utcnow()
    ids = []
    # added in an order that interleaves nothing: the dataset's own order is group by group
    for n in range(len(vectors)):
        image = make_image_row(session, storage, seed=n)
        session.add(ClsDatasetImage(dataset_id=dataset.id, image_id=image.id, added_at=base + timedelta(seconds=n)))
        ids.append(image.id)
    dataset.image_count = len(ids)
    session.flush()
    add_to_space(session, dataset.id, class_ids)
    record_index(session, storage, ids, vectors)
    return dataset.id, ids, group_of, class_ids
