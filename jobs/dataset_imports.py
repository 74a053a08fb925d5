"""Import jobs (queue `imports`): a labeled ZIP archive, or the platform's Products / Cutouts / OD
images. Each is a few lines that call core; the summary returned becomes the job's result."""

from __future__ import annotations

from typing import Any

from core.jobs.rows import JobContext
from core.users import User


def import_archive(ctx: JobContext, *, actor: User, archive_key: str, dataset_id: str, class_mapping: list[dict],
                   skip_duplicates: bool = True, conflicts: str = "first") -> dict[str, Any]:
    from core.imports.archive import run_stored_archive_import

    ctx.progress(0, None, "reading the archive", force=True)
    return run_stored_archive_import(actor=actor, archive_key=archive_key, dataset_id=dataset_id,
                                     class_mapping=class_mapping, skip_duplicates=skip_duplicates,
                                     conflicts=conflicts, progress=ctx.progress)


def import_source(ctx: JobContext, *, actor: User, kind: str, request: dict) -> dict[str, Any]:
    from core.imports.sources import run_source_import

    ctx.progress(0, None, f"finding {kind} to import", force=True)
    return run_source_import(actor=actor, kind=kind, request=request, progress=ctx.progress)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """A dead or refused job leaves its uploaded archive behind; remove it (the job's own upload)."""
    if params.get("archive_key"):
        from core.storage import get_storage

        get_storage().delete(params["archive_key"])
