"""Training runs: create, start (queue or in-process), cancel, resume, delete, and the job body.

Status: pending (created) → preparing (being handed to a worker) → queued → training →
completed | failed | cancelled. A checkpoint goes to storage after every epoch, so a run whose worker
died (the reaper marks it failed through jobs.training.on_job_failed) can be resumed. The job body
reads only the version's manifest, trains with core.ml, exports, and registers the best model.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import Conflict, InvalidInput, JobCancelled, NotFound, UserError
from core.ml.config import TrainingConfig, check_fits_dataset, parse_config
from core.models import ClsDatasetVersion, ClsTrainingRun, utcnow
from core.permissions import audit, require, requires
from core.storage import get_storage
from core.users import User

JOB_FUNCTION = "jobs.training.train_run"
ACTIVE = ("pending", "preparing", "queued", "training")
FINISHED = ("completed", "failed", "cancelled")


def checkpoint_key(run_id: uuid.UUID) -> str:
    return f"runs/{run_id}/checkpoint.pt"


def _uuid(value, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not a UUID") from None


def get_run(*, session: Session, run_id) -> ClsTrainingRun:
    run = session.get(ClsTrainingRun, _uuid(run_id, "run id"))
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return run


def list_runs(*, session: Session, limit: int = 50) -> list[ClsTrainingRun]:
    return list(session.scalars(select(ClsTrainingRun).order_by(ClsTrainingRun.created_at.desc()).limit(limit)))


@requires("admin", "creating a dataset version")
def resolve_version(*, session: Session, actor: User, storage, dataset_name: str,
                    number: int | None = None) -> ClsDatasetVersion:
    """Version `number` of the named dataset; without a number its latest, made now if it has none."""
    from core.datasets import get_dataset_by_name
    from core.versions import create_version, get_version

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
    version = session.get(ClsDatasetVersion, _uuid(version_id, "version id"))
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
    from core.ml.recipe import apply_recipe, device_fact, epochs_for_budget
    from core.training_views import GPU_SPEEDUP, estimate_training_seconds

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
    from core.registry import get_model

    source = get_model(session=session, model_id=config.pretrained_weights.removeprefix("model:"))
    if source.timm_name != config.timm_name:
        raise InvalidInput(f"pretrained_weights: model {source.name!r} is a {source.timm_name}, not a {config.timm_name}")


@requires("admin", "training a model")
def start_run(*, actor: User, run_id, inline: bool = False, resume: bool = False) -> uuid.UUID:
    """Hand the run to a training worker (or, inline, run it here and now); returns the job id."""
    from core.jobs import create_job, run_job
    from core.queue import enqueue

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
            job = create_job(session=session, actor=actor, kind="training", queue="training", function=JOB_FUNCTION,
                             params=params)
            attach(session, job)
            job_id = job.id
        run_job(job_id)
        return job_id
    try:
        return enqueue(actor=actor, kind="training", function=JOB_FUNCTION, queue="training", params=params,
                       on_created=attach)
    except Exception as exc:
        with session_scope() as session:
            row = session.get(ClsTrainingRun, run_uuid)
            row.status, row.error_message = ("failed" if resume else "pending"), f"could not be queued: {exc}"
        raise


@requires("admin", "cancelling a training run")
def cancel_run(*, session: Session, actor: User, run_id) -> ClsTrainingRun:
    """Cancel at once if it never reached a worker; else ask the worker, which stops between batches."""
    from core.jobs import request_cancel

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
        run = session.get(ClsTrainingRun, _uuid(run_id, "run id"))
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


class RunStopped(Exception):
    """Raised by an `after_epoch` hook to end a run early on purpose (a search pruning a weak trial)."""


@requires("admin", "training a model")
def execute_run(ctx, *, actor: User, run_id, resume: bool = False, after_epoch=None,
                final: bool = True) -> dict[str, Any]:
    """What the training worker runs as the actor who started it: marks the run training, trains,
    records the outcome. The role is checked again after every epoch (roles come from configuration:
    cheap), before its checkpoint is stored, so a role removed meanwhile stops the run there.
    after_epoch(state) is called after each recorded epoch (may raise RunStopped); final=False
    (search trials) keeps the checkpoint but neither evaluates on the test split nor registers a model."""
    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        if run.status in FINISHED:
            raise Conflict(f"run {run.name!r} is already {run.status}")
        run.status, run.started_at, run.error_message = "training", run.started_at or utcnow(), None
        run.job_id = ctx.job_id
        version = session.get(ClsDatasetVersion, run.dataset_version_id) if run.dataset_version_id else None
        if version is None:
            raise NotFound("the run's dataset version was deleted")
        job = _RunJob(run, version, actor=actor, resume=resume)
    job.after_epoch, job.final = after_epoch, final
    try:
        result = job.train(ctx)
    except JobCancelled:
        _finish(job.run_id, "cancelled", None)
        raise
    except RunStopped as exc:
        _finish(job.run_id, "cancelled", str(exc))
        raise
    except Exception as exc:
        _finish(job.run_id, "failed", str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        raise
    _finish(job.run_id, "completed", None)
    return result


def _finish(run_id: uuid.UUID, status: str, error: str | None) -> None:
    with session_scope() as session:
        run = session.get(ClsTrainingRun, run_id)
        if run is not None:
            run.status, run.completed_at, run.error_message = status, utcnow(), error and error[:4000]


class _RunJob:
    """The state one job body carries: the run's config, version facts and storage."""

    def __init__(self, run: ClsTrainingRun, version: ClsDatasetVersion, *, actor: User, resume: bool):
        from core.versions import read_manifest

        self.run_id, self.actor, self.name = run.id, actor, run.name
        self.config = parse_config(run.config)
        self.storage = get_storage()
        self.class_names = list(version.class_names)
        self.class_mapping = dict(version.class_mapping)
        self.version_id = version.id
        self.manifest = read_manifest(storage=self.storage, version=version)
        self.checkpoint = run.checkpoint_key if resume else None
        self.after_epoch, self.final = None, True

    def train(self, ctx) -> dict[str, Any]:
        from core.ml import pipeline
        from core.ml.data import records_from_manifest

        config = self.config
        records = records_from_manifest(self.manifest, num_classes=config.num_classes)
        resume_payload = self._load_torch(self.checkpoint) if self.checkpoint else None
        weights_file, finetune_state = self._pretrained_source()

        def on_batch(epoch: int, done: int, total: int) -> None:
            epochs = max(self.config.epochs, epoch + 1)  # a time budget trains past its estimated epochs
            ctx.progress(epoch * total + done, epochs * total, f"epoch {epoch + 1}/{epochs} · batch {done}/{total}")

        def on_epoch(state, payload: dict) -> None:
            require(self.actor, "admin", "training a model")
            self.record_epoch(state, self.save_checkpoint(payload))
            if self.after_epoch:
                self.after_epoch(state)

        with tempfile.TemporaryDirectory(prefix="cls-run-") as tmp:
            artifacts = pipeline.run_training(
                config, records, class_names=self.class_names, storage=self.storage, workdir=Path(tmp),
                weights_file=weights_file, finetune_state=finetune_state, resume_payload=resume_payload,
                exports=tuple(config.export_formats), on_batch=on_batch, on_epoch=on_epoch,
                on_message=lambda text, done, total: ctx.progress(done, total, text), on_config=self.record_config,
                evaluate_and_export=self.final,
            )
            if not self.final:
                return {"run_id": str(self.run_id), "best_epoch": artifacts.state.best_epoch,
                        "best_score": artifacts.state.best_score}
            ctx.progress(0, None, "saving the model", force=True)
            model_id, keys = self.register(artifacts)
        return {"run_id": str(self.run_id), "model_id": str(model_id), "files": keys,
                "best_epoch": artifacts.state.best_epoch, "evaluated_split": artifacts.evaluated_split,
                "metrics": {k: v for k, v in artifacts.report.items() if k not in ("confusion_matrix", "per_class")},
                "export_check": artifacts.export_check}

    def _load_torch(self, key: str) -> dict:
        import torch

        from core.ml.data import cache_dir
        from core.ml.inference import local_copy

        path = local_copy(self.storage, key, cache_dir() / "runs" / f"{self.run_id}-{uuid.uuid4().hex[:6]}.pt")
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)  # tensors and plain values only
        finally:
            if path.is_relative_to(cache_dir()):
                path.unlink(missing_ok=True)

    def _pretrained_source(self) -> tuple[Path | None, dict | None]:
        """file:/storage: → a weights file for timm's loader; model:<id> → that model's state dict."""
        source = self.config.pretrained_weights
        if not source:
            return None, None
        kind, _, ref = source.partition(":")
        if kind == "file":
            if not Path(ref).is_file():
                raise InvalidInput(f"pretrained_weights: no file {ref}")
            return Path(ref), None
        if kind == "storage":
            from core.ml.data import cache_dir
            from core.ml.inference import local_copy

            if not self.storage.exists(ref):
                raise NotFound(f"pretrained_weights: no object {ref!r} in storage")
            return local_copy(self.storage, ref, cache_dir() / "weights" / Path(ref).name), None
        with session_scope() as session:
            from core.registry import get_model

            key = get_model(session=session, model_id=ref).checkpoint_url
        return None, self._load_torch(key)["state_dict"]

    def register(self, artifacts) -> tuple[uuid.UUID, dict[str, str]]:
        """Upload the files, then the row; a failed insert removes the files again."""
        from core.registry import create_model_row

        require(self.actor, "admin", "training a model")  # before the first upload

        model_id = uuid.uuid4()
        names = {"checkpoint": "best.pt", "onnx": "model.onnx", "onnx_data": "model.onnx.data",
                 "torchscript": "model.ts", "predictions": "predictions.json"}
        keys = {kind: f"models/{model_id}/{names[kind]}" for kind in artifacts.files}
        try:
            for kind, path in artifacts.files.items():
                self.storage.put_file(keys[kind], path)
            with session_scope() as session:
                create_model_row(session=session, actor=self.actor, model_id=model_id, run_id=self.run_id,
                                 name=self.name, version_id=self.version_id, config=self.config,
                                 class_names=self.class_names, class_mapping=self.class_mapping,
                                 keys=keys, artifacts=artifacts)
        except BaseException:
            for key in keys.values():
                self.storage.delete(key)
            raise
        return model_id, keys

    def save_checkpoint(self, payload: dict[str, Any]) -> str:
        import torch

        key = checkpoint_key(self.run_id)
        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            self.storage.put_file(key, tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return key

    def record_config(self, config: TrainingConfig) -> None:
        """The recipe as settled on the worker (device, time budget, LR range test) goes on the run."""
        self.config = config
        with session_scope() as session:
            run = session.get(ClsTrainingRun, self.run_id)
            run.config, run.total_epochs = config.model_dump(mode="json"), config.epochs

    def record_epoch(self, state, key: str) -> None:
        best = next((h for h in state.history if h["epoch"] == state.best_epoch), None)
        with session_scope() as session:
            run = session.get(ClsTrainingRun, self.run_id)
            run.current_epoch, run.checkpoint_key = state.epoch, key
            run.total_epochs = max(run.total_epochs or 0, state.epoch)  # a time budget's estimate can be passed
            run.metrics_history = json.loads(json.dumps(state.history))
            if best is not None:
                run.best_epoch, run.best_accuracy = best["epoch"], best.get("val_accuracy")
                run.best_f1, run.best_top5_accuracy = best.get("val_f1"), best.get("val_top5")
