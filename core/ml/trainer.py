"""The training loop in short functions over timm's parts: create_optimizer_v2 (layer-wise LR decay),
create_scheduler_v2 (warmup), Mixup/CutMix, ModelEmaV3; autocast, accumulation, clipping, early
stopping; evaluation of the model and its EMA each epoch, keeping the better.

Imported only by core.training.runs and the benchmarks (torch at the top). `fit` knows nothing of the
database: the caller passes `on_batch` (progress, cancellation) and `on_epoch` (checkpoint, metrics).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.ml.config import TrainingConfig
from core.ml.metrics import epoch_metrics, is_better
from core.ml.ranks import SINGLE, Ranks, agreed_clock, prepare_model, rank_device, unshard, unwrapped, wrap
from core.ml.recipe import cpu_has_bf16, ema_early_share
from core.ml.schedule import LrSchedule, build_optimizer


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """freeze_backbone_epochs: only the classifier head learns while the backbone is frozen."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(trainable or id(parameter) in head)


def build_mixup(config: TrainingConfig):
    if not config.mixing:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=config.mixup_alpha or 0.0, cutmix_alpha=config.cutmix_alpha or 0.0,
                 label_smoothing=config.label_smoothing or 0.0, num_classes=config.num_classes)


def train_one_epoch(model: nn.Module, loader, optimizer, loss_fn, *, device: torch.device, amp: torch.dtype | None,
                    schedule: LrSchedule, num_updates: int, accumulation: int = 1, clip_norm: float = 0.0,
                    mixup=None, ema=None, scaler=None, channels_last: bool = False,
                    on_batch: Callable[[int, int], None] | None = None,
                    deadline: float | None = None, ranks: Ranks = SINGLE) -> tuple[float, int, int]:
    """One pass over the train loader, or less once `deadline` (time.monotonic) has passed on one of
    the ranks; returns (mean loss, images seen, updates so far), over all ranks. `model` is the module
    the step runs (DDP's wrapper under several ranks)."""
    model.train()
    total_loss, seen, batches = 0.0, 0, len(loader)
    optimizer.zero_grad(set_to_none=True)
    for index, (images, targets) in enumerate(loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        steps = (index + 1) % accumulation == 0 or index + 1 == batches
        # DDP: gradients of the batches an update accumulates are all-reduced once, with its last one
        with model.no_sync() if not steps and ranks.many else contextlib.nullcontext():
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = loss_fn(model(images).float(), targets)
            (scaler.scale(loss / accumulation) if scaler else loss / accumulation).backward()
        if steps:
            _optimizer_step(model, optimizer, scaler, clip_norm)
            num_updates += 1
            schedule.after_update(num_updates)
            if ema is not None:
                ema.update(unwrapped(model), step=num_updates)
        total_loss += float(loss.detach()) * len(images)
        seen += len(images)
        if on_batch:
            on_batch(index + 1, batches)
        if deadline is not None and (index + 1) % accumulation == 0 and ranks.any(time.monotonic() > deadline):
            break
    total_loss, seen = ranks.sum(total_loss, seen)
    return total_loss / max(seen, 1), int(seen), num_updates


def _optimizer_step(model: nn.Module, optimizer, scaler, clip_norm: float) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def predict_probs(model: nn.Module, loader, *, device: torch.device, amp: torch.dtype | None, multi_label: bool,
                  loss_fn=None, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities and targets in loader order, and the mean loss (if loss_fn is given)."""
    model.eval()
    probs, targets, total_loss, seen = [], [], 0.0, 0
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images).float()
        if loss_fn is not None:
            total_loss += float(loss_fn(logits, target)) * len(images)
        seen += len(images)
        probs.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)).cpu())
        targets.append(target.cpu())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy(), total_loss / max(seen, 1)


def score(metrics: dict[str, float], metric: str) -> float:
    return metrics["loss"] if metric == "val_loss" else metrics[metric.removeprefix("val_")]


@dataclass
class FitState:
    """Everything a resumed run needs; saved to storage after every epoch."""

    epoch: int = 0  # epochs completed
    num_updates: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int | None = None
    best_source: str | None = None  # "model" or "ema"
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0


@dataclass
class TrainParts:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    loss_fn: nn.Module
    device: torch.device
    amp: torch.dtype | None
    ema: Any = None
    mixup: Any = None
    scaler: Any = None
    channels_last: bool = False
    ranks: Ranks = SINGLE
    step_model: nn.Module | None = None  # what the train step runs: `model`, or DDP's wrapper of it
    trainable: bool | None = None  # the backbone's state step_model was built for


def set_trainable(parts: TrainParts, trainable: bool) -> None:
    """Freeze or thaw the backbone; DDP's wrapper is built again when that changes."""
    if parts.trainable != trainable or parts.step_model is None:
        set_backbone_trainable(parts.model, trainable)
        parts.step_model, parts.trainable = wrap(parts.model, parts.device, parts.ranks), trainable


def build_parts(model: nn.Module, config: TrainingConfig, loss_fn: nn.Module, updates_per_epoch: int,
                clock: Callable[[], float] | None = None, ranks: Ranks = SINGLE) -> TrainParts:
    """Under several ranks `model` may become SyncBatchNorm's copy (core.ml.ranks): use parts.model."""
    device = rank_device(pick_device(config.device), ranks)
    model = prepare_model(model, device, ranks)
    clock = agreed_clock(clock, ranks)
    channels_last = config.model_type in ("efficientnet", "resnet")  # +5–41 % for batch-norm CNNs on CPU
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    amp = autocast_dtype(device, config.mixed_precision)
    ema = None
    if config.use_ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return TrainParts(model, optimizer, LrSchedule(optimizer, config, updates_per_epoch, clock), loss_fn.to(device),
                      device, amp, ema, build_mixup(config), scaler, channels_last, ranks)


def state_to_save(parts: TrainParts, state: FitState) -> dict[str, Any]:
    return {
        "model": parts.model.state_dict(), "ema": parts.ema.module.state_dict() if parts.ema else None,
        "optimizer": parts.optimizer.state_dict(), "schedule": parts.schedule.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler else None, "fit": state.__dict__,
    }


def restore(parts: TrainParts, saved: dict[str, Any]) -> FitState:
    parts.model.load_state_dict(saved["model"])
    if parts.ema is not None and saved.get("ema") is not None:
        parts.ema.module.load_state_dict(saved["ema"])
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.schedule.load_state_dict(saved["schedule"])
    if parts.scaler is not None and saved.get("scaler"):
        parts.scaler.load_state_dict(saved["scaler"])
    return FitState(**saved["fit"])


VAL_SHARE_UNDER_BUDGET = 0.05
"""Under a time budget an epoch is validated only while validation stays within this share of the time
spent (and always at the end): every validation is time the budget does not train. A validation of
640 images (and of the EMA) after each 14 s epoch took 15-20 % of a 15-minute budget on this CPU."""

EMA_MOSTLY_INITIAL = 0.5
"""An EMA with more than this share of its weights from the start of the run is not evaluated."""


def ema_ready(parts: TrainParts, state: FitState, config: TrainingConfig) -> float | None:
    """The EMA's share of early weights (None: no EMA); see core.ml.recipe.ema_early_share."""
    if parts.ema is None:
        return None
    return ema_early_share(state.num_updates, config.ema_decay)


def ema_usable(parts: TrainParts, ema_share: float | None) -> bool:
    """Whether the EMA holds more than the run's first weights (a candidate for the weights kept)."""
    return parts.ema is not None and ema_share is not None and ema_share <= EMA_MOSTLY_INITIAL


def keep_weights(state: FitState, module: nn.Module, epoch: int, source: str) -> None:
    """`module`'s weights become the run's (a CPU copy), taken at `epoch` (0-based) from `source`."""
    state.best_epoch, state.best_source = epoch + 1, source
    state.best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def evaluate_epoch(parts: TrainParts, val_loader, config: TrainingConfig,
                   ema_share: float | None = None) -> tuple[dict[str, float], str, nn.Module]:
    """Scores of the model and of its EMA on val; returns the better one's (metrics, source, module).
    An EMA that still holds mostly the run's first weights is not a candidate."""
    multi = config.task_type == "multi_label"
    candidates = [("model", parts.model)]
    if ema_usable(parts, ema_share):
        candidates.append(("ema", parts.ema.module))
    best = None
    for source, module in candidates:
        probs, targets, loss = predict_probs(module, val_loader, device=parts.device, amp=parts.amp,
                                             multi_label=multi, loss_fn=parts.loss_fn,
                                             channels_last=parts.channels_last)
        if parts.ranks.many:  # each rank scored its shard: the same whole-set metrics on every rank
            shards = parts.ranks.gather((probs, targets, loss * len(probs)))
            probs, targets = unshard([p for p, _, _ in shards]), unshard([t for _, t, _ in shards])
            loss = sum(total for _, _, total in shards) / max(len(probs), 1)
        metrics = {**epoch_metrics(probs, targets, multi_label=multi), "loss": loss}
        if best is None or is_better(config.early_stopping_metric, score(metrics, config.early_stopping_metric),
                                     score(best[0], config.early_stopping_metric)):
            best = (metrics, source, module)
    return best


def fit(parts: TrainParts, loaders: dict[str, Any], config: TrainingConfig, state: FitState, *,
        on_batch: Callable[[int, int, int], None] | None = None,
        on_epoch: Callable[[FitState], None] | None = None, deadline: float | None = None) -> FitState:
    """Train from `state.epoch` to the end, an early stop or the `deadline` (time.monotonic: the
    epoch under way ends there and is evaluated; epochs the recipe fitted to the budget are an estimate,
    and training goes on to the deadline); `state.best_state` holds the best weights. Under a
    deadline, epochs are validated at the cadence VAL_SHARE_UNDER_BUDGET allows (the rest have no val_*
    in their history row); early-stopping patience still counts epochs. Under several ranks every
    decision below is the same on all of them (core.ml.ranks)."""
    fit_started, val_seconds, val_cost, last_evaluated = time.perf_counter(), 0.0, 0.0, state.epoch
    to_deadline = deadline is not None and "epochs" in config.recipe_auto  # epochs were the budget's estimate
    # Trained to a deadline, the LR is annealed by the clock: a stop before it would keep weights taken at
    # a high rate (photos bench: stopped at 76 % of the budget, 0.48 test vs 0.61). The user's patience applies.
    stop_early = config.early_stopping and not (to_deadline and "early_stopping_patience" in config.recipe_auto)
    # For the same reason such a run keeps its last epoch's weights (the better of model and EMA there), not
    # an earlier epoch a noisy val score favoured: scans bench, epoch 12 of 32 kept at val 0.9874 over the
    # last epoch's 0.9796, tested 0.9718 where the hand loop's last weights tested 0.9796.
    keep_final = to_deadline and "early_stopping_patience" in config.recipe_auto
    epoch = state.epoch - 1
    while (epoch := epoch + 1) < config.epochs or to_deadline:  # to a deadline: its epoch ends the loop
        started = time.perf_counter()
        train_loss, seen = _train_epoch(parts, loaders["train"], config, state, epoch, on_batch, deadline)
        train_seconds = time.perf_counter() - started
        out_of_time = deadline is not None and parts.ranks.any(time.monotonic() > deadline)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": parts.optimizer.param_groups[-1]["lr"],
               "train_images_per_s": seen / train_seconds if train_seconds else None, "evaluated": None}
        cheap = parts.ranks.any(
            val_seconds + val_cost <= VAL_SHARE_UNDER_BUDGET * (time.perf_counter() - fit_started))
        last = out_of_time or (epoch + 1 >= config.epochs and not to_deadline)
        if "val" not in loaders:  # train_on_val: nothing held out, the last weights are the run's weights
            keep_last(parts, state, config, epoch)
        elif deadline is None or config.lr_scheduler == "plateau" or last or cheap:
            evaluated_at = time.perf_counter()
            row.update(_validate(parts, loaders["val"], config, state, epoch, last_evaluated,
                                 final=keep_final and out_of_time))
            last_evaluated = epoch + 1
            val_cost = time.perf_counter() - evaluated_at
            val_seconds += val_cost
        else:
            parts.schedule.after_epoch(epoch, None)
        state.epoch = epoch + 1
        state.history.append({**row, "seconds": time.perf_counter() - started})
        if out_of_time:
            state.history[-1]["stopped"] = "time budget"
        if on_epoch:
            on_epoch(state)
        if out_of_time or (stop_early and state.bad_epochs >= config.early_stopping_patience):
            break
    return state


def _train_epoch(parts: TrainParts, loader, config: TrainingConfig, state: FitState, epoch: int,
                 on_batch: Callable[[int, int, int], None] | None, deadline: float | None) -> tuple[float, int]:
    set_trainable(parts, epoch >= config.freeze_backbone_epochs)
    if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler: a new order each epoch
        loader.sampler.set_epoch(epoch)
    train_loss, seen, state.num_updates = train_one_epoch(
        parts.step_model, loader, parts.optimizer, parts.loss_fn, device=parts.device, amp=parts.amp,
        schedule=parts.schedule, num_updates=state.num_updates, accumulation=config.gradient_accumulation_steps,
        clip_norm=config.grad_clip_norm, mixup=parts.mixup, ema=parts.ema, scaler=parts.scaler,
        channels_last=parts.channels_last,
        on_batch=(lambda done, total: on_batch(epoch, done, total)) if on_batch else None,
        deadline=deadline, ranks=parts.ranks,
    )
    return train_loss, seen


def _validate(parts: TrainParts, val_loader, config: TrainingConfig, state: FitState, epoch: int,
              last_evaluated: int, final: bool = False) -> dict[str, Any]:
    """Score the epoch, step a plateau schedule, keep the best weights (`final`: this epoch's, whatever
    came before); the history row's val_* part."""
    ema_share = ema_ready(parts, state, config)
    metrics, source, module = evaluate_epoch(parts, val_loader, config, ema_share)
    value = score(metrics, config.early_stopping_metric)
    parts.schedule.after_epoch(epoch, value)
    improved = is_better(config.early_stopping_metric, value, state.best_score)
    if improved or final:
        state.best_score = value
        keep_weights(state, module, epoch, source)
    state.bad_epochs = 0 if improved else state.bad_epochs + (epoch + 1 - last_evaluated)
    return {"val_loss": metrics["loss"], **{f"val_{k}": v for k, v in metrics.items() if k != "loss"},
            "evaluated": source, "ema_early_share": ema_share}


def keep_last(parts: TrainParts, state: FitState, config: TrainingConfig, epoch: int) -> None:
    """With no val split (train_on_val) the weights kept are the last: the model's, or the EMA's once
    it holds more than the early weights (it averages the annealed end of the schedule)."""
    parts.schedule.after_epoch(epoch, None)
    if ema_usable(parts, ema_ready(parts, state, config)):
        keep_weights(state, parts.ema.module, epoch, "ema")
    else:
        keep_weights(state, parts.model, epoch, "model")


def best_model(parts: TrainParts, state: FitState) -> nn.Module:
    """A copy of the model holding the best weights, in eval mode on the CPU, fp32."""
    model = copy.deepcopy(parts.model).cpu().float().to(memory_format=torch.contiguous_format)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return model.eval()
