"""Similarity search at a million images: the ANN index (core.similarity.ann) over 1,000,000 512-d
vectors, against exact search.

    python bench/bench_similarity.py                    # 1,000,000 vectors (≈ 1 GB float16, minutes to build)
    python bench/bench_similarity.py --n 100000         # quicker
    python bench/bench_similarity.py --dtype f16 --rerank 0 --expansion-search 128   # other settings

Vectors: a gaussian mixture shaped like image embeddings: 2,000 clusters (centres ~ N(0, I/d)), each
point its centre plus noise in the cluster's own 16-d subspace (σ 0.25 per direction) plus isotropic
noise (norm ≈ 0.3), then L2-normalised: a query's nearest neighbour has cosine ≈ 0.7, its 10th ≈ 0.5,
its 50th ≈ 0.15 at 50,000 vectors (neighbours exist, as in a library of related photos; with 24-d
noise four times as strong the top 50 are all ≈ 0.15-0.5, no method finds "the" ten and recall is
noise). Kept as float16 as the shards store them and cast to float32 per
batch. Queries are 1,000 fresh draws from the same mixture (not in the index). Exact neighbours: numpy
matrix products over chunks of the float16 matrix. Latency: one query at a time on one thread (a page's
"More like this"), p50/p95 over every query. Memory: this process's RSS before and after the build.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.similarity import ann  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class Mixture:
    """Clustered unit vectors: centre + in-cluster low-rank noise + isotropic noise, normalised."""

    def __init__(self, dim: int, clusters: int, rank: int, seed: int, local_scale: float = 0.6,
                 noise: float = 0.25):
        rng = np.random.default_rng(seed)
        self.dim, self.rank, self.local_scale, self.noise = dim, rank, local_scale, noise
        self.centres = rng.standard_normal((clusters, dim)).astype(np.float32) / np.sqrt(dim)
        self.bases = rng.standard_normal((clusters, dim, rank)).astype(np.float32) / np.sqrt(dim)

    def draw(self, n: int, rng) -> np.ndarray:
        which = rng.integers(0, len(self.centres), n)
        local = np.einsum("ndr,nr->nd", self.bases[which], rng.standard_normal((n, self.rank)).astype(np.float32))
        points = self.centres[which] + self.local_scale * local \
            + self.noise * rng.standard_normal((n, self.dim)).astype(np.float32) / np.sqrt(self.dim)
        return points / np.linalg.norm(points, axis=1, keepdims=True)


def make_vectors(mixture: Mixture, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, mixture.dim), dtype=np.float16)
    for start in range(0, n, 2_000):  # small draws: each gathers a 512×16 basis per point
        out[start:start + 2_000] = mixture.draw(min(2_000, n - start), rng)
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    """Exact top-k ids by cosine (unit vectors: dot product), over chunks of the float16 matrix."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_sim = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        sims = queries @ vectors[start:start + chunk].astype(np.float32).T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best_sim = np.concatenate([best_sim, np.take_along_axis(sims, top, axis=1)], axis=1)
        keep = np.argsort(-best_sim, axis=1)[:, :k]
        best_ids, best_sim = np.take_along_axis(best_ids, keep, axis=1), np.take_along_axis(best_sim, keep, axis=1)
    return best_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--add", type=int, default=10_000, help="vectors added afterwards, without a rebuild")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--connectivity", type=int, default=ann.CONNECTIVITY)
    parser.add_argument("--expansion-add", type=int, default=ann.EXPANSION_ADD)
    parser.add_argument("--expansion-search", type=int, default=ann.EXPANSION_SEARCH)
    parser.add_argument("--dtype", default=ann.STORAGE_DTYPE)
    parser.add_argument("--rerank", type=int, default=ann.RERANK_FACTOR,
                        help="candidates per result re-scored on the float16 vectors (0: the graph's own order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", nargs="*", default=[], metavar="EF:RERANK",
                        help="also measure these search settings on the same graph (e.g. 256:8 512:8)")
    args = parser.parse_args()
    settings = ann.AnnSettings(args.connectivity, args.expansion_add, args.expansion_search, args.dtype,
                               args.rerank)
    print(f"# bench_similarity: n={args.n:,} dim={args.dim} {settings}; cores={os.cpu_count()}; "
          f"load average {load_average()}")
    mixture = Mixture(args.dim, args.clusters, 16, args.seed, local_scale=0.25, noise=0.3)
    started = time.perf_counter()
    vectors = make_vectors(mixture, args.n + args.add, args.seed)
    base, extra = vectors[:args.n], vectors[args.n:]
    queries = mixture.draw(args.queries, np.random.default_rng(args.seed + 2))
    print(f"vectors made in {time.perf_counter() - started:.0f} s ({vectors.nbytes / 2**20:,.0f} MiB float16); "
          f"RSS {rss_mb():,.0f} MiB")

    rss_before = rss_mb()
    started = time.perf_counter()
    index = ann.VectorIndex(args.dim, settings)
    index.add(base)
    build_s = time.perf_counter() - started
    print(f"build: {build_s:.0f} s ({args.n / build_s:,.0f} vectors/s); graph {index.graph.memory_usage / 2**20:,.0f} "
          f"MiB; RSS {rss_mb():,.0f} MiB (+{rss_mb() - rss_before:,.0f} MiB, the float16 copy for re-scoring "
          f"included); load average {load_average()}")

    started = time.perf_counter()
    truth = exact_top(base, queries, args.k)
    print(f"exact search for {args.queries} queries: {time.perf_counter() - started:.1f} s")
    measure(index, queries, truth, args.k, "after build")
    for point in args.sweep:
        expansion, rerank = (int(part) for part in point.split(":"))
        index.graph.expansion_search = expansion
        index.settings = dataclasses.replace(settings, expansion_search=expansion, rerank=rerank)
        measure(index, queries, truth, args.k, f"expansion_search {expansion}, rerank {rerank}")
    index.graph.expansion_search, index.settings = settings.expansion_search, settings

    started = time.perf_counter()
    index.add(extra)
    add_s = time.perf_counter() - started
    print(f"incremental add of {args.add:,} vectors (no rebuild): {add_s:.1f} s; now {len(index):,} vectors")
    truth = exact_top(vectors, queries, args.k)
    measure(index, queries, truth, args.k, "after the add")
    print(f"load average {load_average()}")


def measure(index, queries: np.ndarray, truth: np.ndarray, k: int, label: str) -> None:
    latencies, hits = [], 0
    for query, wanted in zip(queries, truth, strict=True):
        started = time.perf_counter()
        keys, _similarity = index.search(query[None, :], k)
        latencies.append((time.perf_counter() - started) * 1000)
        hits += len(set(keys[0].tolist()) & set(wanted.tolist()))
    p50, p95 = np.percentile(latencies, [50, 95])
    print(f"{label}: p50 {p50:.2f} ms, p95 {p95:.2f} ms, recall@{k} {hits / truth.size:.4f} "
          f"({len(queries)} queries, one thread); load average {load_average()}")


if __name__ == "__main__":
    main()
