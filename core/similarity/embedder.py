"""Images → embedding vectors, without database code: a timm model's pre-logits (forward_features,
then forward_head(pre_logits=True): the pooled features the classifier head reads), L2-normalised.

The model is either a registered model's own network (its checkpoint, its saved preprocessing) or a
backbone from the families table (core.ml.families) with timm's pretrained weights: from the hub,
a file or a storage object, as training loads them (machines here have no hub access: tests build
with pretrained=False and keep the real loading code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInput
from core.ml.augment import eval_transform
from core.ml.families import create_model, get_spec


class Embedder:
    """`embed(images) -> (n, dim)` float32 unit vectors from a timm model and its preprocessing."""

    def __init__(self, model, preprocessing: dict[str, Any], *, threads: int | None = None):
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.transform = eval_transform(preprocessing)
        self.threads = threads
        self.mode = "L" if preprocessing.get("in_chans", 3) == 1 else "RGB"

    @property
    def dim(self) -> int:
        return int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    def embed(self, images: list) -> np.ndarray:
        """PIL images → L2-normalised pre-logit vectors (float32)."""
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = torch.stack([self.transform(image.convert(self.mode)) for image in images])
        previous = torch.get_num_threads()
        if self.threads and self.threads != previous:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                features = self.model.forward_head(self.model.forward_features(batch), pre_logits=True)
        finally:
            if self.threads and self.threads != previous:
                torch.set_num_threads(previous)
        vectors = features.float().reshape(len(images), -1).numpy()
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def backbone_preprocessing(model, image_size: int | None = None) -> dict[str, Any]:
    """A timm backbone's own evaluation preprocessing (its pretrained config), as models store it."""
    cfg = model.pretrained_cfg
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return {"size": size, "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": list(cfg.get("std", (0.229, 0.224, 0.225))),
            "interpolation": cfg.get("interpolation", "bicubic") or "bicubic",
            "crop_pct": float(cfg.get("crop_pct", 0.875) or 0.875), "in_chans": 3}


def backbone(family: str, size: str, *, weights: str | None, weights_file: Path | None = None):
    """(model, preprocessing) of a families-table backbone without its classifier. `weights`: "hub"
    (timm's pretrained weights), "none" (random: tests), or a file given as `weights_file`."""
    import torch

    spec = get_spec(family, size)
    image_size = 256 if spec.family == "swin" else 224
    try:
        # Random weights from a fixed seed: every run and process builds the same network, so an
        # incremental run's vectors are comparable with the first run's.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create_model(spec, num_classes=0, image_size=image_size, pretrained=weights == "hub",
                                 weights_file=weights_file)
    except (OSError, RuntimeError, ValueError) as exc:
        raise InvalidInput(f"weights for {spec.timm_name} could not be loaded ({type(exc).__name__}: {exc}); "
                           "use --weights none, file:… or storage:…") from None
    return model, backbone_preprocessing(model, image_size)
