"""A map of an embedding index: every vector projected to 2-D, computed once by a job (`similarity_map`)
and kept beside the shards (`embeddings/<index id>/map.npz`: image ids, x/y as float32, the row count
it covers and the method), so a page only reads a few MB and never projects while a user waits.

Methods: PCA (scikit-learn, randomized, fitted on at most PCA_FIT_POINTS) always works and is quick:
3.4 s for 10,000 vectors and 11 s for 100,000 (reading the shards 1 s of it) on the shared 2-core
machine at load ≈ 12. UMAP (umap-learn) keeps neighbourhoods, what a map is for, but is slow here
(10,000 points: 414 s, its 21 s import and numba compilation included), so "auto" takes it only up
to UMAP_AUTO_MAX points and PCA above; asked for by name, UMAP is fitted on a seeded sample of at most
UMAP_MAX_FIT points and places the others with its `transform`. Either way it is a job: the page
never projects while a user waits.
Figures: bench/bench_similarity_map.py."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import InvalidInput, NotFound, UserError
from core.jobs.queue import enqueue
from core.permissions import requires
from core.similarity import shards
from core.similarity.embeddings import find_index
from core.storage import get_storage
from core.users import User

MAP_JOB_KIND = "similarity_map"
METHODS = ("auto", "umap", "pca")
PCA_FIT_POINTS = 50_000
UMAP_MAX_FIT = 20_000
"""UMAP is fitted on at most this many points (a seeded sample); the others are placed by transform."""
UMAP_AUTO_MAX = 5_000
"""Largest index "auto" projects with UMAP (when umap-learn is installed); PCA above."""
SEED = 0


def map_key(index_id: uuid.UUID | str) -> str:
    return f"embeddings/{index_id}/map.npz"


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project(vectors: np.ndarray, method: str = "auto", *, seed: int = SEED) -> tuple[np.ndarray, str]:
    """(n, 2) float32 coordinates of (n, d) vectors, and the method used ("umap" or "pca")."""
    if method not in METHODS:
        raise InvalidInput(f"map method {method!r}: one of {', '.join(METHODS)}")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 3:  # too few to fit anything: placed on a line
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32), "pca"
    if method == "umap" and not umap_available():
        raise InvalidInput("UMAP needs umap-learn (pip install umap-learn); PCA always works")
    if method == "auto":
        method = "umap" if 15 <= n <= UMAP_AUTO_MAX and umap_available() else "pca"
    rng = np.random.default_rng(seed)
    if method == "umap":
        import umap

        fit_rows = np.sort(rng.choice(n, UMAP_MAX_FIT, replace=False)) if n > UMAP_MAX_FIT else np.arange(n)
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(fit_rows) - 1), metric="cosine",
                            random_state=seed, low_memory=True)
        xy = np.empty((n, 2), dtype=np.float32)
        xy[fit_rows] = reducer.fit_transform(vectors[fit_rows])
        rest = np.setdiff1d(np.arange(n), fit_rows)
        if len(rest):
            xy[rest] = reducer.transform(vectors[rest])
        return xy, "umap"
    from sklearn.decomposition import PCA

    fit_rows = rng.choice(n, PCA_FIT_POINTS, replace=False) if n > PCA_FIT_POINTS else slice(None)
    pca = PCA(n_components=2, svd_solver="randomized", random_state=seed).fit(vectors[fit_rows])
    return pca.transform(vectors).astype(np.float32), "pca"


def index_vectors(storage, recorded: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids as 16-byte values, float16 vectors) of every recorded row of an index, shard by shard."""
    ids, vectors = [], []
    for shard in recorded:
        raw_ids, shard_vectors = shards.read_shard(storage, shard)
        ids.append(raw_ids)
        vectors.append(shard_vectors)
    if not ids:
        return np.zeros(0, dtype="V16"), np.zeros((0, 0), dtype=np.float16)
    return np.concatenate(ids), np.concatenate(vectors)


def _index_row(session: Session, source: str | None):
    return find_index(session=session, source=source)


@requires("admin", "computing image embeddings")
def build_map(*, actor: User, source: str | None = None, method: str = "auto", progress=None) -> dict[str, Any]:
    """Project every vector of an index (the newest with vectors when `source` is None) and store the
    map beside its shards, replacing the last one; a summary with the seconds each step took."""
    if method not in METHODS:
        raise InvalidInput(f"map method {method!r}: one of {', '.join(METHODS)}")
    report = progress or (lambda *args, **kwargs: None)
    storage = get_storage()
    with session_scope() as session:
        row = _index_row(session, source)
        index_id, recorded, index_source = row.id, [dict(s) for s in row.shards or []], row.source
    started = time.perf_counter()
    report(0, 3, "reading vectors")
    ids, vectors = index_vectors(storage, recorded)
    read_s = time.perf_counter() - started
    report(1, 3, f"projecting {len(ids):,} vectors")
    xy, used = project(vectors, method)
    project_s = time.perf_counter() - started - read_s
    buffer = io.BytesIO()
    np.savez(buffer, ids=ids, xy=xy, meta=np.array(json.dumps({"method": used, "count": len(ids)})))
    storage.put(map_key(index_id), buffer.getvalue(), "application/octet-stream")
    report(3, 3, "map stored")
    return {"index_id": str(index_id), "source": index_source, "points": len(ids), "method": used,
            "read_s": round(read_s, 2), "project_s": round(project_s, 2)}


@requires("admin", "computing image embeddings")
def start_map(*, actor: User, source: str | None = None, method: str = "auto") -> uuid.UUID:
    """Queue the map job of an index (queue "predictions"); the job id."""
    if method not in METHODS:
        raise InvalidInput(f"map method {method!r}: one of {', '.join(METHODS)}")
    with session_scope() as session:
        row = _index_row(session, source)  # NotFound before a job row exists
        if not row.count:
            raise NotFound(f"the {row.source} index has no vectors yet; run the embeddings job first")
        source = row.source
    return enqueue(actor=actor, kind=MAP_JOB_KIND, params={"source": source, "method": method})


def stored_map(*, session: Session, storage, source: str | None = None) -> dict[str, Any] | None:
    """The stored map of an index: {index_id, source, method, ids (16-byte values), xy, count,
    index_count}; None when none was computed. `count` < `index_count`: images embedded since."""
    row = _index_row(session, source)
    try:
        data = storage.get(map_key(row.id))
    except UserError:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        return {"index_id": row.id, "source": row.source, "method": meta["method"], "count": int(meta["count"]),
                "index_count": int(row.count), "ids": stored["ids"], "xy": stored["xy"]}
