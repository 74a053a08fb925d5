"""Export a trained model to ONNX (dynamic batch axis) and TorchScript, and check both against the
torch model on real images (max abs diff of the logits)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.ml.inference import inference_session

ONNX_SINGLE_FILE_LIMIT = 1_800_000_000
"""Models whose weights exceed this (bytes) keep them in model.onnx.data (protobuf's 2 GB cap)."""


def export_onnx(model: nn.Module, path: Path, *, image_size: int, in_chans: int) -> list[Path]:
    """torch's dynamo exporter with a dynamic batch axis; returns the files written (model.onnx and,
    for very large models, model.onnx.data). Measured against the legacy TorchScript exporter
    (opset 17, constant folding) and a fixed batch: ONNX Runtime runs both graphs at the same speed
    within noise (ConvNeXt, Swin, DINOv2, batch 1 and 32, CPU time on one thread), so the supported
    exporter stays."""
    model = model.eval().cpu().float()
    example = torch.randn(2, in_chans, image_size, image_size)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > ONNX_SINGLE_FILE_LIMIT
    # The exporter prints progress lines; stdout belongs to the CLI's JSON document.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=True, external_data=external, verbose=False,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
        )
    files = [path]
    data = path.with_name(path.name + ".data")
    if data.exists():
        files.append(data)
    return files


def export_torchscript(model: nn.Module, path: Path, *, image_size: int, in_chans: int) -> Path:
    """Traced and frozen (timm's models trace; scripting fails on several families)."""
    model = model.eval().cpu().float()
    example = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(model, example))
        torch.jit.save(traced, str(path))
    return path


def onnx_session(path: Path, threads: int | None = None):
    """A CPU session with the predictor's own settings, so the check runs the graph it will run."""
    return inference_session(path, threads=threads, providers=["CPUExecutionProvider"])


def check_exports(model: nn.Module, batch: torch.Tensor, *, onnx_path: Path | None,
                  torchscript_path: Path | None) -> dict[str, float | int]:
    """Max abs difference of each export's logits from the torch model's on `batch` (real images,
    preprocessed), in fp32."""
    model = model.eval().cpu().float()
    with torch.no_grad():
        reference = model(batch).numpy()
    result: dict[str, float | int] = {"images": int(len(batch))}
    if onnx_path is not None:
        session = onnx_session(onnx_path)
        output = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        result["onnx_max_abs_diff"] = float(np.abs(output - reference).max())
    if torchscript_path is not None:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: TorchScript is still asked for
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(torchscript_path))
        with torch.no_grad():
            output = scripted(batch).numpy()
        result["torchscript_max_abs_diff"] = float(np.abs(output - reference).max())
    return result
