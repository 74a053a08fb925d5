"""Similarity jobs (queue "predictions"), as the actor who asked: embed the library images an index
lacks (core.similarity.embeddings.run_embedding), and project an index to its 2-D map
(core.similarity.projection.build_map)."""

from __future__ import annotations

from core.jobs.rows import JobContext
from core.similarity.embeddings import run_embedding
from core.similarity.projection import build_map
from core.users import User


def embed_library(ctx: JobContext, *, actor: User, source: str) -> dict:
    ctx.progress(0, None, "loading the embedding model", force=True)
    return run_embedding(actor=actor, source=source, job_id=ctx.job_id, progress=ctx.progress)


def project_index(ctx: JobContext, *, actor: User, source: str, method: str = "auto") -> dict:
    """The 2-D map of an index (core.similarity.projection.build_map), stored beside its shards."""
    ctx.progress(0, 3, "reading vectors", force=True)
    return build_map(actor=actor, source=source, method=method, progress=ctx.progress)
