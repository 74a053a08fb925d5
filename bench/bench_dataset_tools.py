"""Split, version, health and export timings on an embedded stack (SQLite + local storage).

Usage: python bench/bench_dataset_tools.py [N]   (default 2000 labeled 96 px images, 10 classes)
Prints seconds per step and the machine load beside them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.users import operator_user  # noqa: E402  (after the path: run as a script)

ADMIN = operator_user()  # benches act as the operator, like the CLI


def main(n: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dataset-tools-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    os.environ["STORAGE_URL"] = f"file://{workdir / 'storage'}"
    os.environ.pop("REDIS_URL", None)
    import iterstrat.ml_stratifiers  # noqa: F401  (sklearn's import takes seconds once; not the split's time)
    import scipy.sparse.csgraph  # noqa: F401

    from core.datasets.export import collect_export, write_zip
    from core.datasets.health import health_check
    from core.datasets.splits import auto_split
    from core.datasets.versions import create_version
    from core.db import get_engine, session_scope
    from core.models import Base
    from core.storage import get_storage
    from tests.factories import make_class, make_dataset, make_dataset_image

    Base.metadata.create_all(get_engine())
    storage = get_storage()
    with session_scope() as session:
        dataset = make_dataset(session, "bench")
        classes = [make_class(session, f"class{i}") for i in range(10)]
        for i in range(n):
            make_dataset_image(session, storage, dataset, seed=i, classes=[classes[i % 10]], phash=True)
        dataset_id = dataset.id
    print(f"load {os.getloadavg()}; {n} labeled images, 10 classes")

    def timed(label, action):
        start = time.perf_counter()
        with session_scope() as session:
            result = action(session)
        print(f"{label}: {time.perf_counter() - start:.2f} s")
        return result

    timed("auto_split (default near-duplicate distance)",
          lambda s: auto_split(actor=ADMIN, session=s, dataset_id=dataset_id, storage=storage))
    timed("create_version", lambda s: create_version(actor=ADMIN, session=s, storage=storage, dataset_id=dataset_id))
    timed("health_check", lambda s: health_check(session=s, dataset_id=dataset_id, storage=storage))
    start = time.perf_counter()
    with session_scope() as session:
        plan = collect_export(session=session, storage=storage, dataset_id=dataset_id, fmt="imagefolder",
                              version_number=1)
    summary = write_zip(plan, storage=storage, target=workdir / "export.zip")
    elapsed = time.perf_counter() - start
    print(f"export imagefolder from version 1: {elapsed:.2f} s ({n / elapsed:.0f} images/s, {summary['bytes']} bytes)")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
