"""The similarity pages' costs: computing the map (core.similarity.projection) for 10,000 and 100,000
vectors, and "more like this" on the page path (core.similarity.browse: index state, search, the
dataset filter and the thumbnails) over a SQLite library.

    python bench/bench_similarity_map.py                         # PCA at 10k and 100k, page path at 20k
    python bench/bench_similarity_map.py --umap 10000            # also UMAP at 10k (minutes here)
    python bench/bench_similarity_map.py --map-n --page-n 100000 --queries 0   # the Map tab's read at 100k
    python bench/bench_similarity_map.py --page-n 100000         # more like this at 100k (index load: minutes)

Vectors: bench_similarity.Mixture (clustered 512-d unit vectors), written as the embedding job writes
them (float16 shards in a local storage folder). Map: reading every shard, then projecting; the map job
does exactly this (build_map), then stores ≈ 24 bytes a point. Page path: one library of `--page-n`
images with an index row over the same shards, half of them in a dataset; the first query loads the
index into this process (as a page's first query does), then 50 queries at a time, p50/p95, library
wide and inside the dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

DIM = 512


def setup(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    os.environ["STORAGE_URL"] = f"file://{workdir / 'storage'}"
    os.environ.pop("REDIS_URL", None)
    from core.config import reset_settings_cache
    from core.migrate import upgrade_head

    reset_settings_cache()
    upgrade_head()


def write_shards(n: int, seed: int) -> tuple[uuid.UUID, list[dict], list[uuid.UUID]]:
    from bench_similarity import Mixture, make_vectors

    from core.similarity import shards
    from core.storage import get_storage
    from core.users import operator_user

    vectors = make_vectors(Mixture(DIM, clusters=max(20, n // 500), rank=16, seed=seed), n, seed)
    ids = [uuid.uuid4() for _ in range(n)]
    index_id = uuid.uuid4()
    recorded = shards.append(get_storage(), actor=operator_user(), index_id=index_id, shards=[], ids=ids,
                             vectors=vectors)
    return index_id, recorded, ids


def bench_map(n: int, method: str) -> None:
    from core.similarity.projection import index_vectors, project
    from core.storage import get_storage

    _index_id, recorded, _ids = write_shards(n, seed=n)
    started = time.perf_counter()
    ids, vectors = index_vectors(get_storage(), recorded)
    read_s = time.perf_counter() - started
    xy, used = project(vectors, method)
    project_s = time.perf_counter() - started - read_s
    assert xy.shape == (n, 2)
    print(f"map {n:>7,} vectors  {used:4s}: read shards {read_s:6.2f} s · project {project_s:7.2f} s · "
          f"total {read_s + project_s:7.2f} s · stored map {len(ids) * 24 / 1e6:.1f} MB", flush=True)


def library(n: int) -> tuple[list[uuid.UUID], uuid.UUID]:
    """`n` image rows, an embedding index over their shards, and a dataset of every other one."""
    from sqlalchemy import insert

    from core.db import session_scope
    from core.models import ClsDataset, ClsDatasetImage, ClsEmbeddingIndex, ClsImage

    index_id, recorded, ids = write_shards(n, seed=7)
    with session_scope() as session:
        session.execute(insert(ClsImage), [{"id": i, "filename": f"{i}.jpg", "original_filename": f"img_{k}.jpg",
                                            "storage_path": f"images/{i}.jpg", "thumbnail_path": f"thumbs/{i}.jpg",
                                            "file_hash": i.hex + i.hex} for k, i in enumerate(ids)])
        dataset = ClsDataset(name="half")
        session.add(dataset)
        session.flush()
        session.execute(insert(ClsDatasetImage), [{"dataset_id": dataset.id, "image_id": i} for i in ids[::2]])
        session.add(ClsEmbeddingIndex(id=index_id, source="timm:convnext/atto@bench", timm_name="bench", dim=DIM,
                                      count=n, shards=recorded, status="ready"))
        dataset_id = dataset.id
    return ids, dataset_id


def bench_dataset_map(n: int, dataset_id: uuid.UUID) -> None:
    """The Map tab's read: the stored map, the dataset's members placed on it, their colours."""
    from core.db import session_scope
    from core.similarity.browse import dataset_map
    from core.similarity.projection import build_map
    from core.users import operator_user

    summary = build_map(actor=operator_user(), method="pca")
    print(f"map job {n:,} vectors (pca): read {summary['read_s']} s · project {summary['project_s']} s", flush=True)
    for colour_by in ("class", "split"):
        started = time.perf_counter()
        with session_scope() as session:
            data = dataset_map(session, dataset_id=dataset_id, colour_by=colour_by)
        read_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        from ui.similarity_map import figure

        shipped = figure(data)[0].to_json()
        print(f"Map tab, dataset of {data['total']:,} on a {n:,}-point map, colour by {colour_by}: read "
              f"{read_ms:.0f} ms · Scattergl figure + JSON {(time.perf_counter() - started) * 1000:.0f} ms "
              f"({len(shipped) / 1e6:.1f} MB) for {len(data['ids']):,} points", flush=True)


def bench_page(ids: list[uuid.UUID], dataset_id: uuid.UUID, queries: int) -> None:
    from core.db import session_scope
    from core.similarity.browse import index_state, more_like_this

    n = len(ids)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with session_scope() as session:
        index_state(session=session)
        more_like_this(session, image_id=ids[0], k=24, min_similarity=0.0)
    print(f"page path {n:,} images: first query (loads the index into the process) {time.perf_counter() - started:.1f} s",
          flush=True)
    for label, scope in (("library", None), ("dataset (half)", dataset_id)):
        times = []
        for image_id in (ids[i] for i in rng.integers(0, n, queries)):
            started = time.perf_counter()
            with session_scope() as session:
                index_state(session=session)
                found = more_like_this(session, image_id=image_id, k=24, min_similarity=0.0, dataset_id=scope)
            times.append((time.perf_counter() - started) * 1000)
        print(f"page path {n:,} images, {label:15s}: more like this (k=24) p50 {np.percentile(times, 50):6.1f} ms · "
              f"p95 {np.percentile(times, 95):6.1f} ms · {len(found)} found", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map-n", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--umap", type=int, nargs="*", default=[], help="sizes to also project with UMAP")
    parser.add_argument("--page-n", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} · {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-simmap-") as workdir:
        setup(Path(workdir))
        started = time.perf_counter()
        import sklearn.decomposition  # noqa: F401  a job pays this once; the figures below are the work

        print(f"import scikit-learn's PCA {time.perf_counter() - started:.1f} s", flush=True)
        for n in args.map_n:
            bench_map(n, "pca")
        for n in args.umap:
            bench_map(n, "umap")
        if args.page_n:
            ids, dataset_id = library(args.page_n)
            bench_dataset_map(args.page_n, dataset_id)
            if args.queries:
                bench_page(ids, dataset_id, args.queries)


if __name__ == "__main__":
    main()
