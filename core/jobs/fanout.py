"""Fan-out: a job that splits its work into chunks run by every worker of its queue.

The parent job (a normal cls_jobs row) plans the chunks and calls `fan_out`, which records one
cls_jobs row per chunk (`parent_id` = the parent) and hands them to the backend; the parent's job
function then returns at once (DETACHED) and frees its worker. With RQ, RQ is the engine: each
chunk is an RQ job with `Retry` and an `on_failure` callback, and the finisher is an RQ job that
`depends_on` every chunk (`allow_failure`), so it runs once when the last chunk has ended. In-process,
the same functions run the chunks one after another, then the finisher.

Exactly once: a chunk's work is idempotent (its results are applied in the transaction that writes
each item's cls_job_items row, whose primary key refuses a second one), so a chunk run twice changes
nothing twice; the finisher counts the summary from those rows. A chunk whose worker died stops
beating; the next chunk that starts or ends (or the reaper) puts it back on its queue, and RQ's own
abandoned-job handling (StartedJobRegistry cleanup + Retry) does so too when nothing else runs.
Progress: every chunk's progress is summed onto the parent. Cancel: the parent's flag stops every
chunk (core.jobs.rows.request_cancel also cancels the queued ones).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from core.config import get_settings
from core.db import session_scope
from core.errors import JobCancelled, UserError
from core.jobs.kinds import DEFAULT_TIMEOUT_S
from core.jobs.queue import get_backend
from core.jobs.rows import DETACHED, _run_failure_hook, load_function, reap_stale_jobs
from core.models import ClsJob, ClsJobItem, utcnow
from core.users import actor_from_record

log = logging.getLogger(__name__)

CHUNK_KIND = "fanout_chunk"
CHUNK_RETRIES = 2
TERMINAL = ("succeeded", "failed", "cancelled")


def fan_out(ctx, *, chunk_function: str, chunks: list[dict[str, Any]], sizes: list[int], finish: str,
            plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the chunks of the job `ctx` runs (each `chunks[i]` the keyword arguments of
    `chunk_function`, a jobs/ function, with `sizes[i]` items) and start them; `finish(parent_id,
    plan, chunk_results, actor)` (a jobs/ function) makes the parent's result when they have ended."""
    with session_scope() as session:
        parent = session.get(ClsJob, ctx.job_id)
        record = parent.params.get("actor")
        parent.progress_total, parent.progress_done = sum(sizes), 0
        parent.result = {"fanout": {"finish": finish, "plan": plan or {}, "chunks": len(chunks)}}
        rows = [ClsJob(kind=CHUNK_KIND, queue=parent.queue, function=chunk_function, params={**chunk, "actor": record},
                       user_id=parent.user_id, status="queued", parent_id=parent.id, progress_total=size)
                for chunk, size in zip(chunks, sizes, strict=True)]
        session.add_all(rows)
        session.flush()
        parent_id, queue_name, chunk_ids = parent.id, parent.queue, [row.id for row in rows]
    backend = get_backend()
    if not chunk_ids:  # nothing to spread: finish here
        finish_parent(parent_id)
    elif backend.name == "rq":
        _submit_to_rq(backend.connection, queue_name, parent_id, chunk_ids)
    else:  # in-process: this thread runs them in order (a pool thread already), each retried as RQ would
        for chunk_id in chunk_ids:
            for attempt in range(CHUNK_RETRIES + 1):
                try:
                    run_chunk(chunk_id)
                    break
                except Exception:
                    log.warning("chunk %s failed (attempt %d)", chunk_id, attempt + 1)
        finish_parent(parent_id)
    return DETACHED


