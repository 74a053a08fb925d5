"""Read-side queries for the training and models pages: run lists with filters, one run with its job
progress and ETA, model lists and details with their dataset, misclassified images, and the
wizard's time estimate. Writes go through core.training.runs and core.training.registry.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from core.ids import as_uuid
from core.ml import FINISHING_MESSAGE
from core.ml.augment import PRESETS
from core.ml.families import get_spec
from core.models import ClsDataset, ClsDatasetVersion, ClsImage, ClsJob, ClsTrainedModel, ClsTrainingRun
from core.permissions import requires
from core.training.registry import top5_or_none
from core.users import User
from core.vocabulary import TRAINING_SPLITS

ACTIVE_RUN_STATUSES = ("pending", "preparing", "queued", "training")
FINISHED_RUN_STATUSES = ("completed", "failed", "cancelled")


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)




# ---------------------------------------------------------------- runs


@dataclass
class RunFilters:
    statuses: list[str] = field(default_factory=list)
    dataset_id: uuid.UUID | None = None
    model_type: str | None = None
    text: str = ""  # matched against the run's name


# core.training.runs reports batches as "epoch e/E · batch b/B" with progress counted over the whole run;
# other steps (downloading images, saving) report their own counts, which say nothing about epochs.
BATCH_MESSAGE = re.compile(r"epoch (\d+)/(\d+) · batch (\d+)/(\d+)")
FINISHING_PHASES = (FINISHING_MESSAGE, "saving the model")
"""Job messages after the last epoch (core.ml.pipeline, core.training.runs): the run's "finishing" phase."""


def _progress(run: ClsTrainingRun, job: ClsJob | None, now: datetime) -> dict[str, Any]:
    """Epoch, batch and overall fraction of a run, and the ETA from its pace so far."""
    total_epochs = run.total_epochs or (run.config or {}).get("epochs") or 0
    batch_done = batch_total = None
    fraction = min(1.0, run.current_epoch / total_epochs) if total_epochs else 0.0
    message = job.message if job is not None else None
    batches = BATCH_MESSAGE.search(message or "") if run.status == "training" else None
    epoch = run.current_epoch
    if batches and job.progress_total:
        epoch = int(batches.group(1))  # the epoch under way
        batch_done, batch_total = int(batches.group(3)), int(batches.group(4))
        fraction = max(fraction, min(1.0, job.progress_done / job.progress_total))
    if run.status == "completed":
        fraction = 1.0
    started, ended = _aware(run.started_at), _aware(run.completed_at)
    elapsed = ((ended or now) - started).total_seconds() if started else None
    eta = None
    if run.status in ACTIVE_RUN_STATUSES and elapsed and 0.0 < fraction < 1.0:
        eta = elapsed * (1.0 - fraction) / fraction
    finishing = run.status == "training" and message in FINISHING_PHASES
    return {"epoch": epoch, "epochs_done": run.current_epoch, "total_epochs": total_epochs, "batch": batch_done, "batches": batch_total,
            "fraction": fraction, "elapsed_s": elapsed, "eta_s": eta, "message": message,
            "phase": "finishing" if finishing else run.status}


def _run_row(run: ClsTrainingRun, dataset_name: str | None, version_number: int | None, job: ClsJob | None,
             model_id: uuid.UUID | None, now: datetime) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "description": run.description, "status": run.status,
        "model_type": run.model_type, "model_size": run.model_size, "task_type": run.task_type,
        "num_classes": run.num_classes, "dataset_id": run.dataset_id, "dataset": dataset_name,
        "dataset_version_id": run.dataset_version_id, "version_number": version_number,
        "best_accuracy": run.best_accuracy, "best_f1": run.best_f1,
        "best_top5_accuracy": top5_or_none(run.best_top5_accuracy, run.num_classes),
        "best_epoch": run.best_epoch, "created_at": _aware(run.created_at), "started_at": _aware(run.started_at),
        "completed_at": _aware(run.completed_at), "error_message": run.error_message, "job_id": run.job_id,
        "has_checkpoint": bool(run.checkpoint_key),
        "job_status": job.status if job is not None else None, "model_id": model_id,
        "progress": _progress(run, job, now),
    }


def _run_query():
    return (
        select(ClsTrainingRun, ClsDataset.name, ClsDatasetVersion.version_number, ClsJob)
        .outerjoin(ClsDataset, ClsDataset.id == ClsTrainingRun.dataset_id)
        .outerjoin(ClsDatasetVersion, ClsDatasetVersion.id == ClsTrainingRun.dataset_version_id)
        .outerjoin(ClsJob, ClsJob.id == ClsTrainingRun.job_id)
    )


