"""The body of a training job: what a worker runs for one run (mark it training, train with core.ml
from the version's manifest, store a checkpoint after every epoch, export and register the best
model), as the actor who started it, whose role is checked again after every epoch."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from core.datasets.versions import read_manifest
from core.db import session_scope
from core.errors import Conflict, InvalidInput, JobCancelled, NotFound, UserError
from core.ml.config import TrainingConfig, parse_config
from core.ml.data import cache_dir, records_from_manifest
from core.ml.inference import local_copy
from core.models import ClsDatasetVersion, ClsTrainingRun, utcnow
from core.permissions import require, requires
from core.storage import get_storage
from core.training.registry import create_model_row, get_model
from core.training.runs import FINISHED, checkpoint_key, get_run
from core.users import User


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
        from core.ml import pipeline, spawn

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

        # several devices: one DDP process per device, rank 0's callbacks run here (core.ml.spawn)
        run_training = pipeline.run_training if config.devices == 1 else spawn.run_training_on_devices
        with tempfile.TemporaryDirectory(prefix="cls-run-") as tmp:
            artifacts = run_training(
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
            if not self.storage.exists(ref):
                raise NotFound(f"pretrained_weights: no object {ref!r} in storage")
            return local_copy(self.storage, ref, cache_dir() / "weights" / Path(ref).name), None
        with session_scope() as session:
            key = get_model(session=session, model_id=ref).checkpoint_url
        return None, self._load_torch(key)["state_dict"]

    def register(self, artifacts) -> tuple[uuid.UUID, dict[str, str]]:
        """Upload the files, then the row; a failed insert removes the files again."""
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
