"""Most similar library images: each process keeps one VectorIndex per embedding index (as the pHash
index is kept per process, core.library.library_index), built from the shards on first use and grown
with the rows recorded since, without a rebuild. The same on SQLite and Postgres: the database only
says which shards exist; vectors come from object storage."""

from __future__ import annotations

import threading
import uuid
import weakref
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.models import ClsEmbeddingIndex, ClsImage
from core.similarity import shards
from core.similarity.ann import VectorIndex
from core.similarity.embeddings import find_index
from core.storage import get_storage

MAX_K = 1000
"""Most neighbours one query returns."""


class LoadedIndex:
    """One embedding index in memory: the ANN graph, and which image each position holds."""

    def __init__(self, index_id: uuid.UUID, dim: int):
        self.index_id = index_id
        self.vectors = VectorIndex(dim)
        self.image_ids: list[uuid.UUID] = []
        self.position_of: dict[uuid.UUID, int] = {}
        self.loaded = [0]  # rows taken from each shard, in shard order
        self.lock = threading.Lock()

    def catch_up(self, storage, recorded: list[dict[str, Any]]) -> int:
        """Take in the rows recorded since the last look (new shards, or a last shard grown); returns
        how many were added."""
        added = 0
        with self.lock:
            for number, shard in enumerate(recorded):
                if number >= len(self.loaded):
                    self.loaded.append(0)
                start = self.loaded[number]
                if int(shard["count"]) <= start:
                    continue
                raw_ids, vectors = shards.read_shard(storage, shard, start)
                ids = shards.ids_of(raw_ids)
                for position, image_id in zip(self.vectors.add(vectors), ids, strict=True):
                    self.position_of[image_id] = int(position)
                self.image_ids += ids
                self.loaded[number] = int(shard["count"])
                added += len(ids)
        return added

    def search(self, query: np.ndarray, k: int) -> list[tuple[uuid.UUID, float]]:
        with self.lock:
            positions, similarity = self.vectors.search(query, k)
            return [(self.image_ids[p], float(s)) for p, s in zip(positions[0], similarity[0], strict=True) if p >= 0]

    def vector_of(self, image_id: uuid.UUID) -> np.ndarray | None:
        with self.lock:
            position = self.position_of.get(image_id)
            return None if position is None else self.vectors.vectors([position])[0]


_loaded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_loaded_lock = threading.Lock()


def loaded_index(session: Session, storage, row: ClsEmbeddingIndex) -> LoadedIndex:
    """This process's copy of an index (one per engine and index), caught up with the row."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    with _loaded_lock:
        per_engine = _loaded.setdefault(engine, {})
        found = per_engine.get(row.id)
        if found is None or found.vectors.dim != row.dim:
            found = per_engine[row.id] = LoadedIndex(row.id, int(row.dim))
    found.catch_up(storage, list(row.shards or []))
    return found


def similar_images(session: Session, *, image_id: uuid.UUID | None = None, vector=None, k: int = 20,
                   min_similarity: float = 0.0, source: str | None = None, storage=None) -> list[dict[str, Any]]:
    """The `k` library images most similar to an image (by id) or a vector, best first, each with its
    cosine similarity ≥ `min_similarity`; images deleted since they were embedded are left out."""
    if (image_id is None) == (vector is None):
        raise InvalidInput("give an image id or a vector, not both")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    if not -1.0 <= float(min_similarity) <= 1.0:
        raise InvalidInput(f"min similarity must be between -1 and 1, got {min_similarity!r}")
    if storage is None:
        storage = get_storage()
    row = find_index(session=session, source=source)
    if not row.count:
        return []
    loaded = loaded_index(session, storage, row)
    if image_id is not None:
        vector = loaded.vector_of(image_id)
        if vector is None:
            raise InvalidInput(f"image {image_id} is not in the {row.source} index yet; run the embedding job again")
    query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if query.shape[1] != row.dim:
        raise InvalidInput(f"the vector has {query.shape[1]} dimensions; the {row.source} index has {row.dim}")
    found = [(i, s) for i, s in loaded.search(query, k + 1) if i != image_id and s >= min_similarity][:k]
    names = dict(session.execute(select(ClsImage.id, ClsImage.original_filename)
                                 .where(ClsImage.id.in_([i for i, _ in found]))).all()) if found else {}
    return [{"id": i, "similarity": round(s, 4), "filename": names[i]} for i, s in found if i in names]
