"""Import jobs (queue `imports`): a labeled ZIP archive, or the platform's Products / Cutouts / OD
images. Each is a few lines that call core; the summary returned becomes the job's result."""

from __future__ import annotations

from typing import Any

from core.imports.archive_chunks import finish_archive_import as finish
from core.imports.archive_chunks import import_archive_chunk as import_chunk
from core.imports.archive_chunks import plan_archive_import
from core.imports.sources import run_source_import
from core.jobs.fanout import fan_out
from core.jobs.rows import JobContext
from core.storage import get_storage
from core.users import User


def import_archive(ctx: JobContext, *, actor: User, archive_key: str, dataset_id: str, class_mapping: list[dict],
                   skip_duplicates: bool = True, conflicts: str = "first") -> dict[str, Any]:
    """Plan the import (classes, conflicts) and fan its members out over the imports queue's workers."""
    ctx.progress(0, None, "reading the archive", force=True)
    plan, chunks = plan_archive_import(actor=actor, archive_key=archive_key, dataset_id=dataset_id,
                                       class_mapping=class_mapping, skip_duplicates=skip_duplicates,
                                       conflicts=conflicts)
    if not chunks:  # nothing to import: the plan is the summary
        return finish(actor=actor, job_id=ctx.job_id, plan=plan, chunk_results=[])
    for chunk in chunks:
        chunk["job_id"] = str(ctx.job_id)
    return fan_out(ctx, chunk_function="jobs.dataset_imports.import_archive_chunk",
                   finish="jobs.dataset_imports.finish_archive_import", chunks=chunks,
                   sizes=[len(chunk["members"]) for chunk in chunks], plan=plan)


def import_archive_chunk(ctx, *, actor: User, **params) -> dict[str, Any]:
    """One range of the archive's members."""
    return import_chunk(actor=actor, progress=ctx.progress, **params)


def finish_archive_import(*, parent_id, plan: dict, chunk_results: list[dict], actor: User) -> dict[str, Any]:
    return finish(actor=actor, job_id=parent_id, plan=plan, chunk_results=chunk_results)


def import_source(ctx: JobContext, *, actor: User, kind: str, request: dict) -> dict[str, Any]:
    ctx.progress(0, None, f"finding {kind} to import", force=True)
    return run_source_import(actor=actor, kind=kind, request=request, progress=ctx.progress)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """A dead or refused job leaves its uploaded archive behind; remove it (the job's own upload)."""
    if params.get("archive_key"):
        get_storage().delete(params["archive_key"])