def _submit_to_rq(connection, queue_name: str, parent_id: uuid.UUID, chunk_ids: list[uuid.UUID]) -> None:
    from rq import Callback, Queue, Retry
    from rq.job import Dependency

    queue = Queue(queue_name, connection=connection)
    common = {"timeout": DEFAULT_TIMEOUT_S, "result_ttl": 24 * 3600, "failure_ttl": 7 * 24 * 3600}
    queue.enqueue_many([Queue.prepare_data("core.jobs.fanout.run_chunk", args=(str(chunk_id),), job_id=str(chunk_id),
                                           retry=Retry(max=CHUNK_RETRIES), on_failure=Callback(on_chunk_failed),
                                           **common) for chunk_id in chunk_ids])
    queue.enqueue_call("core.jobs.fanout.finish_parent", args=(str(parent_id),), job_id=f"{parent_id}-finish",
                       depends_on=Dependency(jobs=[str(i) for i in chunk_ids], allow_failure=True),
                       retry=Retry(max=CHUNK_RETRIES), **common)


class ChunkContext:
    """A chunk's JobContext: its progress is summed onto the parent, and the parent's cancel flag stops it."""

    def __init__(self, chunk_id: uuid.UUID, parent_id: uuid.UUID, *, min_interval_s: float = 0.5):
        self.job_id, self.parent_id, self.min_interval_s = chunk_id, parent_id, min_interval_s
        self._clock = time.monotonic
        self._last_write = self._last_check = 0.0
        self._cancelled = False

    def progress(self, done: int, total: int | None = None, message: str | None = None, *, force: bool = False) -> None:
        now = self._clock()
        if force or (total is not None and done >= total) or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            with session_scope() as session:
                session.execute(update(ClsJob).where(ClsJob.id == self.job_id).values(
                    progress_done=done, heartbeat_at=utcnow()))
                _sum_progress(session, self.parent_id, message)
                self._cancelled = _cancel_requested(session, self.parent_id)
        if self._cancelled:
            raise JobCancelled()

    def check_cancelled(self) -> None:
        """Reads the parent's flag at most once a second."""
        now = self._clock()
        if not self._cancelled and now - self._last_check >= 1.0:
            self._last_check = now
            with session_scope() as session:
                self._cancelled = _cancel_requested(session, self.parent_id)
        if self._cancelled:
            raise JobCancelled()

    def message(self, text: str) -> None:
        return None  # the parent's message is the sum of its chunks'


def _sum_progress(session, parent_id: uuid.UUID, message: str | None = None) -> None:
    done = select(func.coalesce(func.sum(ClsJob.progress_done), 0)).where(ClsJob.parent_id == parent_id)
    values: dict[str, Any] = {"progress_done": done.scalar_subquery(), "heartbeat_at": utcnow()}
    if message:
        values["message"] = message[:2000]
    session.execute(update(ClsJob).where(ClsJob.id == parent_id).values(**values))


def _cancel_requested(session, parent_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(ClsJob.cancel_requested).where(ClsJob.id == parent_id)))


def _claim(chunk_id: uuid.UUID) -> tuple[str, dict, uuid.UUID] | None:
    """Mark the chunk running if nobody runs it: queued, failed (a retry), or running with a stopped
    heartbeat (its worker died). One conditional UPDATE, so two deliveries never both win."""
    cutoff = utcnow() - timedelta(seconds=get_settings().chunk_stale_after_s)
    with session_scope() as session:
        claimed = session.execute(update(ClsJob).where(
            ClsJob.id == chunk_id,
            or_(ClsJob.status.in_(("queued", "failed")), (ClsJob.status == "running") & (ClsJob.heartbeat_at < cutoff)),
        ).values(status="running", started_at=utcnow(), heartbeat_at=utcnow(), attempts=ClsJob.attempts + 1,
                 error=None).execution_options(synchronize_session=False)).rowcount
        if not claimed:
            return None
        row = session.get(ClsJob, chunk_id)
        if _cancel_requested(session, row.parent_id):
            row.status, row.finished_at = "cancelled", utcnow()
            return None
        return row.function, dict(row.params or {}), row.parent_id


def _beat(chunk_id: uuid.UUID, parent_id: uuid.UUID, stop: threading.Event) -> None:
    while not stop.wait(get_settings().chunk_stale_after_s / 4):
        try:
            with session_scope() as session:
                session.execute(update(ClsJob).where(ClsJob.id.in_((chunk_id, parent_id))).values(heartbeat_at=utcnow()))
        except Exception:
            log.warning("heartbeat of chunk %s failed", chunk_id, exc_info=True)