def _models_by_run(session: Session, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    if not run_ids:
        return {}
    rows = session.execute(select(ClsTrainedModel.training_run_id, ClsTrainedModel.id)
                           .where(ClsTrainedModel.training_run_id.in_(run_ids))).all()
    return {run_id: model_id for run_id, model_id in rows}


def list_runs(*, session: Session, filters: RunFilters | None = None, limit: int = 200,
              now: datetime | None = None) -> list[dict[str, Any]]:
    """Runs, newest first, with dataset/version names, progress, best metrics and their model."""
    filters = filters or RunFilters()
    query = _run_query().order_by(ClsTrainingRun.created_at.desc()).limit(limit)
    if filters.statuses:
        query = query.where(ClsTrainingRun.status.in_(filters.statuses))
    if filters.dataset_id:
        query = query.where(ClsTrainingRun.dataset_id == filters.dataset_id)
    if filters.model_type:
        query = query.where(ClsTrainingRun.model_type == filters.model_type)
    if filters.text.strip():
        pattern = f"%{filters.text.strip().lower()}%"
        from sqlalchemy import func

        query = query.where(or_(func.lower(ClsTrainingRun.name).like(pattern),
                                func.lower(ClsTrainingRun.description).like(pattern)))
    rows = session.execute(query).all()
    models = _models_by_run(session, [run.id for run, *_ in rows])
    now = now or datetime.now(UTC)
    return [_run_row(run, name, number, job, models.get(run.id), now) for run, name, number, job in rows]


def run_filter_options(*, session: Session) -> dict[str, Any]:
    """Datasets and model families that have runs (the list's filter choices)."""
    datasets = session.execute(
        select(ClsDataset.id, ClsDataset.name).where(
            ClsDataset.id.in_(select(ClsTrainingRun.dataset_id).distinct())).order_by(ClsDataset.name)).all()
    families = session.scalars(select(ClsTrainingRun.model_type).distinct().order_by(ClsTrainingRun.model_type))
    return {"datasets": [(dataset_id, name) for dataset_id, name in datasets], "model_types": list(families)}


def run_detail(*, session: Session, run_id: uuid.UUID | str, now: datetime | None = None) -> dict[str, Any]:
    """One run for its detail page: the list row plus config, metrics history and log tail."""
    run_id = as_uuid(run_id, "training run")
    found = session.execute(_run_query().where(ClsTrainingRun.id == run_id)).first()
    if found is None:
        raise NotFound(f"no training run {run_id}")
    run, name, number, job = found
    row = _run_row(run, name, number, job, _models_by_run(session, [run.id]).get(run.id), now or datetime.now(UTC))
    row.update(config=dict(run.config or {}), metrics_history=list(run.metrics_history or []),
               log_tail=run.log_tail, job_error=job.error if job is not None else None,
               checkpoint_key=run.checkpoint_key)
    return row


def active_run_count(*, session: Session) -> int:
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(ClsTrainingRun)
                          .where(ClsTrainingRun.status.in_(ACTIVE_RUN_STATUSES))) or 0


# ---------------------------------------------------------------- models


def _model_row(model: ClsTrainedModel, run_name: str | None, dataset_name: str | None,
               version_number: int | None) -> dict[str, Any]:
    return {
        "id": model.id, "name": model.name, "description": model.description, "model_type": model.model_type,
        "model_size": model.model_size, "timm_name": model.timm_name, "task_type": model.task_type,
        "num_classes": model.num_classes, "class_names": list(model.class_names or []),
        "accuracy": model.accuracy, "f1_score": model.f1_score,
        "top5_accuracy": top5_or_none(model.top5_accuracy, model.num_classes),
        "precision_macro": model.precision_macro, "recall_macro": model.recall_macro,
        "is_active": model.is_active, "is_default": model.is_default, "created_at": _aware(model.created_at),
        "training_run_id": model.training_run_id, "run_name": run_name, "dataset": dataset_name,
        "version_number": version_number, "checkpoint_key": model.checkpoint_url, "onnx_key": model.onnx_url,
        "torchscript_key": model.torchscript_url, "thresholds": dict(model.thresholds or {}),
    }


def _model_query():
    version = ClsDatasetVersion
    return (
        select(ClsTrainedModel, ClsTrainingRun.name, ClsDataset.name, version.version_number)
        .outerjoin(ClsTrainingRun, ClsTrainingRun.id == ClsTrainedModel.training_run_id)
        .outerjoin(version, version.id == ClsTrainedModel.dataset_version_id)
        .outerjoin(ClsDataset, ClsDataset.id == version.dataset_id)
    )


