"""Training runs: create, start (queue or in-process), cancel, resume, delete; the job body is core.training.run_job.

Status: pending (created) → preparing (being handed to a worker) → queued → training →
completed | failed | cancelled. A checkpoint goes to storage after every epoch, so a run whose worker
died (the reaper marks it failed through jobs.training.on_job_failed) can be resumed. The job body
reads only the version's manifest, trains with core.ml, exports, and registers the best model.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets.dataset import get_dataset_by_name
from core.datasets.versions import create_version, get_version
from core.db import session_scope
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.jobs.queue import enqueue
from core.jobs.rows import create_job, request_cancel, run_job
from core.ml.config import TrainingConfig, check_fits_dataset, parse_config
from core.ml.recipe import apply_recipe, device_fact, epochs_for_budget
from core.models import ClsDatasetVersion, ClsTrainingRun, utcnow
from core.permissions import audit, requires
from core.training.registry import get_model
from core.training.views import GPU_SPEEDUP, estimate_training_seconds
from core.users import User

ACTIVE = ("pending", "preparing", "queued", "training")
FINISHED = ("completed", "failed", "cancelled")


def checkpoint_key(run_id: uuid.UUID) -> str:
    return f"runs/{run_id}/checkpoint.pt"


def get_run(*, session: Session, run_id) -> ClsTrainingRun:
    run = session.get(ClsTrainingRun, as_uuid(run_id, "run id"))
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return run


def list_runs(*, session: Session, limit: int = 50) -> list[ClsTrainingRun]:
    return list(session.scalars(select(ClsTrainingRun).order_by(ClsTrainingRun.created_at.desc()).limit(limit)))


@requires("admin", "creating a dataset version")
def resolve_version(*, session: Session, actor: User, storage, dataset_name: str,
                    number: int | None = None) -> ClsDatasetVersion:
    """Version `number` of the named dataset; without a number its latest, made now if it has none."""
    dataset = get_dataset_by_name(session=session, name=dataset_name)
    try:
        return get_version(session=session, dataset_id=dataset.id, number=number)
    except NotFound:
        if number is not None:
            raise
        return create_version(session=session, actor=actor, storage=storage, dataset_id=dataset.id)


@requires("admin", "training a model")
def create_run(*, session: Session, actor: User, version_id, config: dict[str, Any],
               name: str | None = None, description: str | None = None) -> ClsTrainingRun:
    """Validate the config against the version (classes, task, split sizes) and record a pending run."""
    version = session.get(ClsDatasetVersion, as_uuid(version_id, "version id"))
    if version is None:
        raise NotFound(f"no dataset version {version_id}")
    values = dict(config)
    for key, actual in (("num_classes", version.class_count), ("task_type", version.task_type)):
        if values.get(key) not in (None, actual):
            raise InvalidInput(f"{key} {values[key]!r} does not match the version's {actual!r}")
        values[key] = actual
    parsed = parse_config(recipe_values(values, split_counts=version.split_counts or {}))
    check_fits_dataset(parsed, split_counts=version.split_counts or {})
    if parsed.pretrained_weights and parsed.pretrained_weights.startswith("model:"):
        _check_finetune_source(session, parsed)
    name = (name or "").strip() or f"{parsed.model_type}-{parsed.model_size} v{version.version_number}"
    run = ClsTrainingRun(
        user_id=actor.id, name=name[:200], description=description, dataset_id=version.dataset_id,
        dataset_version_id=version.id, model_type=parsed.model_type, model_size=parsed.model_size,
        task_type=parsed.task_type, num_classes=parsed.num_classes, config=parsed.model_dump(mode="json"),
        status="pending", total_epochs=parsed.epochs, metrics_history=[],
    )
    session.add(run)
    session.flush()
    return run


def recipe_values(values: dict[str, Any], *, split_counts: dict[str, int]) -> dict[str, Any]:
    """The user's settings with the recipe's choices for the rest (core.ml.recipe), from the version's
    split sizes and this machine's device; a time budget with no epochs sets the epochs from the
    throughput measured on a CPU like this one (the worker measures its own before training)."""
    if values.get("auto_lr") and values.get("learning_rate") is not None:
        raise InvalidInput("invalid training config: learning_rate and auto_lr: set the rate or let the "
                           "LR range test find it, not both")
    device = device_fact(values.get("device") or "auto")
    train, val = split_counts.get("train", 0), split_counts.get("val", 0)
    facts = {"train_images": max(train, 1), "num_classes": values["num_classes"], "device": device}
    budget = None
    if values.get("time_budget_min") and values.get("epochs") is None and train:
        provisional = parse_config(apply_recipe({**values, "epochs": 1}, **facts))
        ips = estimate_training_seconds(provisional, split_counts)["train_images_per_s_cpu"]
        ips *= GPU_SPEEDUP if device == "cuda" else 1
        epochs, why = epochs_for_budget(60 * values["time_budget_min"], train_images=train, val_images=val,
                                        batch_size=provisional.batch_size, train_images_per_s=ips, ema=False)
        budget = (epochs, f"{why} (estimated; the worker measures again)")
    return apply_recipe(values, **facts, budget_epochs=budget)


def recipe_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's recipe as rows: setting, value, chosen by (recipe | you), why."""
    notes, auto = config.get("recipe_notes") or {}, set(config.get("recipe_auto") or [])
    return [{"setting": name, "value": config.get(name), "by": "recipe" if name in auto else "you", "why": why}
            for name, why in notes.items()]


