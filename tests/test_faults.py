"""Faults survived: a worker SIGKILLed mid-import and mid-batch-prediction, Redis unreachable at
start, Postgres backends terminated under a running app, S3 failing mid-batch. Real servers throughout
(the production stack); the killed-worker training case lives in tests/test_training.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from core.errors import ServiceUnavailable
from tests.factories import ADMIN, drawn_image_bytes

ROOT = Path(__file__).resolve().parents[1]


def kill_with_children(pid: int) -> None:
    from tests.test_training import kill_with_children as kill  # RQ's work horse and its pool too

    kill(pid)


def start_worker(stack, queue: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--url", stack.redis_url, queue],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def count(stack, model) -> int:
    with stack.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def wait_for(predicate, timeout=180.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def kill_mid_job(stack, queue: str, started) -> None:
    """Run a real `rq worker`, SIGKILL it (and its work horse) once `started()` is true."""
    worker = start_worker(stack, queue)
    try:
        wait_for(started)
    finally:
        kill_with_children(worker.pid)
        worker.wait(timeout=30)


def requeue_and_check(stack, job_id) -> dict:
    """The dead worker's chunk goes back on its queue (the reaper, once its heartbeat is older than
    CHUNK_STALE_AFTER_S): the job stays running, waiting for a worker; every row keeps its objects;
    orphans (objects put before the killed batch committed) are found and removed by the storage check."""
    from core.jobs.fanout import reap_stale
    from core.library.storage_check import check_storage, fix_storage
    from core.models import ClsJob

    time.sleep(1.5)
    with stack.session() as session:
        assert reap_stale(session=session) == 0  # the parent is not failed: its chunk is queued again
    with stack.session() as session:
        assert session.get(ClsJob, job_id).status == "running"
        chunks = session.scalars(select(ClsJob).where(ClsJob.parent_id == job_id)).all()
        assert [c.status for c in chunks] == ["queued"] and "queued again" in chunks[0].error
        report = fix_storage(session=session, actor=ADMIN, storage=stack.storage, grace=timedelta(0))
        assert report["missing_objects"] == []
        after = check_storage(session=session, storage=stack.storage)
        assert after["ok"], after
    return report


@pytest.fixture
def fast_requeue(monkeypatch):
    """A chunk silent for 1 s is requeued (the worker started next inherits it: it beats every 0.25 s)."""
    from core.config import reset_settings_cache

    monkeypatch.setenv("CHUNK_STALE_AFTER_S", "1")
    reset_settings_cache()


def test_worker_killed_during_archive_import_then_the_same_job_completes(production_stack, fast_requeue):
    from core.imports.archive import ImportLabeledDatasetRequest, start_archive_import
    from core.models import ClsDataset, ClsDatasetImage, ClsImage, ClsJob
    from tests.factories import make_dataset
    from tests.test_archive_import import build_zip

    stack, total = production_stack, 300
    archive = build_zip({f"set/{'ab'[i % 2]}/{i:04d}.png": drawn_image_bytes(i, (48, 48)) for i in range(total)})
    with stack.session() as session:
        dataset_id = make_dataset(session, "killed").id
    request = ImportLabeledDatasetRequest(dataset_id=str(dataset_id))
    job_id = start_archive_import(actor=ADMIN, source=io.BytesIO(archive), request=request)
    kill_mid_job(stack, "imports", lambda: count(stack, ClsImage) > 0)
    partial = count(stack, ClsImage)
    assert 0 < partial < total, "the kill must land mid-import"
    requeue_and_check(stack, job_id)
    stack.drain_jobs()  # a worker again: it runs the chunk again
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        # the images the killed run stored count as imported by this job, not as duplicates of it
        assert (job.result["images_imported"], job.result["duplicates_skipped"]) == (total, 0)
        assert job.result["labels_written"] == job.result["images_added_to_dataset"] == total
        assert session.scalar(select(func.count()).select_from(ClsImage)) == total
        members = session.scalar(select(func.count()).select_from(ClsDatasetImage)
                                 .where(ClsDatasetImage.dataset_id == dataset_id))
        dataset = session.get(ClsDataset, dataset_id)
        assert members == dataset.image_count == dataset.labeled_image_count == total
    assert list(stack.storage.list_keys("imports/")) == []  # the finisher removed the stored archive


def test_worker_killed_during_batch_prediction_keeps_whole_batches_then_the_same_job_completes(
        production_stack, tmp_path_factory, monkeypatch, fast_requeue):
    """A real `rq worker` predicts a 640-image dataset with a tiny model, writing AI labels batch by
    batch (each batch its own transaction), and is SIGKILLed after the first batches landed: the AI
    labels written so far are whole batches with exact counts; the chunk goes back on its queue, and
    the next worker labels the rest, each image once."""
    from core.labeling.counts import count_mismatches
    from core.models import ClsDataset, ClsJob, ClsLabel, ClsLabelChange
    from core.prediction.auto_label import BATCH, start_batch_prediction
    from tests.factories import make_class, make_dataset
    from tests.model_factory import digit_images, register_model, shared_checkpoint
    from tests.training_data import store_image

    stack, total = production_stack, 640
    monkeypatch.setenv("CLS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # the worker inherits it
    checkpoint = shared_checkpoint(tmp_path_factory)
    images, _ = digit_images(3, 10)
    with stack.session() as session:
        class_ids = [make_class(session, f"digit-{i}").id for i in range(3)]
        dataset_id = make_dataset(session, "predicted").id
        model_id = register_model(session, stack.storage, checkpoint, class_ids=class_ids)
        ids = [store_image(session, stack.storage, images[i % len(images)], f"{i:04d}.png") for i in range(total)]
    from core.library.bulk import add_to_dataset

    add_to_dataset(actor=ADMIN, dataset_id=dataset_id, image_ids=ids)
    job_id = start_batch_prediction(actor=ADMIN, model_id=model_id, scope="dataset", dataset_id=dataset_id, write_labels=True)
    kill_mid_job(stack, "predictions", lambda: count(stack, ClsLabel) >= BATCH)
    partial = count(stack, ClsLabel)
    print(f"killed after {partial} of {total} images were labeled")
    assert 0 < partial < total, "the kill must land mid-prediction"
    requeue_and_check(stack, job_id)
    with stack.session() as session:
        assert count_mismatches(session=session) == []
        dataset = session.get(ClsDataset, dataset_id)
        # whole batches only: a batch's labels commit together or not at all
        assert partial % BATCH == 0 and dataset.labeled_image_count == partial
        assert session.scalar(select(func.count()).select_from(ClsLabelChange)) == partial
        assert session.scalar(select(func.count()).select_from(ClsLabel)
                              .where(ClsLabel.is_ai_generated.is_(False))) == 0

    stack.drain_jobs()
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        assert (job.result["total"], job.result["predicted"], job.result["labeled"], job.result["failed"]) == (
            total, total, total, 0)
        assert count_mismatches(session=session) == []
        labeled = session.scalar(select(func.count(func.distinct(ClsLabel.image_id)))
                                 .where(ClsLabel.dataset_id == dataset_id, ClsLabel.is_ai_generated.is_(True)))
        assert labeled == session.get(ClsDataset, dataset_id).labeled_image_count == total
        # each image's label written once: the rerun did not rewrite the killed run's batches
        assert session.scalar(select(func.count()).select_from(ClsLabelChange)) == total


class SlowImages(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        time.sleep(0.15)
        body = drawn_image_bytes(int(self.path.strip("/").split(".")[0]), (40, 40))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_worker_killed_during_url_import_then_the_same_job_completes(production_stack, monkeypatch, fast_requeue):
    from core.config import reset_settings_cache
    from core.imports.urls import start_url_import
    from core.models import ClsImage, ClsJob

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowImages)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("URL_ALLOW_LIST", "127.0.0.1")
    reset_settings_cache()
    stack, total = production_stack, 80
    urls = "\n".join(f"http://127.0.0.1:{httpd.server_address[1]}/{i}.png" for i in range(total))
    try:
        job_id = start_url_import(actor=ADMIN, text=urls)
        kill_mid_job(stack, "imports", lambda: count(stack, ClsImage) >= 3)
        assert count(stack, ClsImage) < total, "the kill must land mid-import"
        requeue_and_check(stack, job_id)
        stack.drain_jobs()
    finally:
        httpd.shutdown()
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded", job.error
        assert (job.result["imported"], job.result["duplicate"], job.result["rejected"]) == (total, 0, 0)
        assert session.scalar(select(func.count()).select_from(ClsImage)) == total


def test_redis_unreachable_at_start_is_a_clear_error_and_nothing_is_created(production_stack, monkeypatch):
    from core.config import reset_settings_cache
    from core.imports.archive import ImportLabeledDatasetRequest, start_archive_import
    from core.imports.urls import start_url_import
    from core.jobs.queue import reset_backend
    from core.models import ClsJob, ClsTrainingRun
    from tests.factories import make_dataset
    from tests.test_archive_import import build_zip

    stack = production_stack
    with stack.session() as session:
        dataset_id = make_dataset(session, "target").id
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens on the discard port
    reset_settings_cache()
    reset_backend()
    archive = build_zip({"a/x.png": drawn_image_bytes(1, (32, 32)), "b/y.png": drawn_image_bytes(2, (32, 32))})
    with pytest.raises(ServiceUnavailable, match="cannot reach Redis.*not started"):
        start_archive_import(actor=ADMIN, source=io.BytesIO(archive), request=ImportLabeledDatasetRequest(dataset_id=str(dataset_id)))
    with pytest.raises(ServiceUnavailable, match="cannot reach Redis"):
        start_url_import(actor=ADMIN, text="http://example.com/a.png\n")
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0
        assert session.scalar(select(func.count()).select_from(ClsTrainingRun)) == 0
    assert list(stack.storage.list_keys("")) == []  # no archive kept for a job that never existed


def test_training_start_with_redis_down_leaves_the_run_startable(production_stack, monkeypatch):
    from core.config import reset_settings_cache
    from core.jobs.queue import reset_backend
    from core.models import ClsJob
    from core.training.runs import create_run, get_run, start_run
    from tests.test_training import TINY
    from tests.training_data import make_digits_version

    stack = production_stack
    with stack.session() as session:
        version = make_digits_version(session, stack.storage, classes=2, per_class=4, size=16)
        run_id = create_run(actor=ADMIN, session=session, version_id=version.id, config=TINY).id
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    reset_settings_cache()
    reset_backend()
    with pytest.raises(ServiceUnavailable, match="cannot reach Redis"):
        start_run(actor=ADMIN, run_id=run_id)
    with stack.session() as session:
        assert get_run(session=session, run_id=run_id).status == "pending"
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0


def test_postgres_backends_terminated_under_a_running_app_next_action_works(production_stack):
    from core.db import get_engine
    from core.models import ClsClass
    from tests.factories import make_class

    stack = production_stack
    with stack.session() as session:
        make_class(session, "before")
    pooled = get_engine().pool.checkedin()
    assert pooled >= 1  # the app holds idle pooled connections, as a running server does
    admin = get_engine().url.set(database="test")
    from sqlalchemy import create_engine

    killer = create_engine(admin, isolation_level="AUTOCOMMIT")
    with killer.connect() as connection:
        killed = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": get_engine().url.database}).scalar()
    killer.dispose()
    assert killed >= 1
    with stack.session() as session:  # pool_pre_ping replaces the dead connection
        make_class(session, "after")
    with stack.session() as session:
        assert sorted(session.scalars(select(ClsClass.name))) == ["after", "before"]


class FailingAfter:
    """The real S3 storage until `good_puts` objects were written, then a second S3 storage whose
    endpoint is dead (real connection errors from botocore): S3 going away mid-batch."""

    def __init__(self, good, dead, good_puts: int):
        self.good, self.dead, self.left, self.lock = good, dead, good_puts, threading.Lock()

    def _target(self):
        with self.lock:
            self.left -= 1
            return self.good if self.left >= 0 else self.dead

    def put(self, key, data, content_type=None):
        self._target().put(key, data, content_type)

    def put_file(self, key, path, content_type=None):
        self._target().put_file(key, path, content_type)

    def __getattr__(self, name):  # reads and deletes go to the live server
        return getattr(self.good, name)


def test_s3_errors_during_ingest_leave_no_row_without_object_nor_object_without_row(production_stack):
    from botocore.config import Config

    from core.library.ingest import ingest_many
    from core.library.storage_check import check_storage
    from core.storage import S3Storage
    from tests.test_images import assert_consistent

    stack = production_stack
    live = stack.storage
    import boto3

    dead = S3Storage(live.bucket, live.prefix, client=boto3.client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1)))
    storage = FailingAfter(live, dead, good_puts=20)
    items = [{"data": drawn_image_bytes(i, (32, 32)), "filename": f"{i}.png"} for i in range(30)]
    results = ingest_many(actor=ADMIN, items=items, storage=storage, workers=1)
    statuses = [r.status for r in results]
    assert 0 < statuses.count("imported") < 30 and "rejected" in statuses
    assert all("could not store" in r.error for r in results if r.status == "rejected")
    assert assert_consistent(stack) == statuses.count("imported")
    with stack.session() as session:
        assert check_storage(session=session, storage=live)["ok"]
    again = ingest_many(actor=ADMIN, items=items, storage=live, workers=1)  # S3 back: a retry imports the rest
    assert {r.status for r in again} <= {"imported", "duplicate"}
    assert assert_consistent(stack) == 30

