"""ONNX export of a trained model after the fact (queue "predictions"), started from the Models page."""

from __future__ import annotations

from core.db import session_scope
from core.jobs.rows import JobContext
from core.storage import get_storage
from core.training.registry import export_onnx
from core.users import User


def export_model_onnx(ctx: JobContext, *, actor: User, model_id: str) -> dict:
    ctx.progress(0, 1, "exporting to ONNX")
    with session_scope() as session:
        row = export_onnx(session=session, actor=actor, storage=get_storage(), model_id=model_id)
        result = {"model_id": str(row.id), "onnx": row.onnx_url, "check": dict(row.export_check or {})}
    ctx.progress(1, 1, "ONNX exported and checked")
    return result
