"""Prediction with a trained model: images (bytes, files or URLs) → top-k with probabilities
(single-label, with the model's saved abstain threshold) or per-class probabilities against the
model's saved per-class thresholds (multi-label); Grad-CAM overlays through the grad-cam library.

The runtime is core.ml.inference (ONNX Runtime sessions cached per model, torch fallback); this
module adds model choice, per-item error messages and thresholds on top.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import get_settings
from core.errors import InvalidInput, NotFound, UserError
from core.imports.urls import fetch_url
from core.ml.data import cache_dir
from core.ml.inference import Predictor, load_checkpoint_model, local_copy
from core.models import ClsTrainedModel
from core.prediction.loading import cached_predictor
from core.training.registry import get_model

DEFAULT_TOP_K = 5
DEFAULT_MULTI_LABEL_THRESHOLD = 0.5


@dataclass
class Item:
    """One input to predict: its display name and its bytes, or why it could not be read."""
    name: str
    data: bytes | None = None
    error: str | None = None


def resolve_model(*, session: Session, model: str | uuid.UUID, user_id: uuid.UUID | None = None) -> ClsTrainedModel:
    """A model id, or "default": the user's default model (newest if they have one per family),
    else the newest default of anyone. Inactive models are refused."""
    if str(model).strip().lower() == "default":
        query = select(ClsTrainedModel).where(ClsTrainedModel.is_default.is_(True), ClsTrainedModel.is_active.is_(True))
        rows = list(session.scalars(query.order_by(ClsTrainedModel.created_at.desc())))
        mine = [row for row in rows if row.user_id == user_id]
        if not (mine or rows):
            raise NotFound("no default model: set one on the Models page or with `models set-default ID`")
        return (mine or rows)[0]
    row = get_model(session=session, model_id=model)
    if not row.is_active:
        raise InvalidInput(f"model {row.name!r} is inactive; activate it to predict with it")
    return row


def model_thresholds(row: ClsTrainedModel) -> dict[str, Any]:
    """{"abstain": p or None} (single-label) or {"per_class": [t per class]} (multi-label), from the
    model's saved thresholds; a class without one uses 0.5."""
    saved = row.thresholds or {}
    if row.task_type == "multi_label":
        per_class = saved.get("per_class") or {}
        return {"per_class": [float(per_class.get(name, DEFAULT_MULTI_LABEL_THRESHOLD)) for name in row.class_names]}
    abstain = saved.get("abstain")
    return {"abstain": float(abstain) if abstain is not None else None}


def read_inputs(sources: list[str], *, allow_list: list[str] | None = None) -> list[Item]:
    """CLI inputs: http(s) URLs (downloaded under URL import's SSRF, size and time rules) or local
    files; each unreadable one becomes an Item with its reason."""
    settings = get_settings()
    if allow_list is None:
        allow_list = [entry.strip() for entry in settings.url_allow_list.split(",") if entry.strip()]
    items = []
    for source in sources:
        if source.lower().startswith(("http://", "https://")):
            try:
                download = fetch_url(source, timeout_s=settings.url_import_timeout_s, allow_list=allow_list,
                                     max_bytes=min(settings.url_import_max_bytes, settings.max_upload_bytes))
                items.append(Item(source, download.data))
            except InvalidInput as exc:
                items.append(Item(source, error=str(exc)))
            continue
        path = Path(source)
        if not path.is_file():
            items.append(Item(source, error="no such file"))
        elif path.stat().st_size > settings.max_upload_bytes:
            items.append(Item(source, error=f"file is larger than {settings.max_upload_bytes} bytes"))
        else:
            items.append(Item(source, path.read_bytes()))
    return items


def probabilities(predictor, items: list[Item], batch_size: int = 32) -> tuple[np.ndarray, list[str | None]]:
    """(N, C) probabilities for the items (rows of unreadable items are NaN) and per-item errors.
    Each image is decoded on its own so one broken file names itself and spares the others."""
    errors: list[str | None] = [item.error for item in items]
    arrays: dict[int, np.ndarray] = {}
    for index, item in enumerate(items):
        if item.error is not None:
            continue
        if not item.data:
            errors[index] = "empty file"
            continue
        try:
            arrays[index] = predictor.preprocess([item.data])[0]
        except UserError as exc:
            errors[index] = str(exc).removeprefix("image 1: ")
    out = np.full((len(items), len(predictor.class_names)), np.nan, dtype=np.float32)
    order = sorted(arrays)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        logits = predictor.logits(np.stack([arrays[i] for i in chunk]).astype(np.float32))
        out[chunk] = activate(logits, multi_label=predictor.multi_label)
    return out, errors


