"""Measurements taken before training, on copies so the run itself starts untouched: the training
throughput (to fit epochs into a time budget) and an LR range test (torch-lr-finder) for the
automatic learning rate. Imported only by the training pipeline (torch at the top)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from core.ml.config import TrainingConfig

PROBE_BATCHES = 6
"""Batches timed for the throughput probe (after one untimed batch that warms kernels up)."""

LR_TEST_STEPS = 100
LR_TEST_RANGE = (1e-6, 1.0)


def warm_cache(dataset) -> None:
    """Decode every training image once into the decoded cache, so the probe times what later
    epochs cost (the first epoch would otherwise include the decoding)."""
    for record in dataset.records:
        dataset.cache.load(record)


def _batches(loader, count: int):
    while True:
        for batch in loader:
            yield batch
            count -= 1
            if count <= 0:
                return


def train_throughput(model: nn.Module, loader, loss_fn, *, device: torch.device, amp: torch.dtype | None,
                     channels_last: bool) -> float:
    """Images per second of forward + backward + an optimizer step, on a copy of the model."""
    probe = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=1e-6)
    seen, started = 0, None
    for index, (images, targets) in enumerate(_batches(loader, PROBE_BATCHES + 1)):
        if index == 1:
            seen, started = 0, time.perf_counter()
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(probe(images).float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += len(images)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    return seen / elapsed if elapsed > 0 else float("inf")


def lr_range_test(model: nn.Module, config: TrainingConfig, loader, loss_fn, *, device: torch.device,
                  steps: int | None = None) -> dict[str, Any]:
    """Leslie Smith's LR range test through torch-lr-finder on a copy of the model: the learning rate
    grows exponentially from 1e-6 to 1 over `steps` batches; the choice is a tenth of the rate at the
    lowest smoothed loss (fastai's rule), the usual point where the loss still falls steeply."""
    from torch_lr_finder import LRFinder

    from core.ml.trainer import build_optimizer

    probe = copy.deepcopy(model).to(device)
    optimizer = build_optimizer(probe, config.model_copy(update={"learning_rate": LR_TEST_RANGE[0]}))
    for group in optimizer.param_groups:  # layer-wise decay scales are the scheduler's business
        group["lr"] = LR_TEST_RANGE[0]
    finder = LRFinder(probe, optimizer, loss_fn, device=device)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader, end_lr=LR_TEST_RANGE[1], num_iter=steps or LR_TEST_STEPS, step_mode="exp", smooth_f=0.05,
                          diverge_th=5)
    lrs, losses = finder.history["lr"], finder.history["loss"]
    return choose_from_curve(lrs, losses)


def choose_from_curve(lrs: list[float], losses: list[float]) -> dict[str, Any]:
    """A tenth of the LR at the lowest loss, skipping the first and last few noisy points."""
    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    usable = finite[5:-3] if len(finite) > 12 else finite
    if not usable:
        raise ValueError("the LR range test produced no finite loss")
    lowest = min(usable, key=lambda i: losses[i])
    chosen = float(f"{lrs[lowest] / 10:.2g}")
    return {"lr": [float(f"{x:.4g}") for x in lrs], "loss": [float(np.round(x, 5)) for x in losses],
            "lowest_loss_lr": float(f"{lrs[lowest]:.4g}"), "chosen": chosen}
