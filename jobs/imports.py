"""Import jobs on the `imports` queue: each is a few lines that call core."""

from __future__ import annotations

from core.imports.url_chunks import finish_url_import as finish
from core.imports.url_chunks import import_url_chunk as import_chunk
from core.imports.url_chunks import plan_url_chunks
from core.jobs.fanout import fan_out
from core.jobs.rows import JobContext
from core.users import User


def import_urls(ctx: JobContext, *, actor: User, urls: list[str], folder: str | None = None,
                tags: list[str] | None = None, skip_duplicates: bool = True, dataset_id: str | None = None,
                rejected: list[dict] | None = None) -> dict:
    """Download and ingest a list of URLs in chunks over the imports queue's workers; `rejected`
    carries lines refused before the job started."""
    ctx.progress(0, len(urls), "downloading")
    chunks = plan_url_chunks(actor=actor, urls=urls)
    common = {"job_id": str(ctx.job_id), "folder": folder, "tags": tags, "skip_duplicates": skip_duplicates,
              "dataset_id": dataset_id}
    return fan_out(ctx, chunk_function="jobs.imports.import_url_chunk", finish="jobs.imports.finish_url_import",
                   chunks=[{**common, "urls": part} for part in chunks], sizes=[len(part) for part in chunks],
                   plan={"rejected": list(rejected or [])})


def import_url_chunk(ctx, *, actor: User, **params) -> dict:
    return import_chunk(actor=actor, progress=ctx.progress, **params)


def finish_url_import(*, parent_id, plan: dict, chunk_results: list[dict], actor: User) -> dict:
    return finish(actor=actor, job_id=parent_id, plan=plan, chunk_results=chunk_results)
