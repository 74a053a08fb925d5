"""The optimizer and the learning-rate schedule of a run (timm's create_optimizer_v2 and
create_scheduler_v2, torch's OneCycleLR), paced by a time budget's clock when there is one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from core.ml.config import TrainingConfig


def build_optimizer(model: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(
        model, opt=config.optimizer, lr=config.learning_rate, weight_decay=config.weight_decay, momentum=0.9,
        layer_decay=config.llrd_decay if config.llrd_decay < 1 else None,
    )


class LrSchedule:
    """One interface over timm's schedulers (stepped by update count and epoch) and torch's OneCycleLR
    (timm has no one-cycle).

    `clock` (a time budget's elapsed share, 0–1) makes the schedule run at least as fast as the time: a
    machine slower than its throughput probe (a busy neighbour) still reaches the end of its decay by
    the deadline instead of being cut off at a high learning rate. When the epochs were fitted to the
    budget (not set by the user) the schedule follows the clock alone and the run trains until the
    deadline: a machine faster than its probe does not end early with budget left (11 % of a 3-minute
    budget was left unused on a loaded machine)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainingConfig, updates_per_epoch: int,
                 clock: Callable[[], float] | None = None):
        self.kind = config.lr_scheduler
        self.clock = clock if self.kind in ("cosine", "step") else None
        self.by_clock_only = self.clock is not None and "epochs" in config.recipe_auto
        self.total_updates = config.epochs * updates_per_epoch
        warmup = min(config.warmup_epochs, config.epochs - 1)  # short runs keep at least one epoch of decay
        if self.kind == "one_cycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                total_steps=config.epochs * updates_per_epoch + 1,
                pct_start=max(warmup / config.epochs, 0.05), cycle_momentum=config.optimizer == "sgd",
            )
            return
        from timm.scheduler import create_scheduler_v2

        self.scheduler, _ = create_scheduler_v2(
            optimizer, sched=self.kind, num_epochs=config.epochs, warmup_epochs=warmup,
            warmup_lr=config.learning_rate * 0.01, min_lr=config.min_lr, decay_epochs=max(1, config.epochs // 3),
            patience_epochs=max(1, config.early_stopping_patience // 3),
            plateau_mode="min" if config.early_stopping_metric == "val_loss" else "max",
            step_on_epochs=self.kind == "plateau", updates_per_epoch=updates_per_epoch,
        )

    def after_update(self, num_updates: int) -> None:
        if self.kind == "one_cycle":
            self.scheduler.step()
            return
        if self.by_clock_only:  # epochs fitted to the budget: the run trains to the deadline, paced by it
            num_updates = round(min(1.0, self.clock()) * self.total_updates)
        elif self.clock is not None:
            num_updates = max(num_updates, round(min(1.0, self.clock()) * self.total_updates))
        self.scheduler.step_update(num_updates)

    def after_epoch(self, epoch: int, metric: float) -> None:
        if self.kind != "one_cycle":
            self.scheduler.step(epoch + 1, metric)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
