"""Embedding job (queue "predictions"): embed the library images an index lacks, as the actor who
asked (core.similarity.embeddings.run_embedding)."""

from __future__ import annotations

from core.jobs.rows import JobContext
from core.users import User


def embed_library(ctx: JobContext, *, actor: User, source: str) -> dict:
    from core.similarity.embeddings import run_embedding

    ctx.progress(0, None, "loading the embedding model", force=True)
    return run_embedding(actor=actor, source=source, job_id=ctx.job_id, progress=ctx.progress)