def _check_finetune_source(session: Session, config: TrainingConfig) -> None:
    source = get_model(session=session, model_id=config.pretrained_weights.removeprefix("model:"))
    if source.timm_name != config.timm_name:
        raise InvalidInput(f"pretrained_weights: model {source.name!r} is a {source.timm_name}, not a {config.timm_name}")


@requires("admin", "training a model")
def start_run(*, actor: User, run_id, inline: bool = False, resume: bool = False) -> uuid.UUID:
    """Hand the run to a training worker (or, inline, run it here and now); returns the job id."""
    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        allowed = ("failed", "cancelled") if resume else ("pending",)
        if run.status not in allowed:
            raise Conflict(f"run {run.name!r} is {run.status}; only a {' or '.join(allowed)} run can be "
                           f"{'resumed' if resume else 'started'}")
        if resume and not run.checkpoint_key:
            raise Conflict(f"run {run.name!r} has no checkpoint to resume from; start a new run")
        run.status, run.error_message = "preparing", None
        run_uuid = run.id
    params = {"run_id": str(run_uuid), "resume": resume}

    def attach(session: Session, job) -> None:
        row = session.get(ClsTrainingRun, run_uuid)
        row.job_id, row.status = job.id, "queued"

    if inline:
        with session_scope() as session:
            job = create_job(session=session, actor=actor, kind="training", params=params)
            attach(session, job)
            job_id = job.id
        run_job(job_id)
        return job_id
    try:
        return enqueue(actor=actor, kind="training", params=params, on_created=attach)
    except Exception as exc:
        with session_scope() as session:
            row = session.get(ClsTrainingRun, run_uuid)
            row.status, row.error_message = ("failed" if resume else "pending"), f"could not be queued: {exc}"
        raise


@requires("admin", "cancelling a training run")
def cancel_run(*, session: Session, actor: User, run_id) -> ClsTrainingRun:
    """Cancel at once if it never reached a worker; else ask the worker, which stops between batches."""
    run = get_run(session=session, run_id=run_id)
    if run.status not in ACTIVE:
        raise Conflict(f"run {run.name!r} is already {run.status}")
    job = request_cancel(session=session, actor=actor, job_id=run.job_id) if run.job_id else None
    if job is None or job.status == "cancelled":
        run.status, run.completed_at = "cancelled", utcnow()
    return run


@requires("admin", "deleting a training run")
def delete_run(*, session: Session, actor: User, storage, run_id) -> None:
    """Delete a finished run and its checkpoint; its trained models stay in the registry."""
    run = get_run(session=session, run_id=run_id)
    audit(session=session, actor=actor, action="delete_run", target_type="training_run", target_id=run.id,
          row_count=1, details={"name": run.name})
    if run.status in ACTIVE:
        raise Conflict(f"run {run.name!r} is {run.status}; cancel it before deleting")
    key = run.checkpoint_key
    session.delete(run)
    session.flush()
    if key:
        storage.delete(key)


def mark_run_failed(run_id, error: str | None) -> None:
    """A run whose job died outside its control (worker killed, reaper) or was refused (its starter's
    role removed) ends failed with the job's error, never 'training' or 'queued' (bookkeeping)."""
    with session_scope() as session:
        run = session.get(ClsTrainingRun, as_uuid(run_id, "run id"))
        if run is not None and run.status in ACTIVE:
            run.status, run.completed_at = "failed", utcnow()
            run.error_message = (error or "the training job failed")[:4000]


def run_summary(run: ClsTrainingRun) -> dict[str, Any]:
    return {
        "id": str(run.id), "name": run.name, "status": run.status, "model_type": run.model_type,
        "model_size": run.model_size, "task_type": run.task_type, "num_classes": run.num_classes,
        "dataset_id": str(run.dataset_id) if run.dataset_id else None,
        "dataset_version_id": str(run.dataset_version_id) if run.dataset_version_id else None,
        "current_epoch": run.current_epoch, "total_epochs": run.total_epochs, "best_epoch": run.best_epoch,
        "best_accuracy": run.best_accuracy, "best_f1": run.best_f1, "best_top5_accuracy": run.best_top5_accuracy,
        "job_id": str(run.job_id) if run.job_id else None, "checkpoint_key": run.checkpoint_key,
        "error": run.error_message, "config": run.config, "metrics_history": run.metrics_history,
        "created_at": run.created_at, "started_at": run.started_at, "completed_at": run.completed_at,
    }


# ---------------------------------------------------------------- the job body


