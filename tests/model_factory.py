"""A tiny trained model for prediction tests: ConvNeXt-V2 atto (or a ViT) on 32 px grayscale digits,
trained for a few full-batch steps on one thread (seconds), saved in core.training.runs's best.pt format
and registered as a cls_trained_models row with its file in storage."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np

from tests.training_data import digit_png, digits

PREPROCESSING = {"size": 32, "mean": [0.449], "std": [0.226], "interpolation": "bicubic", "crop_pct": 1.0,
                 "in_chans": 1}


def digit_images(classes: int = 3, per_class: int = 20, offset: int = 0) -> tuple[list[bytes], np.ndarray]:
    data, target = digits(classes)
    keep = np.concatenate([np.flatnonzero(target == c)[offset:offset + per_class] for c in range(classes)])
    return [digit_png(data[i], 32) for i in keep], target[keep]


def train_checkpoint(path: Path, *, classes: int = 3, family: str = "convnext", size: str = "atto",
                     steps: int = 12, per_class: int = 10, task_type: str = "single_label") -> Path:
    import torch
    from PIL import Image

    from core.ml.augment import eval_transform
    from core.ml.families import create_model, get_spec

    torch.manual_seed(0)
    spec = get_spec(family, size)
    model = create_model(spec, num_classes=classes, image_size=32, in_chans=1)
    images, target = digit_images(classes, per_class)
    transform = eval_transform(PREPROCESSING)
    batch = torch.stack([transform(Image.open(io.BytesIO(b)).convert("L")) for b in images])
    labels = torch.from_numpy(target).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), labels).backward()
        optimizer.step()
    model.eval()
    torch.save({"state_dict": model.state_dict(), "timm_name": spec.timm_name, "num_classes": classes,
                "preprocessing": PREPROCESSING, "class_names": [f"digit-{c}" for c in range(classes)],
                "task_type": task_type}, path)
    return path


def register_model(session, storage, checkpoint: Path, *, class_ids: list, class_names: list[str] | None = None,
                   name: str = "tiny", task_type: str = "single_label", thresholds: dict | None = None,
                   is_default: bool = False, user_id=None, model_type: str = "convnext") -> uuid.UUID:
    """A model row whose best.pt is in storage; class_ids[i] is output i's class."""
    from core.models import ClsTrainedModel

    model_id = uuid.uuid4()
    key = f"models/{model_id}/best.pt"
    storage.put(key, checkpoint.read_bytes())
    session.add(ClsTrainedModel(
        id=model_id, user_id=user_id, name=name, model_type=model_type, model_size="atto", timm_name=None,
        task_type=task_type, checkpoint_url=key, preprocessing=PREPROCESSING, num_classes=len(class_ids),
        class_names=class_names or [f"digit-{i}" for i in range(len(class_ids))],
        class_mapping={str(c): i for i, c in enumerate(class_ids)}, thresholds=thresholds or {},
        is_active=True, is_default=is_default))
    session.flush()
    return model_id


def shared_checkpoint(tmp_path_factory, family: str = "convnext", size: str = "atto", **kwargs) -> Path:
    """One trained checkpoint per test session and family (training costs seconds on a busy CPU)."""
    import torch

    path = tmp_path_factory.getbasetemp() / f"tiny-{family}-{size}.pt"
    if not path.exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train_checkpoint(path, family=family, size=size, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return path


def small_torch_settings(tmp_path, monkeypatch):
    """One torch thread and a private image cache for a test (a generator for a pytest fixture)."""
    import torch

    monkeypatch.setenv("CLS_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
