"""Import jobs (queue `imports`): a labeled ZIP archive, or the platform's Products / Cutouts / OD
images. Each is a few lines that call core; the summary returned becomes the job's result."""

from __future__ import annotations

import uuid
from typing import Any

from core.jobs import JobContext


def import_archive(ctx: JobContext, *, archive_key: str, dataset_id: str, class_mapping: list[dict],
                   skip_duplicates: bool = True, user_id: str | None = None) -> dict[str, Any]:
    from core.archive_import import run_stored_archive_import

    ctx.progress(0, None, "reading the archive", force=True)
    return run_stored_archive_import(archive_key=archive_key, dataset_id=dataset_id, class_mapping=class_mapping,
                                     skip_duplicates=skip_duplicates, user_id=user_id, progress=ctx.progress)


def import_source(ctx: JobContext, *, kind: str, request: dict, user_id: str | None = None) -> dict[str, Any]:
    from core.source_imports import run_source_import

    ctx.progress(0, None, f"finding {kind} to import", force=True)
    return run_source_import(kind=kind, request=request, user_id=uuid.UUID(user_id) if user_id else None,
                             progress=ctx.progress)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """A dead worker leaves its uploaded archive behind; remove it."""
    if params.get("archive_key"):
        from core.storage import get_storage

        get_storage().delete(params["archive_key"])
