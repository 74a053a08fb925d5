"""Trained models: the registry rows a training run leaves behind, and what a user does with them:
list, show, set default (one per user and model type: a partial unique index; the first completed model
of a group becomes its default, later changes are explicit), activate/deactivate, rename, delete with
files, export ONNX after the fact. Top-k accuracy is reported only where k is below the number of
classes (`top5_or_none`): with 5 classes or fewer it is always 100 %."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.datasets.versions import read_manifest
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.jobs.queue import enqueue
from core.ml.augment import eval_transform
from core.ml.data import cache_dir, decode_image
from core.ml.inference import load_checkpoint_model, local_copy
from core.models import ClsDatasetVersion, ClsTrainedModel
from core.permissions import audit, requires
from core.users import User

MAX_NAME = 200




def get_model(*, session: Session, model_id) -> ClsTrainedModel:
    row = session.get(ClsTrainedModel, as_uuid(model_id, "model id"))
    if row is None:
        raise NotFound(f"no trained model {model_id}")
    return row


def list_models(*, session: Session, model_type: str | None = None, active_only: bool = False) -> list[ClsTrainedModel]:
    query = select(ClsTrainedModel).order_by(ClsTrainedModel.created_at.desc())
    if model_type:
        query = query.where(ClsTrainedModel.model_type == model_type)
    if active_only:
        query = query.where(ClsTrainedModel.is_active.is_(True))
    return list(session.scalars(query))


def default_model(*, session: Session, user_id: uuid.UUID | None, model_type: str) -> ClsTrainedModel | None:
    owner = ClsTrainedModel.user_id.is_(None) if user_id is None else ClsTrainedModel.user_id == user_id
    return session.scalar(select(ClsTrainedModel).where(owner, ClsTrainedModel.model_type == model_type,
                                                        ClsTrainedModel.is_default.is_(True)))


@requires("admin", "registering a trained model")
def create_model_row(*, session: Session, actor: User, model_id: uuid.UUID, run_id: uuid.UUID, name: str, version_id,
                     config, class_names: list[str], class_mapping: dict[str, int], keys: dict[str, str],
                     artifacts) -> ClsTrainedModel:
    """The row of a model whose files are already in storage (core.training.runs uploads them first)."""
    report = artifacts.report
    row = ClsTrainedModel(
        id=model_id, user_id=actor.id, training_run_id=run_id, dataset_version_id=version_id, name=name,
        model_type=config.model_type, model_size=config.model_size, timm_name=config.timm_name,
        task_type=config.task_type, checkpoint_url=keys.get("checkpoint"), onnx_url=keys.get("onnx"),
        torchscript_url=keys.get("torchscript"), preprocessing=artifacts.preprocessing,
        num_classes=config.num_classes, class_names=class_names, class_mapping=class_mapping,
        accuracy=report.get("accuracy"), f1_score=report.get("f1"), top5_accuracy=report.get("top5"),
        precision_macro=report.get("precision"), recall_macro=report.get("recall"),
        confusion_matrix=report["confusion_matrix"], per_class_metrics=report["per_class"],
        predictions_key=keys.get("predictions"),
        export_check={**artifacts.export_check, "evaluated_split": artifacts.evaluated_split,
                      **({"map": report["map"], "f1_micro": report["f1_micro"]} if "map" in report else {})},
        is_active=True, is_default=False,
    )
    session.add(row)
    session.flush()
    _default_if_first(session, row)
    return row


def _default_if_first(session: Session, row: ClsTrainedModel) -> None:
    """The first completed model of its (user, model type) becomes that group's default, so `predict
    --model default` works after the first training; later models change the default only when a
    person sets it. A concurrent first model losing the race (the unique index) just stays non-default."""
    owner = ClsTrainedModel.user_id.is_(None) if row.user_id is None else ClsTrainedModel.user_id == row.user_id
    if session.scalar(select(ClsTrainedModel.id).where(owner, ClsTrainedModel.model_type == row.model_type,
                                                       ClsTrainedModel.is_default.is_(True)).limit(1)):
        return
    try:
        with session.begin_nested():
            session.execute(update(ClsTrainedModel).where(ClsTrainedModel.id == row.id).values(is_default=True)
                            .execution_options(synchronize_session=False))
    except IntegrityError:
        return
    session.refresh(row)


@requires("admin", "setting the default model")
def set_default(*, session: Session, actor: User, model_id) -> ClsTrainedModel:
    """Make this the default of its (user, model type); the previous default loses the flag."""
    row = get_model(session=session, model_id=model_id)
    if not row.is_active:
        raise Conflict(f"model {row.name!r} is inactive; activate it before making it the default")
    owner = ClsTrainedModel.user_id.is_(None) if row.user_id is None else ClsTrainedModel.user_id == row.user_id
    # Lock the (user, type) group on Postgres so two concurrent calls queue; the index backs it up.
    session.scalars(select(ClsTrainedModel.id).where(owner, ClsTrainedModel.model_type == row.model_type)
                    .with_for_update()).all()
    session.execute(update(ClsTrainedModel).where(owner, ClsTrainedModel.model_type == row.model_type,
                                                  ClsTrainedModel.id != row.id).values(is_default=False))
    session.flush()
    row.is_default = True
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("another model became the default at the same moment; try again") from None
    return row


@requires("admin", "activating or deactivating a model")
def set_active(*, session: Session, actor: User, model_id, active: bool) -> ClsTrainedModel:
    """An inactive model is hidden from prediction and cannot stay the default."""
    row = get_model(session=session, model_id=model_id)
    row.is_active = active
    if not active:
        row.is_default = False
    session.flush()
    return row


@requires("admin", "renaming a model")
def rename_model(*, session: Session, actor: User, model_id, name) -> ClsTrainedModel:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("a model name cannot be empty")
    if len(name.strip()) > MAX_NAME:
        raise InvalidInput(f"a model name has at most {MAX_NAME} characters, not {len(name.strip())}")
    row = get_model(session=session, model_id=model_id)
    row.name = name.strip()
    session.flush()
    return row


def model_keys(row: ClsTrainedModel) -> list[str]:
    keys = [row.checkpoint_url, row.onnx_url, row.torchscript_url, row.predictions_key]
    if row.onnx_url:
        keys.append(row.onnx_url + ".data")
    return [key for key in keys if key]


@requires("admin", "deleting a model")
def delete_model(*, session: Session, actor: User, storage, model_id) -> dict[str, Any]:
    """The row goes first (flushed), then its files; a storage error rolls the row back."""
    row = get_model(session=session, model_id=model_id)
    audit(session=session, actor=actor, action="delete_model", target_type="model", target_id=row.id,
          row_count=1, details={"name": row.name})
    keys = model_keys(row)
    session.delete(row)
    session.flush()
    for key in keys:
        storage.delete(key)
    return {"deleted": str(row.id), "files": len(keys)}


@requires("admin", "exporting a model to ONNX")
def start_onnx_export(*, actor: User, model_id) -> uuid.UUID:
    """Queue export_onnx on the predictions queue (it loads the model); returns the job id."""
    return enqueue(actor=actor, kind="export_onnx", params={"model_id": str(as_uuid(model_id, "model id"))})


@requires("admin", "exporting a model to ONNX")
def export_onnx(*, session: Session, actor: User, storage, model_id) -> ClsTrainedModel:
    """ONNX for a model that has none (trained with export_formats without onnx), checked on real
    images of its version; a model that has one is returned as it is."""
    import torch

    from core.ml.export import check_exports
    from core.ml.export import export_onnx as export_file

    row = get_model(session=session, model_id=model_id)
    if row.onnx_url and storage.exists(row.onnx_url):
        return row
    if not row.checkpoint_url:
        raise NotFound(f"model {row.name!r} has no checkpoint to export from")
    model, _ = load_checkpoint_model(local_copy(storage, row.checkpoint_url, cache_dir() / "models" / str(row.id) / "best.pt"))
    prep = row.preprocessing
    transform, mode = eval_transform(prep), "L" if prep["in_chans"] == 1 else "RGB"
    images = [transform(decode_image(storage.get(key), mode=mode)) for key in _sample_keys(session, storage, row)]
    key = f"models/{row.id}/model.onnx"
    with tempfile.TemporaryDirectory(prefix="cls-export-") as tmp:
        written = export_file(model, Path(tmp) / "model.onnx", image_size=prep["size"], in_chans=prep["in_chans"])
        check = check_exports(model, torch.stack(images), onnx_path=written[0], torchscript_path=None) if images else {}
        for path in written:
            storage.put_file(f"models/{row.id}/{path.name}", path)
    row.onnx_url = key
    row.export_check = {**(row.export_check or {}), **check}
    session.flush()
    return row


def _sample_keys(session: Session, storage, row: ClsTrainedModel, limit: int = 8) -> list[str]:
    version = session.get(ClsDatasetVersion, row.dataset_version_id) if row.dataset_version_id else None
    if version is None:
        return []
    lines = read_manifest(storage=storage, version=version)
    return [line["key"] for line in lines if line["split"] in ("val", "test")][:limit]


def top5_or_none(value: float | None, num_classes: int | None) -> float | None:
    """Top-5 accuracy only where 5 is below the number of classes (else it says nothing: None)."""
    return value if num_classes and num_classes > 5 else None


def model_summary(row: ClsTrainedModel, *, full: bool = False) -> dict[str, Any]:
    summary = {
        "id": str(row.id), "name": row.name, "model_type": row.model_type, "model_size": row.model_size,
        "timm_name": row.timm_name, "task_type": row.task_type, "num_classes": row.num_classes,
        "accuracy": row.accuracy, "f1_score": row.f1_score,
        "top5_accuracy": top5_or_none(row.top5_accuracy, row.num_classes), "is_active": row.is_active, "is_default": row.is_default, "created_at": row.created_at,
        "training_run_id": str(row.training_run_id) if row.training_run_id else None,
        "files": {"checkpoint": row.checkpoint_url, "onnx": row.onnx_url, "torchscript": row.torchscript_url,
                  "predictions": row.predictions_key},
    }
    if full:
        summary.update({
            "class_names": row.class_names, "class_mapping": row.class_mapping, "preprocessing": row.preprocessing,
            "precision_macro": row.precision_macro, "recall_macro": row.recall_macro,
            "confusion_matrix": row.confusion_matrix, "per_class_metrics": row.per_class_metrics,
            "export_check": row.export_check, "thresholds": row.thresholds,
            "dataset_version_id": str(row.dataset_version_id) if row.dataset_version_id else None,
        })
    return summary
