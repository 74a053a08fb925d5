"""How fast the "most useful next" queue gives the next image: the order computed once (clusters,
typicality) and then each next image with its reservations (core.labeling.actions
.next_image_and_upcoming, mode "useful"), on SQLite with local storage, a dataset of `--images`
images embedded as clustered 128-d vectors (a real index: float16 shards, one row).

    python3 -m bench.bench_useful_queue [--images 20000] [--nexts 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def setup(workdir: Path, images: int):
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    os.environ["STORAGE_URL"] = f"file://{workdir / 'storage'}"
    from sqlalchemy import create_engine

    from core.config import reset_settings_cache
    from core.db import session_scope
    from core.models import Base, ClsDataset, ClsDatasetImage, ClsImage
    from core.storage import get_storage
    from tests.clustered_index import record_index

    reset_settings_cache()
    Base.metadata.create_all(create_engine(os.environ["DATABASE_URL"]))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 128))
    vectors = centres[rng.integers(0, 50, images)] + rng.normal(0, 0.6, (images, 128))
    ids = [uuid.uuid4() for _ in range(images)]
    with session_scope() as session:
        dataset = ClsDataset(name="useful-bench", image_count=images)
        session.add(dataset)
        session.flush()
        session.add_all([ClsImage(id=i, filename=f"{i}.png", original_filename=f"{n}.png", storage_path=f"images/{i}.png",
                                  file_hash=f"{n:064x}") for n, i in enumerate(ids)])
        session.flush()
        session.add_all([ClsDatasetImage(dataset_id=dataset.id, image_id=i) for i in ids])
        session.flush()
        record_index(session, get_storage(), ids, vectors.astype(np.float32))
        return dataset.id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--nexts", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        dataset_id = setup(Path(folder), args.images)
        from core.db import session_scope
        from core.labeling import actions, useful_queue
        from tests.factories import ADMIN

        with session_scope() as session:
            started = time.perf_counter()
            useful_queue.useful_order_ids(session, dataset_id)
            first = time.perf_counter() - started
        holder, after, times = uuid.uuid4(), None, []
        for _ in range(args.nexts):
            started = time.perf_counter()
            with session_scope() as session:
                after, _window = actions.next_image_and_upcoming(session=session, actor=ADMIN, dataset_id=dataset_id,
                                                                 mode="useful", holder=holder, after=after)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        print(f"{args.images:,} images (SQLite, local storage): order computed in {first:.1f} s (index load, "
              f"k-means, typicality); next image with its 3 prefetched, reserved: p50 "
              f"{statistics.median(times):.1f} ms, p95 {times[int(0.95 * len(times))]:.1f} ms over {len(times)}; "
              f"load {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
