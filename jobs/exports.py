"""Dataset export job (queue "imports"): plan the export, write the ZIP locally, store it as
exports/<job id>.zip in one put."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from core.db import session_scope
from core.export import collect_export, export_key, write_zip
from core.jobs import JobContext
from core.storage import get_storage


def export_dataset(ctx: JobContext, *, dataset_id: str, fmt: str, version_number: int | None = None) -> dict:
    storage = get_storage()
    with session_scope() as session:
        plan = collect_export(session=session, storage=storage, dataset_id=uuid.UUID(dataset_id), fmt=fmt,
                              version_number=version_number)
    ctx.progress(0, len(plan.items), "writing the archive", force=True)
    key = export_key(ctx.job_id)
    with tempfile.TemporaryDirectory(prefix="export-") as workdir:
        path = Path(workdir) / "export.zip"
        summary = write_zip(plan, storage=storage, target=path, progress=ctx.progress)
        storage.put_file(key, path, "application/zip")
    return {**summary, "key": key}