def run_chunk(chunk_id: str | uuid.UUID) -> None:
    """Run one chunk (what RQ executes; in-process, fan_out calls it). An unexpected error is raised
    again after it is recorded, so RQ's Retry runs the chunk again; a UserError (bad input) is not."""
    chunk_id = uuid.UUID(str(chunk_id))
    claimed = _claim(chunk_id)
    if claimed is None:
        return  # finished, cancelled, or running on a live worker
    function, params, parent_id = claimed
    requeue_stale_chunks(parent_id)
    record = params.pop("actor", None)
    stop = threading.Event()
    threading.Thread(target=_beat, args=(chunk_id, parent_id, stop), daemon=True).start()
    status, result, error, again = "succeeded", None, None, None
    try:
        result = load_function(function)(ChunkContext(chunk_id, parent_id), actor=actor_from_record(record), **params)
    except JobCancelled:
        status = "cancelled"
    except UserError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:
        status, error, again = "failed", f"{type(exc).__name__}: {exc}", exc
        log.error("chunk %s of job %s failed\n%s", chunk_id, parent_id, traceback.format_exc())
    finally:
        stop.set()
    with session_scope() as session:
        row = session.get(ClsJob, chunk_id)
        row.status, row.finished_at, row.heartbeat_at, row.error, row.result = status, utcnow(), utcnow(), error, result
        if status == "succeeded":
            row.progress_done = row.progress_total or row.progress_done
        session.flush()
        _sum_progress(session, parent_id)
    requeue_stale_chunks(parent_id)
    if again is not None:
        raise again


def on_chunk_failed(job, connection, type, value, tb) -> None:  # noqa: A002 - RQ's callback signature
    """RQ's failure callback (also called for an abandoned chunk): a chunk row left running is failed,
    so a later retry may claim it and the finisher sees it ended."""
    with session_scope() as session:
        session.execute(update(ClsJob).where(ClsJob.id == uuid.UUID(job.id), ClsJob.status == "running").values(
            status="failed", finished_at=utcnow(), error=f"worker failed: {getattr(type, '__name__', type)}"))


def requeue_stale_chunks(parent_id: uuid.UUID | None = None) -> int:
    """Put back on their queue the running chunks (of one parent, or all) whose heartbeat stopped.
    The row goes back to queued in one conditional UPDATE (one requeuer wins); RQ's job is then
    enqueued again under the same id. In-process chunks died with their process: they end failed."""
    cutoff = utcnow() - timedelta(seconds=get_settings().chunk_stale_after_s)
    stale = (ClsJob.status == "running") & (ClsJob.heartbeat_at < cutoff) & ClsJob.parent_id.is_not(None)
    if parent_id is not None:
        stale &= ClsJob.parent_id == parent_id
    backend = get_backend()
    if backend.name != "rq":  # in-process chunks died with their process, and nothing would run them again
        with session_scope() as session:
            return session.execute(update(ClsJob).where(stale).values(
                status="failed", finished_at=utcnow(), error="the process running it stopped").execution_options(
                synchronize_session=False)).rowcount
    requeued = []
    with session_scope() as session:
        for chunk_id, queue_name in session.execute(select(ClsJob.id, ClsJob.queue).where(stale)).all():
            won = session.execute(update(ClsJob).where(ClsJob.id == chunk_id, stale).values(
                status="queued", error="its worker stopped; queued again").execution_options(
                synchronize_session=False)).rowcount
            if won:
                requeued.append((chunk_id, queue_name))
    if requeued:
        from rq import Queue
        from rq.exceptions import NoSuchJobError
        from rq.job import Job
        from rq.registry import StartedJobRegistry

        for chunk_id, queue_name in requeued:
            log.warning("chunk %s stopped beating; queued again", chunk_id)
            try:
                job = Job.fetch(str(chunk_id), connection=backend.connection)
            except NoSuchJobError:
                continue
            queue = Queue(queue_name, connection=backend.connection)
            # The dead execution leaves RQ's started registry now, so RQ's own cleanup does not also
            # retry it (as abandoned) later while another worker runs it.
            StartedJobRegistry(queue=queue).remove_executions(job)
            queue.enqueue_job(job)
    return len(requeued)