def activate(logits: np.ndarray, *, multi_label: bool) -> np.ndarray:
    logits = logits.astype(np.float64)
    if multi_label:
        return (1 / (1 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def describe(probs: np.ndarray, *, class_names: list[str], multi_label: bool, thresholds: dict[str, Any],
             top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """One image's result: top-k [{class, probability}], the predicted classes after thresholds."""
    order = np.argsort(-probs)[:max(1, min(top_k, len(class_names)))]
    result: dict[str, Any] = {"top_k": [{"class": class_names[i], "index": int(i), "probability": float(probs[i])}
                                        for i in order]}
    if multi_label:
        cuts = thresholds["per_class"]
        result["predicted"] = [class_names[i] for i in range(len(class_names)) if probs[i] >= cuts[i]]
        result["probabilities"] = {name: float(p) for name, p in zip(class_names, probs, strict=True)}
    else:
        best = int(order[0])
        abstain = thresholds.get("abstain")
        result["abstained"] = abstain is not None and float(probs[best]) < abstain
        result["predicted"] = [] if result["abstained"] else [class_names[best]]
    return result


def predict_items(*, session: Session, storage, model, items: list[Item], user_id=None, top_k: int = DEFAULT_TOP_K,
                  threads: int | None = None) -> dict[str, Any]:
    """Predict each item with a model (an id or "default"): the model's summary and one result per
    item, in order (an error instead of a result for an unreadable item)."""
    if not isinstance(top_k, int) or top_k < 1:
        raise InvalidInput(f"top_k must be a positive whole number, not {top_k!r}")
    if not items:
        raise InvalidInput("give at least one image")
    row = resolve_model(session=session, model=model, user_id=user_id)
    predictor = cached_predictor(session=session, storage=storage, model_id=row.id, threads=threads)
    probs, errors = probabilities(predictor, items)
    thresholds = model_thresholds(row)
    results = []
    for item, p, error in zip(items, probs, errors, strict=True):
        if error is not None:
            results.append({"image": item.name, "error": error})
        else:
            results.append({"image": item.name, **describe(p, class_names=list(row.class_names), top_k=top_k,
                                                           multi_label=predictor.multi_label, thresholds=thresholds)})
    return {"model": {"id": str(row.id), "name": row.name, "task_type": row.task_type, "backend": predictor.backend},
            "thresholds": thresholds, "results": results}


# ---------------------------------------------------------------- Grad-CAM


def _vit_reshape(prefix_tokens: int):
    def reshape(tensor):
        tokens = tensor[:, prefix_tokens:, :]
        side = int(round(tokens.shape[1] ** 0.5))
        return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)
    return reshape


def _nhwc_reshape(tensor):
    return tensor.permute(0, 3, 1, 2)


def _deepest_with_a_grid(model, stages, image_size: int | None):
    """The deepest stage whose output still has at least 2×2 positions at this input size (a 1×1
    map makes a blank heat map: small inputs through 32× downsampling), from timm's feature_info."""
    reductions = [info.get("reduction") for info in getattr(model, "feature_info", [])][-len(stages):]
    if image_size and len(reductions) == len(stages) and all(reductions):
        for stage, reduction in zip(reversed(stages), reversed(reductions), strict=True):
            if image_size // reduction >= 2:
                return stage
        return stages[0]
    return stages[-1]


def cam_target(model, image_size: int | None = None) -> tuple[Any, Any]:
    """(layer, reshape_transform) for grad-cam: for ViTs (vit, dinov2, clip) the last block's first
    norm with the prefix (class/register) tokens dropped and the patch tokens laid out on their grid;
    for Swin (timm's stages give NHWC maps) a stage's output as NCHW; for CNNs a stage's output. The
    stage is the last one, or with `image_size` the deepest one whose map is still at least 2×2."""
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        return model.blocks[-1].norm1, _vit_reshape(int(getattr(model, "num_prefix_tokens", 1)))
    if hasattr(model, "layers") and "swin" in type(model).__name__.lower():
        return _deepest_with_a_grid(model, list(model.layers), image_size), _nhwc_reshape
    if hasattr(model, "stages"):
        return _deepest_with_a_grid(model, list(model.stages), image_size), None
    if hasattr(model, "conv_head"):
        return model.conv_head, None
    raise InvalidInput(f"Grad-CAM does not know where to look in a {type(model).__name__}")


def _torch_model(session: Session, storage, row: ClsTrainedModel):
    if not row.checkpoint_url:
        raise NotFound(f"model {row.name!r} has no torch checkpoint; Grad-CAM needs one")
    model, _ = load_checkpoint_model(local_copy(storage, row.checkpoint_url,
                                                cache_dir() / "models" / str(row.id) / "best.pt"))
    return model


def grad_cam(*, session: Session, storage, model, image: bytes, class_index: int | None = None,
             user_id=None) -> dict[str, Any]:
    """Grad-CAM for one image and one class (default: the top class): the heat map (H×W in 0..1),
    an RGB uint8 overlay on the image as the model saw it (resized and cropped), and the class."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    row = resolve_model(session=session, model=model, user_id=user_id)
    net = _torch_model(session, storage, row)
    helper = Predictor(preprocessing=row.preprocessing, class_names=list(row.class_names),
                       multi_label=row.task_type == "multi_label", torch_model=net)
    batch = torch.from_numpy(helper.preprocess([image]))
    with torch.no_grad():
        probs = activate(net(batch).numpy(), multi_label=helper.multi_label)[0]
    if class_index is None:
        class_index = int(np.argmax(probs))
    if not 0 <= int(class_index) < len(row.class_names):
        raise InvalidInput(f"class index {class_index} is out of range (the model has {len(row.class_names)} classes)")
    layer, reshape = cam_target(net, image_size=int(row.preprocessing["size"]))
    with GradCAM(model=net, target_layers=[layer], reshape_transform=reshape) as cam:
        heat = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(class_index))])[0]
    prep = row.preprocessing
    mean, std = np.array(prep["mean"]).reshape(-1, 1, 1), np.array(prep["std"]).reshape(-1, 1, 1)
    seen = np.clip(batch[0].numpy() * std + mean, 0, 1).transpose(1, 2, 0)
    if seen.shape[2] == 1:
        seen = np.repeat(seen, 3, axis=2)
    overlay = show_cam_on_image(seen.astype(np.float32), heat, use_rgb=True)
    return {"class": row.class_names[int(class_index)], "class_index": int(class_index),
            "probability": float(probs[int(class_index)]), "heatmap": heat, "overlay": overlay}
