"""The approximate nearest-neighbour index over embedding vectors (faiss-cpu IVF), without database
code: how it is configured, grown in batches without a rebuild, and searched.

Why an inverted file (IVF) and not a graph: at 1,000,000 512-d vectors on a shared 2-core machine
the build decides. usearch's HNSW built with 16 links per node (expansion_add 48) reached only
recall@10 0.63 at 1,000,000 (0.87 at expansion_search 1536, p50 10.5 ms); a graph dense enough for
1.0 (32 links, expansion_add 128) builds at ≈ 420 vectors/s here, ≈ 40 min for 1,000,000. An IVF
build is a k-means over a sample plus one nearest-centroid assignment per vector (a matrix product
on both cores), and an added vector is assigned the same way, so adds never rebuild.

Measured (bench/bench_similarity.py, 1,000,000 clustered 512-d vectors, 2 cores shared with others,
load average 13-17): build 106-311 s (9,400-3,200 vectors/s, 2,000 lists, the spread is the load),
1,476 MiB (the float16 copy 977 MiB + 8-bit codes); recall@10 1.000 at every probe count from 4 to
128; at 16 probes a query costs 1.3 ms of CPU (p95 1.8 ms): p50 1.4 ms, p95 6.9 ms wall at load 13,
but a pass at load 15-17 saw p50 8-12 ms, p95 58-70 ms, waiting for a core. Adding 10,000 vectors:
0.6-1.1 s, no rebuild, recall unchanged. Uniformly random vectors (no real embedding looks like
them: every neighbour is about as far as any vector) defeat it: recall@10 0.04 at 16 probes, 0.19
at 128 (p50 40 ms); no HNSW graph was measured on them (one that would help builds too slowly).

Small indexes (fewer than TRAIN_AT vectors) are searched exactly; the inverted file is trained the
first time an add takes the index past it, on the vectors held then, and trained again (a rebuild,
amortised) only when the index has grown RETRAIN_GROWTH-fold since, so its lists stay short."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LISTS = 4096
"""Inverted lists (k-means centroids) at most; an index trained at n vectors gets ≈ 2·√n of them
(2,000 at 1,000,000: ≈ 500 vectors a list)."""

SAMPLE_PER_LIST = 40
"""Vectors k-means samples per list (faiss asks for at least 39; more costs build time)."""

PROBES = 16
"""Lists searched per query (nprobe): the knob between latency and recall@k."""

STORAGE_DTYPE = "i8"
"""How the lists hold vectors: 8-bit scalar quantisation (faiss SQ8, a quarter of float32) keeps a
probe cheap; its coarse similarities are corrected by re-scoring (RERANK_FACTOR)."""

RERANK_FACTOR = 4
"""The lists propose k·RERANK_FACTOR candidates, re-scored exactly on the float16 vectors: recall@10
and the similarities returned are those of the float16 vectors, not of the 8-bit codes (0 turns it off)."""

TRAIN_AT = 20_000
"""Below this many vectors the index is searched exactly (≈ 1-2 ms a query)."""

RETRAIN_GROWTH = 8
"""The inverted file is trained again once the index holds this many times the vectors it was trained
on (lists then hold ≈ 4 times as many vectors as when trained: 2·√n lists for 8n vectors)."""

CHUNK_ROWS = 65_536
"""Rows per block of the float16 copy kept for re-scoring: it grows by blocks, never by copying all."""


@dataclass(frozen=True)
class AnnSettings:
    lists: int = LISTS
    probes: int = PROBES
    dtype: str = STORAGE_DTYPE
    rerank: int = RERANK_FACTOR
    train_at: int = TRAIN_AT


def _codes(dtype: str) -> str:
    codes = {"i8": "SQ8", "f16": "SQfp16", "f32": "Flat"}
    if dtype not in codes:
        raise ValueError(f"storage dtype must be one of {sorted(codes)}, got {dtype!r}")
    return codes[dtype]


class VectorIndex:
    """Unit vectors by position (0, 1, 2… in the order added): the inverted file proposes, the float16
    copy re-scores. Adding appends without a rebuild. Not thread-safe by itself (callers lock)."""

    def __init__(self, dim: int, settings: AnnSettings = AnnSettings()):
        _codes(settings.dtype)
        self.dim, self.settings = dim, settings
        self.ivf = None  # faiss.IndexIVFScalarQuantizer / IndexIVFFlat once trained
        self.trained_on = 0
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def memory_bytes(self) -> int:
        """The float16 copy plus the inverted file's codes, ids and centroids (approximately)."""
        codes = 0
        if self.ivf is not None:
            codes = self.ivf.ntotal * (self.ivf.code_size + 8) + self.ivf.nlist * self.dim * 4
        return self.count * self.dim * 2 + codes

    def add(self, vectors: np.ndarray, *, threads: int = 0, batch: int = 65_536) -> np.ndarray:
        """Append vectors (any float dtype; cast to float32 per batch); their positions. `threads`:
        cores for the assignment (0: faiss's default, every core)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} dimensions, got shape {vectors.shape}")
        first = self.count
        with _threads(threads):
            for start in range(0, len(vectors), batch):
                chunk = np.ascontiguousarray(vectors[start:start + batch], dtype=np.float32)
                chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
                if self.ivf is not None:
                    self.ivf.add(chunk)
                self._keep(chunk.astype(np.float16))
            if self.count >= self.settings.train_at and (
                    self.ivf is None or self.count >= RETRAIN_GROWTH * self.trained_on):
                self._train()
        return np.arange(first, self.count, dtype=np.int64)

    def _train(self) -> None:
        """(Re)build the inverted file from every vector held: k-means on a sample, then every vector
        assigned to its nearest centroid."""
        import faiss  # deferred: only processes that search load it

        lists = max(1, min(self.settings.lists, round(2 * self.count ** 0.5)))
        ivf = faiss.index_factory(self.dim, f"IVF{lists},{_codes(self.settings.dtype)}", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(self.count, min(self.count, lists * SAMPLE_PER_LIST), replace=False))
        ivf.train(self.vectors(sample))
        ivf.nprobe = min(self.settings.probes, lists)
        for start in range(0, self.count, CHUNK_ROWS):
            ivf.add(self.blocks[start // CHUNK_ROWS].astype(np.float32))
        self.ivf, self.trained_on = ivf, self.count

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
        block_of, row_of = positions // CHUNK_ROWS, positions % CHUNK_ROWS
        for block in np.unique(block_of):
            here = block_of == block
            out[here] = self.blocks[block][row_of[here]]
        return out

    def search(self, queries: np.ndarray, k: int, *, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(positions, cosine similarities) of the `k` nearest vectors of each query, best first,
        shaped (n, k'); k' = min(k, count); -1 / -inf where fewer were found. Queries need not be
        normalised."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        k = min(int(k), self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        if self.ivf is None:
            return self._exact(queries, k)
        wanted = min(self.count, k * self.settings.rerank) if self.settings.rerank else k
        with _threads(threads):
            scores, keys = self.ivf.search(queries, wanted)
        out_keys = np.full((len(queries), k), -1, dtype=np.int64)
        out_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            candidates = keys[row][keys[row] >= 0]
            sims = self.vectors(candidates) @ query if self.settings.rerank else scores[row][keys[row] >= 0]
            order = np.argsort(-sims, kind="stable")[:k]
            out_keys[row, :len(order)], out_sims[row, :len(order)] = candidates[order], sims[order]
        return out_keys, out_sims

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = np.concatenate([queries @ block.astype(np.float32).T for block in self.blocks], axis=1)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_sims, order, axis=1)


class _threads:
    """faiss's OpenMP threads for one call (0: leave as they are); the setting is process-wide."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        if self.threads:
            import faiss

            self.previous = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.threads:
            import faiss

            faiss.omp_set_num_threads(self.previous)
