"""Import jobs on the `imports` queue: each is a few lines that call core."""

from __future__ import annotations

import uuid

from core.jobs.rows import JobContext
from core.users import User


def import_urls(ctx: JobContext, *, actor: User, urls: list[str], folder: str | None = None,
                tags: list[str] | None = None, skip_duplicates: bool = True, dataset_id: str | None = None,
                rejected: list[dict] | None = None) -> dict:
    """Download and ingest a list of URLs; `rejected` carries lines refused before the job started."""
    from core.imports.urls import import_urls as run_import

    ctx.progress(0, len(urls), "downloading")
    summary = run_import(
        actor=actor, urls=urls, folder=folder, tags=tags, skip_duplicates=skip_duplicates,
        dataset_id=uuid.UUID(dataset_id) if dataset_id else None,
        progress=lambda done, total: ctx.progress(done, total, f"{done}/{total} URLs"),
    )
    if rejected:
        summary["results"] = list(rejected) + summary["results"]
        summary["rejected"] += len(rejected)
        summary["total"] += len(rejected)
    return summary
