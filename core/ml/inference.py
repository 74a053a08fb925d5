"""Predictor: a trained model's files, `predict(images) -> probabilities`. No database here: a
registered model's Predictor is built by core.prediction.loading.

ONNX Runtime when the model has an ONNX file (faster than torch eager for every family on this
CPU; figures and session settings: bench/bench_inference.py, `session_options`), else torch from
best.pt. Preprocessing is the model's saved one, through the same timm eval transform that
training evaluated with. `local_copy` downloads a storage object once into the worker's cache.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInput
from core.ml.augment import eval_transform
from core.ml.data import decode_image, eval_resize
from core.ml.families import create_model, spec_for_timm_name


def local_copy(storage, key: str, target: Path) -> Path:
    """A storage object as a local file (downloaded once; a local store's file is used in place)."""
    local = storage.local_path(key)
    if local is not None and local.exists():
        return local
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(storage.get(key))
    os.replace(tmp, target)
    return target


def load_checkpoint_model(path: Path):
    """The torch model of a best.pt written by core.training.runs (self-describing: timm name, sizes)."""
    import torch

    saved = torch.load(str(path), map_location="cpu", weights_only=True)
    spec = spec_for_timm_name(saved["timm_name"])
    if spec is None:
        raise InvalidInput(f"{path.name}: model {saved['timm_name']!r} is not in the model table")
    model = create_model(spec, num_classes=saved["num_classes"], image_size=saved["preprocessing"]["size"],
                         in_chans=saved["preprocessing"]["in_chans"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved


class Predictor:
    def __init__(self, *, preprocessing: dict[str, Any], class_names: list[str], multi_label: bool,
                 onnx_path: Path | None = None, torch_model=None, threads: int | None = None,
                 spin: bool = False):
        from timm.data import DEFAULT_CROP_PCT  # deferred: heavy

        if onnx_path is None and torch_model is None:
            raise InvalidInput("a predictor needs an ONNX file or a torch model")
        self.preprocessing, self.class_names, self.multi_label = preprocessing, class_names, multi_label
        self.transform = eval_transform(preprocessing)
        # The shorter side the eval resize gives: decoding may reduce a large image down to a few times it.
        self.resize_side = eval_resize(preprocessing["size"], preprocessing.get("crop_pct") or DEFAULT_CROP_PCT)
        self.session = None
        self.torch_model = torch_model
        self.threads = threads
        if onnx_path is not None:
            self.session = inference_session(onnx_path, threads=threads, spin=spin)
            self.input_name = self.session.get_inputs()[0].name
        self.backend = "onnxruntime" if self.session is not None else "torch"

    def preprocess(self, images: list) -> np.ndarray:
        """PIL images or encoded bytes → the (N, C, H, W) float32 batch the model takes."""
        from PIL import Image

        mode = "L" if self.preprocessing["in_chans"] == 1 else "RGB"
        tensors = []
        for index, image in enumerate(images):
            if isinstance(image, bytes | bytearray | io.BytesIO):
                raw = image.getvalue() if isinstance(image, io.BytesIO) else bytes(image)
                image = decode_image(raw, mode=mode, name=f"image {index + 1}", shorter_side=self.resize_side)
            elif isinstance(image, Image.Image):
                image = image.convert(mode)
            else:
                raise InvalidInput(f"image {index + 1}: expected image bytes or a PIL image, not {type(image).__name__}")
            tensors.append(self.transform(image).numpy())
        return np.stack(tensors).astype(np.float32)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {self.input_name: batch})[0]
        import torch

        previous = torch.get_num_threads()
        if self.threads and self.threads != previous:  # the same deliberate thread count as ONNX Runtime
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.torch_model(torch.from_numpy(batch)).float().numpy()
        finally:
            if self.threads and self.threads != previous:
                torch.set_num_threads(previous)

    def predict(self, images: list, batch_size: int = 32) -> np.ndarray:
        """(N, num_classes) probabilities: softmax (single-label) or sigmoid (multi-label)."""
        out = []
        for start in range(0, len(images), batch_size):
            logits = self.logits(self.preprocess(images[start:start + batch_size]))
            if self.multi_label:
                out.append(1 / (1 + np.exp(-logits)))
            else:
                shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
                out.append(shifted / shifted.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), dtype=np.float32)


def session_options(threads: int | None = None, *, spin: bool = False):
    """ONNX Runtime session options for inference on a CPU shared with other work (the web app, the
    database, other jobs): all graph optimizations (ORT_ENABLE_ALL: the NCHWc conv layout is what
    makes ConvNeXt 2.3x torch at batch 32 on one thread; ORT_ENABLE_EXTENDED, without it, only 1.0x),
    operators run one after another (sequential, one inter-op thread), `threads` intra-op threads
    (set it deliberately), and intra-op worker threads that sleep instead of spinning between
    operators unless `spin`: on a loaded 2-core machine spinning workers fight the other processes
    and cost up to half the throughput (bench/bench_inference.py measures both)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def inference_session(path: Path, threads: int | None = None, *, spin: bool = False,
                      providers: list[str] | None = None):
    """An ONNX Runtime session: CUDA when this onnxruntime build has it, else CPU, with
    `session_options` (threads: intra-op threads; None lets ONNX Runtime use one per core)."""
    import onnxruntime as ort

    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=session_options(threads, spin=spin),
                                providers=providers or None)