def list_models(*, session: Session, model_type: str | None = None, active_only: bool = False,
                text: str = "") -> list[dict[str, Any]]:
    query = _model_query().order_by(ClsTrainedModel.created_at.desc())
    if model_type:
        query = query.where(ClsTrainedModel.model_type == model_type)
    if active_only:
        query = query.where(ClsTrainedModel.is_active.is_(True))
    if text.strip():
        from sqlalchemy import func

        query = query.where(func.lower(ClsTrainedModel.name).like(f"%{text.strip().lower()}%"))
    return [_model_row(*row) for row in session.execute(query).all()]


def model_detail(*, session: Session, model_id: uuid.UUID | str) -> dict[str, Any]:
    model_id = as_uuid(model_id, "model")
    found = session.execute(_model_query().where(ClsTrainedModel.id == model_id)).first()
    if found is None:
        raise NotFound(f"no trained model {model_id}")
    model = found[0]
    row = _model_row(*found)
    row.update(confusion_matrix=model.confusion_matrix, per_class_metrics=dict(model.per_class_metrics or {}),
               preprocessing=dict(model.preprocessing or {}), export_check=dict(model.export_check or {}),
               predictions_key=model.predictions_key, class_mapping=dict(model.class_mapping or {}))
    return row


@requires("admin", "describing a model")
def describe_model(*, session: Session, actor: User, model_id: uuid.UUID | str,
                   description: str | None) -> ClsTrainedModel:
    """Set a model's description (core.training.registry renames; this page also describes)."""
    text = (description or "").strip()
    if len(text) > 2000:
        raise InvalidInput(f"a description has at most 2000 characters, not {len(text)}")
    model = session.get(ClsTrainedModel, as_uuid(model_id, "model"))
    if model is None:
        raise NotFound(f"no trained model {model_id}")
    model.description = text or None
    session.flush()
    return model


def image_thumbs(*, session: Session, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Storage keys (thumbnail, else original) and file names of images, by id string."""
    ids = [uuid.UUID(i) for i in image_ids]
    rows = session.execute(select(ClsImage.id, ClsImage.thumbnail_path, ClsImage.storage_path,
                                  ClsImage.original_filename).where(ClsImage.id.in_(ids))).all() if ids else []
    return {str(i): {"key": thumb or original, "filename": name} for i, thumb, original, name in rows}


# ---------------------------------------------------------------- time estimate


# Training throughput (img/s, forward + backward, 224 px, batch 32) measured on a 2-core CPU
# (shared/notes/cpu-training.md) for one size per family; other sizes scale by parameter count.
_CPU_REFERENCE = {
    "vit": (15.0, 5.7), "convnext": (17.0, 3.7), "efficientnet": (7.0, 13.6), "swin": (15.0, 5.7),
    "dinov2": (15.0 / 1.31, 5.7), "clip": (15.0, 5.7),  # dinov2: patch 14 → 1.31× the tokens of patch 16
    "resnet": (16.0, 11.7),
}
GPU_SPEEDUP = 40.0
"""Rough factor between a single modern GPU and the 2-core CPU reference (shown as a range)."""


def estimate_training_seconds(config: Any, split_counts: dict[str, int]) -> dict[str, float]:
    """A rough duration of a run on a CPU worker like this one, from measured throughput, the
    image size, the augmentation preset's time factor and the split sizes (early stopping may end
    it sooner)."""
    spec = get_spec(config.model_type, config.model_size)
    reference_ips, reference_params = _CPU_REFERENCE[config.model_type]
    train_ips = reference_ips * reference_params / spec.params_m * (224 / config.image_size) ** 2
    if config.mixed_precision:
        train_ips *= 1.2  # bf16 autocast: +22–57 % measured where the CPU has bf16
    eval_ips = train_ips * 3  # forward only
    factor = PRESETS[config.augmentation_preset].training_time_factor
    train, val, test = (split_counts.get(s, 0) for s in TRAINING_SPLITS)
    per_epoch = train / train_ips * factor + val * (2 if config.use_ema else 1) / eval_ips
    total = config.epochs * per_epoch + test / eval_ips + 30  # + export and checks
    return {"cpu_s": total, "gpu_s": total / GPU_SPEEDUP, "per_epoch_cpu_s": per_epoch,
            "train_images_per_s_cpu": train_ips}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
