"""The cls_jobs row of a background job: create, progress, cancel, finish, reap.

`run_job` is what a worker executes (RQ's `rq worker` or the in-process pool): it loads the job
function by dotted path, gives it a JobContext and the actor who queued the job, and records the
outcome. A heartbeat thread stamps
`heartbeat_at`; a running job whose heartbeat stops (worker killed) is marked failed by
`reap_stale_jobs`, so nothing stays "running" forever.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from core import limits
from core.db import session_scope
from core.errors import JobCancelled, NotFound, PermissionDenied, UserError
from core.jobs.kinds import JOB_KINDS, job_kind
from core.models import ClsJob, utcnow
from core.permissions import require, requires
from core.users import User, actor_from_record, actor_record

log = logging.getLogger(__name__)
ACTIVE_STATUSES = ("queued", "running")
DETACHED = {"fanned_out": True}
"""What a fanned-out job's function returns (core/jobs/fanout.py): its chunks and finisher end its row."""


def is_detached(result: Any) -> bool:
    return isinstance(result, dict) and result.get("fanned_out") is True and len(result) == 1


class JobContext:
    """Handed to every job function: report progress, notice cancellation.

    `progress()` writes at most every `min_interval_s` (plus always the last step) and raises
    JobCancelled once the user has asked to cancel, so a loop that reports progress is cancellable.
    """

    def __init__(self, job_id: uuid.UUID, *, min_interval_s: float = 0.5):
        self.job_id = job_id
        self.min_interval_s = min_interval_s
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 *, force: bool = False) -> None:
        now = time.monotonic()
        last_step = total is not None and done >= total
        if force or last_step or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            values: dict[str, Any] = {"progress_done": done, "heartbeat_at": utcnow()}
            if total is not None:
                values["progress_total"] = total
            if message is not None:
                values["message"] = message[:2000]
            with session_scope() as session:
                session.execute(update(ClsJob).where(ClsJob.id == self.job_id).values(**values))
                self._cancelled = bool(
                    session.scalar(select(ClsJob.cancel_requested).where(ClsJob.id == self.job_id))
                )
                self._last_cancel_check = now
        if self._cancelled:
            raise JobCancelled()

    def message(self, text: str) -> None:
        with session_scope() as session:
            session.execute(update(ClsJob).where(ClsJob.id == self.job_id).values(message=text[:2000]))

    def check_cancelled(self) -> None:
        """Cheap to call often: reads the flag at most once a second."""
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            with session_scope() as session:
                self._cancelled = bool(
                    session.scalar(select(ClsJob.cancel_requested).where(ClsJob.id == self.job_id))
                )
        if self._cancelled:
            raise JobCancelled()


def create_job(*, session: Session, actor: User, kind: str, params: dict[str, Any]) -> ClsJob:
    """The job's row (its function and queue from the kinds table), with the actor who started it
    (`params["actor"]`, core.users.actor_record): the job runs as that actor, whose role is checked
    again by the services it calls."""
    if not isinstance(actor, User):
        raise TypeError("a job is started by an actor (core.users.User)")
    entry = job_kind(kind)
    job = ClsJob(kind=kind, queue=entry.queue, function=entry.function, params={**params, "actor": actor_record(actor)},
                 user_id=actor.id, status="queued")
    session.add(job)
    session.flush()
    return job


