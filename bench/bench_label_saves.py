"""Label save latency at scale: set_labels (the labeling page's save, with its row locks and count
deltas) and bulk_set_label on a 48-image grid page, on a dataset of N images in Postgres.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/<scratch db> python bench/bench_label_saves.py [N]

Empties the cls_* tables of that database first. Prints median and p90 in milliseconds and the load.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
import uuid

from sqlalchemy import delete, insert

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.datasets.classes import create_class  # noqa: E402
from core.datasets.dataset import add_images_to_dataset, create_dataset  # noqa: E402
from core.db import session_scope  # noqa: E402
from core.labeling.bulk_labels import bulk_set_label  # noqa: E402
from core.labeling.counts import count_mismatches  # noqa: E402
from core.labeling.labels import set_labels  # noqa: E402
from core.models import Base, ClsClass, ClsDataset, ClsImage  # noqa: E402
from tests.factories import ADMIN


def build(n: int):
    from core.db import get_engine

    Base.metadata.create_all(get_engine())
    with session_scope() as session:
        for model in reversed(Base.metadata.sorted_tables):
            if model.name.startswith("cls_"):
                session.execute(delete(model))
        dataset = create_dataset(actor=ADMIN, session=session, name="bench")
        classes = [create_class(actor=ADMIN, session=session, name=f"class {i}").id for i in range(10)]
        ids = [uuid.uuid4() for _ in range(n)]
        session.execute(insert(ClsImage), [{"id": i, "filename": f"{i}.jpg", "storage_path": f"images/{i}.jpg"}
                                           for i in ids])
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=ids)
        return dataset.id, classes, ids


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rng = random.Random(0)
    started = time.perf_counter()
    dataset_id, classes, ids = build(n)
    print(f"built {n} dataset images in {time.perf_counter() - started:.1f}s")
    with session_scope() as session:  # most images labeled already, as on a busy dataset
        for start in range(0, int(n * 0.8), 5000):
            bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids[start:start + 5000],
                           class_id=classes[(start // 5000) % 10])
    single = []
    for _ in range(200):
        image_id, class_id = rng.choice(ids), rng.choice(classes)
        t0 = time.perf_counter()
        with session_scope() as session:
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id])
        single.append((time.perf_counter() - t0) * 1000)
    bulk = []
    for _ in range(20):
        start = rng.randrange(0, n - 48)
        t0 = time.perf_counter()
        with session_scope() as session:
            bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids[start:start + 48],
                           class_id=rng.choice(classes))
        bulk.append((time.perf_counter() - t0) * 1000)
    with session_scope() as session:
        assert count_mismatches(session=session) == []
        dataset = session.get(ClsDataset, dataset_id)
        print(f"dataset: {dataset.image_count} images, {dataset.labeled_image_count} labeled, "
              f"{session.query(ClsClass).count()} classes")
    print(f"set_labels (one image, one transaction): median {statistics.median(single):.1f} ms, "
          f"p90 {percentile(single, 0.9):.1f} ms over {len(single)} saves")
    print(f"bulk_set_label (48 images): median {statistics.median(bulk):.1f} ms, "
          f"p90 {percentile(bulk, 0.9):.1f} ms over {len(bulk)} actions")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
