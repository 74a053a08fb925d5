"""The library-wide duplicate search as a job (admin): start it, run it (exact and confirmed near
groups), the latest finished search, and its groups as rows the Duplicates view shows."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.jobs.queue import enqueue
from core.jobs.rows import list_jobs
from core.library.duplicates import DEFAULT_THRESHOLD, check_threshold, exact_duplicate_groups, near_duplicate_groups
from core.models import ClsImage
from core.permissions import requires
from core.storage import get_storage
from core.users import User

SEARCH_JOB_KIND = "duplicates"


@requires("admin", "searching the library for duplicates")
def start_duplicate_search(*, actor: User, threshold: int = DEFAULT_THRESHOLD, confirm: bool = True) -> uuid.UUID:
    """Queue the library-wide search (exact and near groups) on the `imports` queue; returns the job id."""
    threshold = check_threshold(threshold)
    return enqueue(actor=actor, kind=SEARCH_JOB_KIND, params={"threshold": threshold, "confirm": bool(confirm)})


@requires("admin", "searching the library for duplicates")
def run_duplicate_search(*, actor: User, threshold: int, confirm: bool = True, progress=None) -> dict[str, Any]:
    """The search job's body: exact and near groups of the whole library, as id strings."""
    with session_scope() as session:
        exact = exact_duplicate_groups(session=session)
        near = near_duplicate_groups(session=session, storage=get_storage(), threshold=threshold, confirm=confirm,
                                     progress=progress)
    return {"threshold": threshold, "confirmed": confirm, "exact": [[str(i) for i in g] for g in exact],
            "near": [[str(i) for i in g] for g in near]}


def latest_search(*, session: Session) -> dict[str, Any] | None:
    """The newest duplicate search job: its id, status, parameters and (when it succeeded) groups."""
    jobs = list_jobs(session=session, limit=1, kinds=[SEARCH_JOB_KIND])
    if not jobs:
        return None
    job = jobs[0]
    return {"job_id": job.id, "status": job.status, "params": job.params, "result": job.result,
            "error": job.error, "finished_at": job.finished_at}


def group_rows(*, session: Session, groups: list[list]) -> list[list[dict[str, Any]]]:
    """Display rows for groups of ids, in group order; images deleted since are left out, and groups
    left with fewer than two images are dropped."""
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for group in groups for i in group))
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    for start in range(0, len(wanted), 500):
        for row in session.execute(select(ClsImage.id, ClsImage.original_filename, ClsImage.thumbnail_path,
                                          ClsImage.width, ClsImage.height, ClsImage.file_size_bytes,
                                          ClsImage.folder, ClsImage.created_at)
                                   .where(ClsImage.id.in_(wanted[start:start + 500]))):
            rows[row.id] = dict(row._mapping)
    out = []
    for group in groups:
        members = [rows[key] for key in (uuid.UUID(str(i)) for i in group) if key in rows]
        if len(members) > 1:
            out.append(members)
    return out
