"""Jobs on both backends: the in-process pool and Redis/RQ run by RQ's SimpleWorker (burst)."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.errors import InvalidInput, ServiceUnavailable
from core.jobs.queue import enqueue
from core.jobs.rows import get_job, reap_stale_jobs, request_cancel, run_job
from core.models import ClsJob, utcnow
from tests.factories import ADMIN


def _job(job_id):
    with session_scope() as session:
        return get_job(session=session, job_id=job_id)


def test_job_succeeds_with_result_and_progress(stack):
    job_id = enqueue(actor=ADMIN, kind="test_add_numbers", params={"a": 2, "b": 3})
    stack.drain_jobs()
    job = _job(job_id)
    assert job.status == "succeeded"
    assert job.result == {"sum": 5}
    assert (job.progress_done, job.progress_total) == (2, 2)
    assert job.queue_job_id
    assert job.started_at is not None and job.finished_at is not None


def test_job_that_raises_ends_failed_with_error_text(stack):
    job_id = enqueue(actor=ADMIN, kind="test_fail_with_message", params={"message": "the disk is full"})
    stack.drain_jobs()
    job = _job(job_id)
    assert job.status == "failed"
    assert "the disk is full" in job.error


def test_queued_job_cancelled_before_start_never_runs(stack):
    job_id = enqueue(actor=ADMIN, kind="test_add_numbers_on_predictions", params={"a": 1, "b": 1}) if stack.redis_url else None
    if job_id is None:
        pytest.skip("in-process jobs start at once; covered by test_running_job_is_cancelled")
    with session_scope() as session:
        request_cancel(actor=ADMIN, session=session, job_id=job_id)
    stack.drain_jobs()
    job = _job(job_id)
    assert job.status == "cancelled"
    assert job.result is None


def test_running_job_is_cancelled_between_steps(embedded_stack):
    job_id = enqueue(actor=ADMIN, kind="test_wait_for_cancel", params={"steps": 400, "delay_s": 0.02})
    deadline = time.monotonic() + 10
    while _job(job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    with session_scope() as session:
        request_cancel(actor=ADMIN, session=session, job_id=job_id)
    started = time.monotonic()
    embedded_stack.drain_jobs()
    assert time.monotonic() - started < 5
    assert _job(job_id).status == "cancelled"


def test_rq_running_job_is_cancelled(stack):
    if not stack.redis_url:
        pytest.skip("RQ variant")
    job_id = enqueue(actor=ADMIN, kind="test_wait_for_cancel", params={"steps": 400, "delay_s": 0.02})

    def cancel_when_running():
        deadline = time.monotonic() + 20
        while _job(job_id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        with session_scope() as session:
            request_cancel(actor=ADMIN, session=session, job_id=job_id)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    stack.drain_jobs()
    canceller.join()
    assert _job(job_id).status == "cancelled"


def test_unknown_kinds_and_queues_are_refused(embedded_stack):
    from core.jobs.kinds import JobKind

    with pytest.raises(InvalidInput, match="unknown job kind 'test'"):
        enqueue(actor=ADMIN, kind="test", params={})
    with pytest.raises(InvalidInput, match="unknown queue 'gpu'"):
        JobKind("tests.fixtures.add_numbers", "gpu")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0


def test_job_functions_outside_jobs_are_refused(embedded_stack):
    job_id = enqueue(actor=ADMIN, kind="test_outside_jobs", params={"command": "true"})
    embedded_stack.drain_jobs()
    job = _job(job_id)
    assert job.status == "failed" and "not in jobs/" in job.error


def test_redis_unreachable_gives_clear_error_and_no_row(embedded_stack, monkeypatch):
    from core.config import reset_settings_cache
    from core.jobs.queue import reset_backend

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    reset_settings_cache()
    reset_backend()
    with pytest.raises(ServiceUnavailable, match="REDIS_URL"):
        enqueue(actor=ADMIN, kind="test_add_numbers", params={"a": 1, "b": 2})
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0


def test_reaper_marks_silent_running_jobs_failed(db_stack):
    with session_scope() as session:
        stale = ClsJob(kind="test", queue="training", function="tests.fixtures.add_numbers", params={},
                       status="running", heartbeat_at=utcnow() - timedelta(minutes=10))
        fresh = ClsJob(kind="test", queue="training", function="tests.fixtures.add_numbers", params={},
                       status="running", heartbeat_at=utcnow())
        session.add_all([stale, fresh])
    with session_scope() as session:
        assert reap_stale_jobs(session=session) == 1
    assert _job(stale.id).status == "failed"
    assert "worker stopped responding" in _job(stale.id).error
    assert _job(fresh.id).status == "running"


def test_run_job_twice_does_not_rerun(embedded_stack):
    job_id = enqueue(actor=ADMIN, kind="test_add_numbers", params={"a": 1, "b": 1})
    embedded_stack.drain_jobs()
    assert run_job(job_id) == {"sum": 2}
    assert _job(job_id).attempts == 1