def reap_stale(*, session) -> int:
    """The reaper the pages and CLI run: silent chunks go back on their queue, then silent jobs end failed."""
    requeue_stale_chunks()
    return reap_stale_jobs(session=session, wait_for_chunks=get_backend().name == "rq")


def finish_parent(parent_id: str | uuid.UUID) -> None:
    """End the parent when every chunk has ended (RQ runs this once they have; a second delivery finds
    the parent ended and does nothing): cancelled, failed (naming the failed chunks), or the finish
    function's summary."""
    parent_id = uuid.UUID(str(parent_id))
    with session_scope() as session:
        parent = session.get(ClsJob, parent_id)
        if parent is None or parent.status in TERMINAL:
            return
        chunks = list(session.scalars(select(ClsJob).where(ClsJob.parent_id == parent_id).order_by(ClsJob.created_at)))
        if any(chunk.status not in TERMINAL for chunk in chunks):
            return  # a requeued chunk is still to run; its end enqueues this again (RQ dependency)
        fanout = (parent.result or {}).get("fanout", {})
        results = [chunk.result or {} for chunk in chunks]
        failed = [chunk for chunk in chunks if chunk.status == "failed"]
        cancelled = parent.cancel_requested or any(chunk.status == "cancelled" for chunk in chunks)
        record = (parent.params or {}).get("actor")
    status, result, error = "succeeded", None, None
    if cancelled:
        status = "cancelled"
    elif failed:
        status = "failed"
        error = f"{len(failed)} of {len(chunks)} parts failed; the first: {failed[0].error}"
    else:
        try:
            result = load_function(fanout["finish"])(parent_id=parent_id, plan=fanout.get("plan", {}),
                                                     chunk_results=results, actor=actor_from_record(record))
        except UserError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("finishing job %s failed\n%s", parent_id, traceback.format_exc())
    with session_scope() as session:
        parent = session.get(ClsJob, parent_id)
        if parent.status in TERMINAL:
            return
        parent.status, parent.finished_at, parent.heartbeat_at, parent.error = status, utcnow(), utcnow(), error
        parent.result = result
        if status == "succeeded":
            parent.progress_done = parent.progress_total or parent.progress_done
        if status != "succeeded":
            _run_failure_hook(parent)


def record_items(session, job_id: uuid.UUID, rows: list[dict[str, Any]]) -> set[str]:
    """Insert cls_job_items rows for the parent `job_id` (each {item_key, image_id, outcome, added,
    labels}) unless already there; returns the item keys inserted now, the items whose results this
    transaction may apply. A concurrent duplicate run waits on the key and inserts nothing."""
    from sqlalchemy.dialects.postgresql import insert as postgres_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    if not rows:
        return set()
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(ClsJobItem).values([{"added": 0, "labels": 0, **row, "job_id": job_id} for row in rows])
    return set(session.scalars(statement.on_conflict_do_nothing().returning(ClsJobItem.item_key)))


def done_items(session, job_id: uuid.UUID, keys: list[str]) -> set[str]:
    """Of `keys`, those the job has already applied (an earlier run of the same chunk)."""
    done: set[str] = set()
    for start in range(0, len(keys), 500):  # bounded IN lists (SQLite's variable limit)
        done.update(session.scalars(select(ClsJobItem.item_key).where(
            ClsJobItem.job_id == job_id, ClsJobItem.item_key.in_(keys[start:start + 500]))))
    return done


def item_counts(session, job_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """Per outcome: how many items, how many were added to a dataset, how many labels were written."""
    rows = session.execute(select(ClsJobItem.outcome, func.count(), func.coalesce(func.sum(ClsJobItem.added), 0),
                                  func.coalesce(func.sum(ClsJobItem.labels), 0))
                           .where(ClsJobItem.job_id == job_id).group_by(ClsJobItem.outcome)).all()
    return {outcome: {"items": int(n), "added": int(added), "labels": int(labels)} for outcome, n, added, labels in rows}
