"""Fan-out over the worker fleet (core/jobs/fanout.py): a batch prediction and an archive import split
into chunks run by two real `rq worker` processes on Postgres + Redis; one worker is SIGKILLed in the
middle of a chunk, and still every image is predicted (imported) once and labeled once, with exact
counts and one summary. The embedded set-up runs the same chunks in its own thread."""

from __future__ import annotations

import io
import time
import uuid
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select

from core.models import ClsDatasetImage, ClsImage, ClsJob, ClsJobItem, ClsLabel
from tests.factories import ADMIN
from tests.model_factory import register_model, shared_checkpoint, small_torch_settings
from tests.rq_workers import current_chunk, kill, start_workers, stop

STALE_S = 3


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture
def fleet(request, tmp_path, monkeypatch):
    """Postgres + a local storage folder + Redis, and the environment a worker process needs."""
    from core.config import reset_settings_cache
    from tests.plugins.stack import Stack, _apply, _cleanup, _fresh_postgres, _redis_flush

    pg_url, redis_url = request.getfixturevalue("postgres_server_url"), request.getfixturevalue("redis_server_url")
    _fresh_postgres(pg_url)
    _redis_flush(redis_url)
    built = Stack("fleet", pg_url, f"file://{tmp_path / 'storage'}", redis_url)
    _apply(monkeypatch, built)
    settings = {"CHUNK_STALE_AFTER_S": str(STALE_S), "PREDICTION_CHUNK_IMAGES": "100", "IMPORT_CHUNK_MEMBERS": "100"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    env = {"DATABASE_URL": pg_url, "STORAGE_URL": built.storage_url, "REDIS_URL": redis_url,
           "CLS_CACHE_DIR": str(tmp_path / "worker-cache"), "OMP_NUM_THREADS": "1", **settings}
    yield built, env
    _cleanup()


def noise_png(seed: int, size: int = 32) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def prediction_setup(stack, checkpoint, count: int):
    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from tests.training_data import store_image

    with stack.session() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name="fleet", task_type="single_label")
        class_ids = [create_class(actor=ADMIN, session=session, name=f"digit-{c}").id for c in range(3)]
        model_id = register_model(session, stack.storage, checkpoint, class_ids=class_ids)
        image_ids = [store_image(session, stack.storage, noise_png(i), f"noise{i}.png") for i in range(count)]
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=image_ids)
        return dataset.id, model_id


def kill_one_mid_chunk(stack, workers, job_id, timeout: float = 90) -> None:
    """SIGKILL the first worker seen running a chunk of `job_id` that has made progress (an import's
    chunk reports its members once stored, then adds and labels them: in the middle either way)."""
    from redis import Redis

    connection = Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            running = current_chunk(connection, worker)
            if running is None or running.endswith("-finish"):
                continue
            with stack.session() as session:
                chunk = session.get(ClsJob, uuid.UUID(running))
                if chunk is not None and chunk.parent_id == job_id and chunk.status == "running" and chunk.progress_done > 0:
                    kill(worker)
                    return
        time.sleep(0.02)
    with stack.session() as session:
        rows = session.execute(select(ClsJob.status, ClsJob.progress_done, ClsJob.error).where(
            (ClsJob.id == job_id) | (ClsJob.parent_id == job_id))).all()
    pytest.fail(f"no worker was seen in the middle of a chunk; job and chunks: {rows}")


def wait_for(stack, job_id, timeout: float = 150) -> ClsJob:
    """Wait for the job to end, running the reaper each second as the Jobs page does."""
    from core.jobs.fanout import reap_stale

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.session() as session:
            job = session.get(ClsJob, job_id)
            if job.status in ("succeeded", "failed", "cancelled"):
                session.expunge(job)
                return job
            reap_stale(session=session)
        time.sleep(1)
    pytest.fail(f"job {job_id} did not end in {timeout} s")


def chunk_attempts(stack, job_id) -> list[int]:
    with stack.session() as session:
        return list(session.scalars(select(ClsJob.attempts).where(ClsJob.parent_id == job_id)))


def test_sigkill_of_a_worker_mid_prediction_still_predicts_every_image_once(fleet, checkpoint, tmp_path):
    from core.prediction.auto_label import read_csv, start_batch_prediction

    stack, env = fleet
    count = 800
    dataset_id, model_id = prediction_setup(stack, checkpoint, count)
    workers = start_workers(2, env=env, log_dir=tmp_path)
    try:
        job_id = start_batch_prediction(actor=ADMIN, model_id=model_id, scope="dataset", dataset_id=dataset_id,
                                        write_labels=True, export_csv=True)
        kill_one_mid_chunk(stack, workers, job_id)
        job = wait_for(stack, job_id)
    finally:
        stop(workers)
    assert job.status == "succeeded", job.error
    summary = job.result
    assert (summary["total"], summary["predicted"], summary["labeled"], summary["failed"]) == (count, count, count, 0)
    assert summary["parts"] == 8 and (job.progress_done, job.progress_total) == (count, count)
    assert max(chunk_attempts(stack, job_id)) >= 2  # the killed chunk ran again on the other worker
    with stack.session() as session:
        items = session.scalars(select(ClsJobItem.image_id).where(ClsJobItem.job_id == job_id)).all()
        assert len(items) == len(set(items)) == count
        per_image = session.execute(select(ClsLabel.image_id, func.count()).where(ClsLabel.dataset_id == dataset_id)
                                    .group_by(ClsLabel.image_id)).all()
        assert len(per_image) == count and {n for _, n in per_image} == {1}
        revisions = session.scalars(select(ClsDatasetImage.label_revision).where(
            ClsDatasetImage.dataset_id == dataset_id)).all()
        assert set(revisions) == {1}  # each image's label written once, not rewritten by the rerun
    rows = read_csv(stack.storage, summary["csv_key"])
    assert len(rows) == len({row["image_id"] for row in rows}) == count


