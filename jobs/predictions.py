"""Prediction jobs (queue "predictions"): batch prediction / AI auto-labeling and the label-error
finder."""

from __future__ import annotations

from core.jobs.fanout import fan_out
from core.jobs.rows import JobContext
from core.prediction.batch_chunks import finish_batch_prediction as finish
from core.prediction.batch_chunks import plan_batch_prediction
from core.prediction.batch_chunks import predict_chunk as predict
from core.prediction.label_errors import find_and_store
from core.users import User


def batch_predict(ctx: JobContext, *, actor: User, model: str, scope: str, dataset_id=None, image_ids=None,
                  write_labels: bool = False, overwrite: bool = False, export_csv: bool = False) -> dict:
    """Plan the chunks and fan them out over the predictions queue's workers (core/jobs/fanout.py)."""
    ctx.progress(0, None, "listing the images", force=True)
    plan, chunks = plan_batch_prediction(actor=actor, model=model, scope=scope, dataset_id=dataset_id,
                                         image_ids=image_ids, write_labels=write_labels, overwrite=overwrite,
                                         export_csv=export_csv)
    common = {"job_id": str(ctx.job_id), "model_id": plan["model_id"], "dataset_id": dataset_id,
              "write_labels": write_labels, "overwrite": overwrite, "export_csv": export_csv}
    return fan_out(ctx, chunk_function="jobs.predictions.predict_chunk", finish="jobs.predictions.finish_batch_prediction",
                   chunks=[{**common, "index": i, "image_ids": ids} for i, ids in enumerate(chunks)],
                   sizes=[len(ids) for ids in chunks], plan=plan)


def predict_chunk(ctx, *, actor: User, **params) -> dict:
    """One chunk of a batch prediction (a few thousand images)."""
    return predict(actor=actor, progress=ctx.progress, **params)


def finish_batch_prediction(*, parent_id, plan: dict, chunk_results: list[dict], actor: User) -> dict:
    return finish(actor=actor, job_id=parent_id, plan=plan, chunk_results=chunk_results)


def find_label_issues(ctx: JobContext, *, actor: User, dataset_id: str, version_number=None, model_id=None,
                      folds: int = 5) -> dict:
    ctx.progress(0, None, "reading images")
    return find_and_store(actor=actor, dataset_id=dataset_id, version_number=version_number, model_id=model_id,
                          folds=folds, progress=ctx.progress)
