"""The approximate nearest-neighbour graph over embedding vectors (usearch HNSW), without database
code: how it is configured, built from vectors in batches, grown without a rebuild, and searched.

Why usearch: a maintained HNSW with float16/int8 storage, multi-threaded adds, incremental `add`
and a memory-mapped `view`; faiss-cpu would also do, but its HNSW has no in-place int8 cosine and
needs a separate id map. Measured on a shared 2-core machine (bench/bench_similarity.py, clustered
512-d vectors): at 200,000 these settings give recall@10 0.975 at p50 0.5 ms; at 1,000,000 p50 0.7 ms,
p95 5.5 ms but recall@10 only 0.63 (0.87 at expansion_search 1536, p50 10.5 ms): the graph built with
these settings is the limit there, not the search depth or the int8 re-scoring. A denser graph
(connectivity 32, expansion_add 128) gave recall@10 1.000 at 300,000 (p50 1.0 ms, p95 9.2 ms) but
builds at ≈ 420 vectors/s here (≈ 40 min for 1,000,000): not yet measured at 1,000,000, so not yet
the default; a build that slow belongs in the embedding job, with the graph saved to storage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONNECTIVITY = 16
"""Links per node (HNSW's M): memory per vector is about 2·M·4 bytes on the base layer."""

EXPANSION_ADD = 48
"""Candidates kept while inserting (efConstruction): build time grows with it, recall too."""

EXPANSION_SEARCH = 96
"""Candidates kept while searching (ef): the knob between latency and recall@k."""

STORAGE_DTYPE = "i8"
"""How the graph holds vectors: int8 (a quarter of float32) makes each distance cheap enough for the
2-core target; its coarse similarities are corrected by re-scoring (RERANK_FACTOR)."""

RERANK_FACTOR = 4
"""The graph proposes k·RERANK_FACTOR candidates, re-scored exactly on the float16 vectors: recall@10
and the similarities returned are those of the float16 vectors, not of the int8 graph (0 turns it off)."""

CHUNK_ROWS = 65_536
"""Rows per block of the float16 copy kept for re-scoring: it grows by blocks, never by copying all."""


@dataclass(frozen=True)
class AnnSettings:
    connectivity: int = CONNECTIVITY
    expansion_add: int = EXPANSION_ADD
    expansion_search: int = EXPANSION_SEARCH
    dtype: str = STORAGE_DTYPE
    rerank: int = RERANK_FACTOR


def new_graph(dim: int, settings: AnnSettings = AnnSettings()):
    """An empty cosine HNSW graph of `dim`-dimensional vectors, keyed by uint64."""
    from usearch.index import Index  # deferred: only processes that search load it

    # Inner product on vectors normalised before they are added: the cosine, at half the cost of
    # usearch's "cos" metric, which normalises again inside every distance.
    return Index(ndim=dim, metric="ip", dtype=settings.dtype, connectivity=settings.connectivity,
                 expansion_add=settings.expansion_add, expansion_search=settings.expansion_search)


class VectorIndex:
    """Unit vectors by position (0, 1, 2… in the order added): the graph proposes, the float16 copy
    re-scores. Adding appends without a rebuild. Not thread-safe by itself (callers lock)."""

    def __init__(self, dim: int, settings: AnnSettings = AnnSettings()):
        self.dim, self.settings = dim, settings
        self.graph = new_graph(dim, settings)
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, vectors: np.ndarray, *, threads: int = 0, batch: int = 65_536) -> np.ndarray:
        """Append vectors (any float dtype; cast to float32 per batch for the graph); their positions."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} dimensions, got shape {vectors.shape}")
        positions = np.arange(self.count, self.count + len(vectors), dtype=np.uint64)
        for start in range(0, len(vectors), batch):
            chunk = np.ascontiguousarray(vectors[start:start + batch], dtype=np.float32)
            chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
            self.graph.add(positions[start:start + batch], chunk, threads=threads)
            self._keep(chunk.astype(np.float16))
        return positions.astype(np.int64)

    def _keep(self, vectors: np.ndarray) -> None:
        done = 0
        while done < len(vectors):
            if not self.blocks or len(self.blocks[-1]) == CHUNK_ROWS:
                self.blocks.append(np.empty((0, self.dim), dtype=np.float16))
            room = CHUNK_ROWS - len(self.blocks[-1])
            self.blocks[-1] = np.concatenate([self.blocks[-1], vectors[done:done + room]])
            done += room
        self.count += len(vectors)

    def vectors(self, positions) -> np.ndarray:
        """The float16 vectors at these positions, as float32."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        for row, position in enumerate(positions):
            out[row] = self.blocks[position // CHUNK_ROWS][position % CHUNK_ROWS]
        return out

    def search(self, queries: np.ndarray, k: int, *, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosine similarities) of the `k` nearest vectors of each query, best first,
        shaped (n, k'); k' = min(k, count). Queries need not be normalised."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        k = min(int(k), self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        wanted = min(self.count, k * self.settings.rerank) if self.settings.rerank else k
        found = self.graph.search(queries, wanted, threads=threads)
        keys = np.atleast_2d(found.keys).astype(np.int64)
        # one query comes back as Matches (no `counts`), several as BatchMatches
        counts = np.atleast_1d(found.counts) if hasattr(found, "counts") else np.array([len(found)])
        out_keys = np.full((len(queries), k), -1, dtype=np.int64)
        out_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            candidates = keys[row, :counts[row]]
            if self.settings.rerank:
                sims = self.vectors(candidates) @ query
            else:
                sims = 1.0 - np.atleast_2d(found.distances)[row, :counts[row]].astype(np.float32)
            order = np.argsort(-sims, kind="stable")[:k]
            out_keys[row, :len(order)], out_sims[row, :len(order)] = candidates[order], sims[order]
        return out_keys, out_sims
