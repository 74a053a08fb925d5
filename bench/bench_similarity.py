"""Similarity search at a million images: the ANN index (core.similarity.ann, faiss IVF) over
1,000,000 512-d vectors, against exact search, on two kinds of vectors.

    python bench/bench_similarity.py                     # clustered and random, 1,000,000 each (≈ 20 min cold)
    python bench/bench_similarity.py --vectors clustered --n 100000      # quicker
    python bench/bench_similarity.py --probes 32 --dtype f16 --sweep 8:4 64:4   # other settings

Vectors (kept as float16, as the shards store them; cast to float32 per batch):
- clustered: a gaussian mixture shaped like image embeddings: 2,000 clusters (centres ~ N(0, I/d)),
  each point its centre plus noise in the cluster's own 16-d subspace (σ 0.25 per direction) plus
  isotropic noise (norm ≈ 0.3), L2-normalised. Median cosine of a point to its 1st / 10th / 50th
  neighbour, and of a random pair: 0.54 / 0.13 / 0.10 / 0.00 at 4,000 vectors, 0.72 / 0.52 / 0.15 /
  0.00 at 50,000. Real embeddings for comparison (a resnet10t trained here on bench/real_sets.py's
  scans, embedding 4,000 photo crops; 128-d): 0.994 / 0.975 / 0.950 / 0.62: their neighbours stand
  out far more from the crowd, so the mixture is the harder case.
- random: uniformly random unit vectors: the worst case for any ANN method (every neighbour is
  almost as far as any other vector: cosine to the 1st ≈ 0.2, to a random one ≈ 0); no real
  embedding looks like this, reported for honesty.
Queries are 1,000 fresh draws of the same kind (not in the index). Exact neighbours: numpy matrix
products over chunks of the float16 matrix; vectors, queries and exact neighbours are cached under
--cache between runs (the index is built every run: its time is a result). Latency: one query at a
time on one thread (a page's "More like this"), p50/p95 over every query, in wall time and in the
searching thread's CPU time (on a shared machine the wall time is mostly the wait for a core). Memory: the index's own
estimate and the growth of this process's private (anonymous) RSS over the build (the vectors being
added are memory-mapped from the cache: their pages are not counted).
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
            if line.startswith("RssAnon:"):  # private memory: the memory-mapped vectors' pages are not the index
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


def make_vectors(kind: str, mixture: Mixture, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, mixture.dim), dtype=np.float16)
    for start in range(0, n, 2_000):  # small draws: each gathers a 512×16 basis per point
        out[start:start + 2_000] = draw(kind, mixture, min(2_000, n - start), rng)
    return out


def draw(kind: str, mixture: Mixture, n: int, rng) -> np.ndarray:
    if kind == "clustered":
        return mixture.draw(n, rng)
    points = rng.standard_normal((n, mixture.dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000,
              first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (ids, similarities) by cosine (unit vectors: dot product), over chunks of the
    float16 matrix; ids count from `first`."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_sim = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        sims = queries @ np.asarray(vectors[start:start + chunk], dtype=np.float32).T
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_ids, best_sim = merge_top(best_ids, best_sim, top + start + first, np.take_along_axis(sims, top, axis=1), k)
    return best_ids, best_sim


def merge_top(ids_a, sims_a, ids_b, sims_b, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids, sims = np.concatenate([ids_a, ids_b], axis=1), np.concatenate([sims_a, sims_b], axis=1)
    keep = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, keep, axis=1), np.take_along_axis(sims, keep, axis=1)


def cached(args, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, queries, exact ids, exact similarities of the first n), made once per kind, size and
    seed and kept under --cache; vectors memory-mapped."""
    folder = Path(args.cache) / f"{kind}-n{args.n}-add{args.add}-d{args.dim}-c{args.clusters}-s{args.seed}-q{args.queries}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "done").exists():
        started = time.perf_counter()
        mixture = Mixture(args.dim, args.clusters, 16, args.seed, local_scale=0.25, noise=0.3)
        vectors = make_vectors(kind, mixture, args.n + args.add, args.seed)
        queries = draw(kind, mixture, args.queries, np.random.default_rng(args.seed + 2))
        made = time.perf_counter() - started
        ids, sims = exact_top(vectors[:args.n], queries, args.k)
        np.save(folder / "vectors.npy", vectors)
        np.savez(folder / "truth.npz", queries=queries, ids=ids, sims=sims)
        (folder / "done").write_text("")
        print(f"{kind}: vectors made in {made:.0f} s, exact search for {args.queries} queries "
              f"{time.perf_counter() - started - made:.0f} s; cached in {folder}")
    truth = np.load(folder / "truth.npz")
    return np.load(folder / "vectors.npy", mmap_mode="r"), truth["queries"], truth["ids"], truth["sims"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", choices=("clustered", "random", "both"), default="both")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--add", type=int, default=10_000, help="vectors added afterwards, without a rebuild")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=ann.LISTS)
    parser.add_argument("--probes", type=int, default=ann.PROBES)
    parser.add_argument("--dtype", default=ann.STORAGE_DTYPE, choices=("i8", "f16", "f32"))
    parser.add_argument("--rerank", type=int, default=ann.RERANK_FACTOR,
                        help="candidates per result re-scored on the float16 vectors (0: the codes' own order)")
    parser.add_argument("--threads", type=int, default=2, help="cores for the build and the add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="/tmp/bench_similarity")
    parser.add_argument("--sweep", nargs="*", default=["4:4", "8:4", "32:4", "64:4", "128:4"], metavar="PROBES:RERANK",
                        help="also measure these search settings on the same index")
    args = parser.parse_args()
    settings = ann.AnnSettings(lists=args.lists, probes=args.probes, dtype=args.dtype, rerank=args.rerank)
    print(f"# bench_similarity: n={args.n:,} dim={args.dim} {settings}; cores={os.cpu_count()}; "
          f"load average {load_average()}")
    for kind in ("clustered", "random") if args.vectors == "both" else (args.vectors,):
        run(args, kind, settings)


def run(args, kind: str, settings: ann.AnnSettings) -> None:
    vectors, queries, truth_ids, truth_sims = cached(args, kind)
    base, extra = vectors[:args.n], vectors[args.n:]
    rss_before = rss_mb()
    started = time.perf_counter()
    index = ann.VectorIndex(args.dim, settings)
    index.add(base, threads=args.threads)
    build_s = time.perf_counter() - started
    lists = index.ivf.nlist if index.ivf is not None else 0
    print(f"{kind}: build {build_s:.0f} s ({args.n / build_s:,.0f} vectors/s, {args.threads} threads, {lists} lists); "
          f"index {index.memory_bytes / 2**20:,.0f} MiB (float16 copy + codes); RSS +{rss_mb() - rss_before:,.0f} MiB; "
          f"load average {load_average()}")
    measure(index, queries, truth_ids, args.k, f"{kind}: probes {settings.probes}, rerank {settings.rerank}")
    for point in args.sweep:
        probes, rerank = (int(part) for part in point.split(":"))
        index.ivf.nprobe = min(probes, lists)
        index.settings = dataclasses.replace(settings, probes=probes, rerank=rerank)
        measure(index, queries, truth_ids, args.k, f"{kind}: probes {probes}, rerank {rerank}")
    index.ivf.nprobe, index.settings = settings.probes, settings

    started = time.perf_counter()
    index.add(extra, threads=args.threads)
    add_s = time.perf_counter() - started
    print(f"{kind}: incremental add of {args.add:,} vectors (no rebuild: still {index.ivf.nlist} lists trained "
          f"on {index.trained_on:,}): {add_s:.1f} s; now {len(index):,} vectors")
    extra_ids, extra_sims = exact_top(extra, queries, args.k, first=args.n)
    truth_ids, _ = merge_top(truth_ids, truth_sims, extra_ids, extra_sims, args.k)
    measure(index, queries, truth_ids, args.k, f"{kind}: after the add")
    print(f"{kind}: load average {load_average()}")


def measure(index, queries: np.ndarray, truth: np.ndarray, k: int, label: str) -> None:
    latencies, cpu, hits = [], [], 0
    for query, wanted in zip(queries, truth, strict=True):
        started, started_cpu = time.perf_counter(), time.thread_time()
        keys, _similarity = index.search(query[None, :], k)
        latencies.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        hits += len(set(keys[0].tolist()) & set(wanted.tolist()))
    p50, p95 = np.percentile(latencies, [50, 95])
    cpu50, cpu95 = np.percentile(cpu, [50, 95])
    # CPU time of the searching thread: what a query costs, whatever the neighbours' load adds to the wall time
    print(f"{label}: p50 {p50:.2f} ms, p95 {p95:.2f} ms (CPU p50 {cpu50:.2f}, p95 {cpu95:.2f} ms), recall@{k} "
          f"{hits / truth.size:.4f} ({len(queries)} queries, one thread); load average {load_average()}")


if __name__ == "__main__":
    main()