def get_job(*, session: Session, job_id: uuid.UUID) -> ClsJob:
    job = session.get(ClsJob, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def list_jobs(*, session: Session, limit: int = 20, kinds: list[str] | None = None,
              active_only: bool = False) -> list[ClsJob]:
    query = select(ClsJob).where(ClsJob.parent_id.is_(None)).order_by(ClsJob.created_at.desc()).limit(limit)
    if kinds:
        query = query.where(ClsJob.kind.in_(kinds))
    if active_only:
        query = query.where(ClsJob.status.in_(ACTIVE_STATUSES))
    return list(session.scalars(query))


@requires("labeler", "cancelling a job")
def request_cancel(*, session: Session, actor: User, job_id: uuid.UUID) -> ClsJob:
    """Ask a job to stop; a queued job that never started is cancelled at once. Whoever started a job
    may cancel it (a labeler their batch prediction); another's job needs the admin role."""
    job = get_job(session=session, job_id=job_id)
    if job.user_id != actor.id:
        require(actor, "admin", "cancelling another person's job")
    if job.status == "queued":
        job.status, job.finished_at, job.cancel_requested = "cancelled", utcnow(), True
    elif job.status == "running":
        job.cancel_requested = True
        # A fanned-out job's queued chunks never start; its running ones read this flag (core/jobs/fanout.py).
        session.execute(update(ClsJob).where(ClsJob.parent_id == job.id, ClsJob.status == "queued").values(
            status="cancelled", finished_at=utcnow(), cancel_requested=True).execution_options(
            synchronize_session=False))
    return job


def reap_stale_jobs(*, session: Session, stale_after_s: float = limits.JOB_STALE_AFTER_S,
                    wait_for_chunks: bool = True) -> int:
    """Mark failed the running jobs whose heartbeat stopped: their worker died. Chunks of a fanned-out
    job are left to core.jobs.fanout.reap_stale (which queues them again), and their parent waits
    while it has chunks to run (`wait_for_chunks`; in-process chunks die with their parent's process)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    children = aliased(ClsJob)
    has_live_chunks = select(children.id).where(children.parent_id == ClsJob.id,
                                                children.status.in_(ACTIVE_STATUSES)).exists()
    query = select(ClsJob).where(ClsJob.status == "running", ClsJob.heartbeat_at < cutoff, ClsJob.parent_id.is_(None))
    stale = session.scalars(query.where(~has_live_chunks) if wait_for_chunks else query).all()
    for job in stale:
        job.status = "failed"
        job.finished_at = utcnow()
        job.error = (
            f"worker stopped responding (no heartbeat since {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); "
            "the job can be retried"
        )
        _run_failure_hook(job)
    return len(stale)


def _run_failure_hook(job: ClsJob) -> None:
    """The kind's failure hook (core.jobs.kinds) marks its own rows (a training run, an import)
    failed when the job dies outside its control."""
    entry = JOB_KINDS.get(job.kind)
    if entry is None or entry.on_failure is None:
        return
    try:
        load_function(entry.on_failure)(job.id, job.params, job.error)
    except Exception:  # a broken hook must not stop the reaper
        log.exception("failure hook of job %s failed", job.id)


def _heartbeat(job_id: uuid.UUID, stop: threading.Event) -> None:
    while not stop.wait(limits.JOB_HEARTBEAT_S):
        try:
            with session_scope() as session:
                session.execute(update(ClsJob).where(ClsJob.id == job_id).values(heartbeat_at=utcnow()))
        except Exception:
            log.warning("heartbeat of job %s failed", job_id, exc_info=True)


def load_function(path: str):
    module_name, _, attr = path.rpartition(".")
    if not module_name.startswith("jobs.") and not module_name.startswith("tests."):
        raise UserError(f"job function {path!r} is not in jobs/")
    return getattr(importlib.import_module(module_name), attr)


def run_job(job_id: str | uuid.UUID) -> dict[str, Any] | None:
    """Execute one job to its end, as the actor who queued it (rebuilt from params["actor"] and
    passed to the job function, whose declared services check that actor's role now); the entry
    point both backends call."""
    job_id = uuid.UUID(str(job_id))
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        if job.status != "queued":
            return job.result  # cancelled before it started, or already ran (a retried delivery)
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", utcnow()
            return None
        job.status, job.started_at, job.heartbeat_at = "running", utcnow(), utcnow()
        job.attempts += 1
        function, params = job.function, dict(job.params or {})
    record = params.pop("actor", None)

    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, stop), daemon=True)
    beat.start()
    status, result, error = "succeeded", None, None
    try:
        if not isinstance(record, dict):  # fail closed: a job nobody started does not run
            raise PermissionDenied("this job records no actor who started it; it was not run")
        result = load_function(function)(JobContext(job_id), actor=actor_from_record(record), **params)
    except JobCancelled:
        status = "cancelled"
    except UserError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("job %s failed\n%s", job_id, traceback.format_exc())
    finally:
        stop.set()
    if status == "succeeded" and is_detached(result):
        return None  # its chunks run on; core.jobs.fanout.finish_parent ends the row
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        job.status, job.finished_at, job.heartbeat_at = status, utcnow(), utcnow()
        job.error = error
        if result is not None:
            job.result = result
        if status == "succeeded" and job.progress_total:
            job.progress_done = job.progress_total
        if status == "failed":
            _run_failure_hook(job)
    return result


def job_age(job: ClsJob) -> timedelta:
    start = job.started_at or job.created_at
    if start.tzinfo is None:  # SQLite returns naive datetimes
        start = start.replace(tzinfo=UTC)
    end = job.finished_at or datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return end - start
