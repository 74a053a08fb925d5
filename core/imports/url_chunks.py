"""A URL-list import fanned out over the imports queue (core/jobs/fanout.py): chunks of
`import_chunk_members` URLs, each downloaded and stored by whichever worker takes the chunk. A URL's
image and its cls_job_items row are committed together (core.imports.urls.import_urls with a job id),
so a chunk run again after its worker died fetches only the URLs not yet stored; the finisher counts
from those rows and lists one result per URL, in the order given.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from core.config import get_settings
from core.db import session_scope
from core.imports.urls import import_urls, url_key
from core.models import ClsImage, ClsJobItem
from core.permissions import requires
from core.users import User


@requires("admin", "importing")
def plan_url_chunks(*, actor: User, urls: list[str]) -> list[list[str]]:
    """The URLs in chunks (the starter's role checked before any chunk is queued)."""
    size = get_settings().import_chunk_members
    return [urls[start:start + size] for start in range(0, len(urls), size)]


@requires("admin", "importing")
def import_url_chunk(*, actor: User, job_id, urls: list[str], folder=None, tags=None, skip_duplicates: bool = True,
                     dataset_id: str | None = None, progress=None) -> dict[str, Any]:
    """Download and store one chunk's URLs (those an earlier run did not store); this run's rejections."""
    summary = import_urls(actor=actor, urls=urls, folder=folder, tags=tags, skip_duplicates=skip_duplicates,
                          dataset_id=uuid.UUID(dataset_id) if dataset_id else None, job_id=uuid.UUID(str(job_id)),
                          progress=None if progress is None else lambda done, total: progress(
                              len(urls) - total + done, len(urls), f"{done}/{total} URLs"))
    return {"urls": urls, "rejected": [r for r in summary["results"] if r["status"] == "rejected"]}


@requires("admin", "importing")
def finish_url_import(*, actor: User, job_id, plan: dict[str, Any], chunk_results: list[dict]) -> dict[str, Any]:
    """One result per URL (stored ones from the cls_job_items rows, the rest as their last run
    rejected them), the counts, and the lines refused before the job started first."""
    job_id = uuid.UUID(str(job_id))
    with session_scope() as session:
        stored = {key: (image_id, outcome) for key, image_id, outcome in session.execute(
            select(ClsJobItem.item_key, ClsJobItem.image_id, ClsJobItem.outcome).where(ClsJobItem.job_id == job_id))}
        names = dict(session.execute(select(ClsImage.id, ClsImage.original_filename).where(
            ClsImage.id.in_([image_id for image_id, _ in stored.values()]))).all()) if stored else {}
    results = list(plan.get("rejected", []))
    for chunk in chunk_results:
        rejected = {r["url"]: r for r in chunk.get("rejected", [])}
        for url in chunk.get("urls", []):
            if url_key(url) in stored:
                image_id, outcome = stored[url_key(url)]
                results.append({"url": url, "status": outcome, "filename": names.get(image_id),
                                "image_id": str(image_id), "error": None,
                                "duplicate_of": str(image_id) if outcome == "duplicate" else None})
            else:
                results.append(rejected.get(url) or {"url": url, "status": "rejected", "image_id": None,
                                                     "duplicate_of": None, "error": "not imported"})
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("imported", "duplicate", "rejected")}
    return {**counts, "total": len(results), "results": results, "parts": len(chunk_results)}
