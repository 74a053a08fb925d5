"""Job queue: hand a job function to a worker and record its cls_jobs row.

Two backends behind one `enqueue`: RQ on Redis (queues imports, training, predictions; run by RQ's
own `rq worker`) when REDIS_URL is set, else an in-process thread pool for the embedded set-up.
"""

from __future__ import annotations

import logging
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from core.config import get_settings, scheme_of
from core.db import session_scope
from core.errors import ConfigError, ServiceUnavailable
from core.jobs.kinds import JobKind, job_kind
from core.jobs.rows import create_job, run_job
from core.models import ClsJob, utcnow
from core.users import User

log = logging.getLogger(__name__)

class InProcessBackend:
    """Threads in this process: no servers needed. Jobs die with the process (the reaper then
    marks them failed)."""

    name = "in-process"

    def __init__(self, max_workers: int = 2):
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="job")
        self.futures: dict[uuid.UUID, Future] = {}

    def check(self) -> None:
        return None

    def submit(self, job_id: uuid.UUID, kind: JobKind) -> str:
        self.futures[job_id] = self.executor.submit(run_job, job_id)
        return f"local-{job_id}"

    def wait(self, job_id: uuid.UUID, timeout: float | None = None) -> None:
        future = self.futures.get(job_id)
        if future is not None:
            future.result(timeout=timeout)


class RQBackend:
    name = "rq"

    def __init__(self, redis_url: str):
        from redis import Redis  # deferred: the embedded set-up never needs it

        self.redis_url = redis_url
        try:
            self.connection = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10)
        except ValueError:  # the URL may hold a password: name only its scheme
            raise ConfigError(f"REDIS_URL: cannot parse this {scheme_of(redis_url)} URL") from None

    def check(self) -> None:
        from redis.exceptions import RedisError

        try:
            self.connection.ping()
        except RedisError as exc:
            raise ServiceUnavailable(f"REDIS_URL: cannot reach Redis ({exc}); the job was not started") from None

    def submit(self, job_id: uuid.UUID, kind: JobKind) -> str:
        from rq import Queue

        rq_job = Queue(kind.queue, connection=self.connection).enqueue_call(
            "core.jobs.rows.run_job", args=(str(job_id),), timeout=kind.timeout_s,
            job_id=str(job_id), result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        )
        return rq_job.id

    def wait(self, job_id: uuid.UUID, timeout: float | None = None) -> None:
        raise NotImplementedError("RQ jobs finish in a worker; poll the cls_jobs row instead")


Backend = InProcessBackend | RQBackend

_backends: dict[tuple[int, str], Backend] = {}
"""One backend per process and REDIS_URL, as core.storage keeps one store: a forked process (an RQ
work horse) builds its own instead of inheriting the parent's thread pool or Redis socket."""


def get_backend() -> Backend:
    """The backend the settings name: RQ when REDIS_URL is set, else the in-process pool."""
    redis_url = get_settings().redis_url
    cache_key = (os.getpid(), redis_url or "in-process")
    backend = _backends.get(cache_key)
    if backend is None:
        backend = _backends[cache_key] = RQBackend(redis_url) if redis_url else InProcessBackend()
    return backend


def reset_backend() -> None:
    """Forget every backend (tests that change REDIS_URL or need a fresh pool)."""
    _backends.clear()


def enqueue(*, actor: User, kind: str, params: dict[str, Any] | None = None, on_created=None) -> uuid.UUID:
    """Record a job and hand it to a worker; returns the cls_jobs id.

    A write primitive, like session.add: only declared services call it, having checked `actor`,
    who is recorded with the job (core.jobs.rows.create_job) and checked again when it runs.
    The backend is checked first, so an unreachable Redis raises before any row exists.
    `on_created(session, job)` runs in the transaction that creates the job row: rows that belong
    to the job (a training run) are created with it or not at all.
    """
    job_kind(kind)  # an unknown kind is refused before anything happens
    backend = get_backend()
    backend.check()
    with session_scope() as session:
        job = create_job(session=session, actor=actor, kind=kind, params=params or {})
        if on_created is not None:
            on_created(session, job)
        job_id = job.id
    submit_created(job_id, kind)
    return job_id


def submit_created(job_id: uuid.UUID, kind: str) -> None:
    """Hand a committed cls_jobs row of `kind` to the backend; if that fails, the row ends failed with why."""
    try:
        queue_job_id = get_backend().submit(job_id, job_kind(kind))
    except Exception as exc:  # Redis went away between the check and the submit
        with session_scope() as session:
            row = session.get(ClsJob, job_id)
            row.status, row.finished_at = "failed", utcnow()
            row.error = f"could not be queued: {exc}"
        raise ServiceUnavailable(f"REDIS_URL: could not queue the job ({exc})") from exc
    with session_scope() as session:
        session.get(ClsJob, job_id).queue_job_id = queue_job_id
