"""Prediction jobs (queue "predictions"): batch prediction / AI auto-labeling and the label-error
finder."""

from __future__ import annotations

from core.jobs.rows import JobContext
from core.users import User


def batch_predict(ctx: JobContext, *, actor: User, model: str, scope: str, dataset_id=None, image_ids=None,
                  write_labels: bool = False, overwrite: bool = False, export_csv: bool = False) -> dict:
    from core.prediction.auto_label import run_batch_prediction

    ctx.progress(0, None, "loading the model")
    return run_batch_prediction(actor=actor, model=model, scope=scope, dataset_id=dataset_id, image_ids=image_ids,
                                write_labels=write_labels, overwrite=overwrite, export_csv=export_csv,
                                csv_name=str(ctx.job_id), progress=ctx.progress, threads=None)


def find_label_issues(ctx: JobContext, *, actor: User, dataset_id: str, version_number=None, model_id=None,
                      folds: int = 5) -> dict:
    from core.prediction.label_errors import find_and_store

    ctx.progress(0, None, "reading images")
    return find_and_store(actor=actor, dataset_id=dataset_id, version_number=version_number, model_id=model_id,
                          folds=folds, progress=ctx.progress)
