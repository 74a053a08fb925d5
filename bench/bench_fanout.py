"""Benchmark: one batch prediction fanned out over 1 and then 2 local RQ workers (core/jobs/fanout.py);
prints images/s of each, the speed-up, whether both runs predicted the same, and the load average.

    python bench/bench_fanout.py [--images 20000] [--chunk 500] [--size 32] [--no-pin] [--labels]

A tiny ConvNeXt-V2 atto (pretrained=False, trained for a few steps on digits, 1 input channel, 32 px)
predicts generated grayscale images. Each worker is an `rq worker` process (SimpleWorker: the model
stays loaded between chunks) with one torch thread, pinned to its own core unless --no-pin, so
1 worker uses one core and 2 workers two: the speed-up is the fleet's, not more threads'. The rate
is images / (the job's finished_at - started_at), planning and the finisher included; a warm-up
job first loads the model in every worker. The workers' CPU per image shows the fan-out adds no work,
and "cores busy" how much CPU the workers got (on a shared machine, less than their count). Postgres (its own database bench_fanout, dropped at the
end), Redis database 7 (flushed), a temporary storage folder. --labels also writes AI labels.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.users import operator_user  # noqa: E402  (after the path: run as a script)

ADMIN = operator_user()
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
DB_NAME = "bench_fanout"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def database(fresh: bool = True) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        if fresh:
            connection.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}"


def noise_png(seed: int, size: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def fill(count: int, size: int, workdir: Path) -> tuple[uuid.UUID, uuid.UUID]:
    """A dataset of `count` generated images and a registered tiny model; (dataset id, model id)."""
    import hashlib

    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.db import session_scope
    from core.models import ClsImage
    from core.storage import get_storage
    from tests.model_factory import register_model, train_checkpoint

    storage = get_storage()
    checkpoint = train_checkpoint(workdir / "tiny.pt")
    with session_scope() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name="bench", task_type="single_label")
        class_ids = [create_class(actor=ADMIN, session=session, name=f"digit-{c}").id for c in range(3)]
        model_id = register_model(session, storage, checkpoint, class_ids=class_ids)
        dataset_id = dataset.id
    for start in range(0, count, 2000):
        ids = []
        with session_scope() as session:
            for index in range(start, min(start + 2000, count)):
                data, image_id = noise_png(index, size), uuid.uuid4()
                storage.put(f"images/{image_id}.png", data)
                session.add(ClsImage(id=image_id, filename=f"{image_id}.png", original_filename=f"n{index}.png",
                                     storage_path=f"images/{image_id}.png", file_size_bytes=len(data), format="PNG",
                                     file_hash=hashlib.sha256(data).hexdigest()))
                ids.append(image_id)
            session.flush()
            add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids)
    return dataset_id, model_id


def run_job(start, wait_s: float = 3600) -> tuple[dict, float]:
    from core.db import session_scope
    from core.models import ClsJob

    job_id = start()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = session.get(ClsJob, job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                if job.status != "succeeded":
                    raise SystemExit(f"job {job_id} {job.status}: {job.error}")
                return job.result, (job.finished_at - job.started_at).total_seconds()
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not end in {wait_s} s")


def predictions(result: dict) -> list[tuple]:
    from core.prediction.auto_label import read_csv
    from core.storage import get_storage

    return sorted(tuple(row.values()) for row in read_csv(get_storage(), result["csv_key"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500, help="images per chunk")
    parser.add_argument("--size", type=int, default=32, help="side of the generated images (pixels)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin each worker to its own core")
    parser.add_argument("--labels", action="store_true", help="also write AI labels")
    args = parser.parse_args()

    from redis import Redis

    from core.config import reset_settings_cache
    from core.db import dispose_engines
    from core.prediction.auto_label import start_batch_prediction
    from tests.rq_workers import start_workers, stop

    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    env = {"DATABASE_URL": database(), "STORAGE_URL": f"file://{workdir / 'storage'}", "REDIS_URL": REDIS_URL,
           "CLS_CACHE_DIR": str(workdir / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PREDICTION_CHUNK_IMAGES": str(args.chunk)}
    os.environ.update(env)
    reset_settings_cache()
    Redis.from_url(REDIS_URL).flushdb()
    from core.migrate import upgrade_head

    upgrade_head(env["DATABASE_URL"])
    started = time.perf_counter()
    dataset_id, model_id = fill(args.images, args.size, workdir)
    print(f"{args.images} images of {args.size} px stored in {time.perf_counter() - started:.1f} s; load {load()}")
    cores = os.cpu_count() or 1
    rates, outputs = {}, {}
    try:
        for count in (1, 2):
            cpus = None if args.no_pin or cores < count else [[i % cores] for i in range(count)]
            workers = start_workers(count, env=env, queues=("predictions",), log_dir=workdir, cpus=cpus)
            try:
                def start(image_ids=None):
                    scope = "selection" if image_ids else "dataset"
                    return start_batch_prediction(actor=ADMIN, model_id=model_id, scope=scope, dataset_id=dataset_id,
                                                  image_ids=image_ids, write_labels=args.labels, export_csv=True,
                                                  overwrite=args.labels)
                warm_ids = warmup_ids(dataset_id, args.chunk * count)
                run_job(lambda ids=warm_ids: start(ids))  # every worker loads torch and the model
                before, cpu_before = load(), sum(cpu_seconds(w.pid) for w in workers)
                result, seconds = run_job(start)
                cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
                rates[count], outputs[count] = args.images / seconds, predictions(result)
                print(f"{count} worker{'s' if count > 1 else ' '}: {args.images} images in {seconds:7.1f} s = "
                      f"{rates[count]:7.1f} images/s ({result['parts']} chunks of {args.chunk}; "
                      f"predicted {result['predicted']}, failed {result['failed']}); workers' CPU "
                      f"{1000 * cpu / args.images:.2f} ms/image, {cpu / seconds:.2f} cores busy; "
                      f"load before {before}, after {load()}; pinned {cpus}")
            finally:
                stop(workers)
        same = outputs[1] == outputs[2] and len(outputs[1]) == args.images
        print(f"speed-up 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x; same predictions: {same}; "
              f"cores {cores}; load {load()}")
    finally:
        dispose_engines()
        database(fresh=False)
        Redis.from_url(REDIS_URL).flushdb()


def warmup_ids(dataset_id, count: int) -> list[str]:
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ClsDatasetImage

    with session_scope() as session:
        return [str(i) for i in session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id).limit(count))]


if __name__ == "__main__":
    main()
