"""Dataset export job (queue "imports"): core.datasets.export.run_export as the actor who asked for it."""

from __future__ import annotations

import uuid

from core.datasets.export import run_export
from core.jobs.rows import JobContext
from core.users import User


def export_dataset(ctx: JobContext, *, actor: User, dataset_id: str, fmt: str,
                   version_number: int | None = None) -> dict:
    return run_export(actor=actor, job_id=ctx.job_id, dataset_id=uuid.UUID(dataset_id), fmt=fmt,
                      version_number=version_number, progress=ctx.progress)