def labeled_archive(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"data/class_{index % 3}/img_{index:05d}.png", noise_png(10_000 + index))
        # The first image's bytes again, last: planned into the first image's chunk, stored once.
        archive.writestr("data/class_0/copy_of_img_00000.png", noise_png(10_000))
    return buffer.getvalue()


def test_sigkill_of_a_worker_mid_archive_import_imports_every_image_once(fleet, tmp_path):
    from core.datasets.dataset import create_dataset
    from core.imports.archive import ImportLabeledDatasetRequest, start_archive_import

    stack, env = fleet
    count = 900
    with stack.session() as session:
        dataset_id = create_dataset(actor=ADMIN, session=session, name="imported", task_type="single_label").id
    workers = start_workers(2, env=env, log_dir=tmp_path)
    try:
        job_id = start_archive_import(actor=ADMIN, source=io.BytesIO(labeled_archive(count)),
                                      request=ImportLabeledDatasetRequest(dataset_id=str(dataset_id)))
        kill_one_mid_chunk(stack, workers, job_id)
        job = wait_for(stack, job_id)
    finally:
        stop(workers)
    assert job.status == "succeeded", job.error
    summary = job.result
    assert (summary["images_imported"], summary["duplicates_skipped"], summary["images_added_to_dataset"],
            summary["labels_written"], summary["error_count"]) == (count, 1, count, count, 0), summary
    assert summary["parts"] == 9 and sorted(summary["classes_created"]) == ["class_0", "class_1", "class_2"]
    assert max(chunk_attempts(stack, job_id)) >= 2
    with stack.session() as session:
        hashes = session.scalars(select(ClsImage.file_hash)).all()
        assert len(hashes) == len(set(hashes)) == count  # every image stored once
        per_image = session.execute(select(ClsLabel.image_id, func.count()).where(ClsLabel.dataset_id == dataset_id)
                                    .group_by(ClsLabel.image_id)).all()
        assert len(per_image) == count and {n for _, n in per_image} == {1}
        links = session.scalar(select(func.count()).select_from(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id))
        assert links == count
    assert not list(stack.storage.list_keys("imports/"))  # the archive is deleted once, at the end


def test_embedded_runs_the_chunks_in_its_own_thread_and_cancel_stops_them(embedded_stack, checkpoint, monkeypatch):
    from core.config import reset_settings_cache
    from core.jobs.rows import request_cancel
    from core.prediction.auto_label import start_batch_prediction

    monkeypatch.setenv("PREDICTION_CHUNK_IMAGES", "7")
    reset_settings_cache()
    dataset_id, model_id = prediction_setup(embedded_stack, checkpoint, 30)
    job_id = start_batch_prediction(actor=ADMIN, model_id=model_id, scope="dataset", dataset_id=dataset_id,
                                    write_labels=True)
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "succeeded" and job.result["parts"] == 5 and job.result["labeled"] == 30
        assert (job.progress_done, job.progress_total) == (30, 30)
        chunks = session.scalars(select(ClsJob).where(ClsJob.parent_id == job_id)).all()
        assert len(chunks) == 5 and {c.status for c in chunks} == {"succeeded"} and {c.attempts for c in chunks} == {1}
    # Cancel: a running fanned-out job's queued chunks never start and the job ends cancelled.
    monkeypatch.setenv("PREDICTION_CHUNK_IMAGES", "1")
    reset_settings_cache()
    job_id = start_batch_prediction(actor=ADMIN, model_id=model_id, scope="dataset", dataset_id=dataset_id,
                                    write_labels=True, overwrite=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with embedded_stack.session() as session:
            if session.scalar(select(func.count()).where(ClsJob.parent_id == job_id, ClsJob.status == "succeeded")):
                request_cancel(actor=ADMIN, session=session, job_id=job_id)
                break
        time.sleep(0.01)
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job_id)
        statuses = session.scalars(select(ClsJob.status).where(ClsJob.parent_id == job_id)).all()
        assert job.status == "cancelled"
        assert "cancelled" in statuses and statuses.count("succeeded") < 30


def test_embedded_reaper_ends_a_fanned_out_job_whose_process_died(embedded_stack):
    from datetime import timedelta

    from core.jobs.fanout import CHUNK_KIND, reap_stale
    from core.models import utcnow

    long_ago = utcnow() - timedelta(minutes=10)
    with embedded_stack.session() as session:
        parent = ClsJob(kind="batch_prediction", queue="predictions", function="jobs.predictions.batch_predict",
                        params={}, status="running", heartbeat_at=long_ago)
        session.add(parent)
        session.flush()
        running, queued = (ClsJob(kind=CHUNK_KIND, queue="predictions", function="jobs.predictions.predict_chunk",
                                  params={}, status=status, heartbeat_at=long_ago, parent_id=parent.id)
                           for status in ("running", "queued"))
        session.add_all([running, queued])
    with embedded_stack.session() as session:
        assert reap_stale(session=session) == 1  # the parent; its running chunk ended failed, not requeued
    with embedded_stack.session() as session:
        assert session.get(ClsJob, parent.id).status == "failed"
        assert session.get(ClsJob, running.id).status == "failed"
