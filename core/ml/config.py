"""TrainingConfig: the plan's ClassificationTrainingConfig field for field, plus the few settings the
engine needs beyond it (each marked). Bad values raise InvalidInput with one line per field.

Fields left unset (None) that belong to an augmentation preset take the preset's value.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import InvalidInput
from core.ml.augment import PRESET_SETTINGS, PRESETS
from core.ml.families import check_image_size, get_spec

METRICS = ("val_f1", "val_accuracy", "val_top5", "val_loss", "val_map")


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Model
    model_type: Literal["vit", "convnext", "efficientnet", "swin", "dinov2", "clip", "resnet"]
    model_size: str
    pretrained: bool = True
    # Beyond the plan: where pretrained weights come from instead of timm's hub:
    # "file:/path/weights.safetensors", "storage:<key>" or "model:<trained model id>" (fine-tune).
    pretrained_weights: str | None = None
    freeze_backbone_epochs: int = Field(0, ge=0)

    # Task
    task_type: Literal["single_label", "multi_label"] = "single_label"
    num_classes: int = Field(ge=1, le=100_000)

    # Training
    epochs: int = Field(100, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)

    # Optimizer
    optimizer: Literal["adamw", "sgd", "lamb"] = "adamw"
    learning_rate: float = Field(1e-4, gt=0, le=10)
    weight_decay: float = Field(0.05, ge=0, le=10)

    # SOTA features
    use_ema: bool = True
    ema_decay: float = Field(0.9999, gt=0, lt=1)
    mixed_precision: bool = True
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)

    # LR schedule
    lr_scheduler: Literal["cosine", "step", "plateau", "one_cycle"] = "cosine"
    warmup_epochs: float = Field(5, ge=0)  # fractions allowed: the recipe sets a share of the steps
    llrd_decay: float = Field(0.9, gt=0, le=1)  # layer-wise LR decay; 1 turns it off

    # Regularisation (None: the preset's value)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    mixup_alpha: float | None = Field(None, ge=0)
    cutmix_alpha: float | None = Field(None, ge=0)
    drop_path_rate: float = Field(0.1, ge=0, lt=1)

    # Augmentation
    augmentation_preset: Literal["sota", "heavy", "medium", "light", "crops", "none"] = "sota"
    image_size: int = Field(224, ge=16, le=2048)

    # Class imbalance
    class_weights: Literal["balanced", "sqrt", "none"] = "balanced"
    focal_loss_gamma: float = Field(0.0, ge=0, le=10)

    # Early stopping
    early_stopping: bool = True
    early_stopping_patience: int = Field(15, ge=1)
    early_stopping_metric: Literal["val_f1", "val_accuracy", "val_top5", "val_loss", "val_map"] = "val_f1"

    # Beyond the plan: transform settings a preset fills (None: the preset's value)
    auto_augment: str | None = None
    crop_scale_min: float | None = Field(None, gt=0, le=1)
    hflip: float | None = Field(None, ge=0, le=1)
    color_jitter: float | None = Field(None, ge=0, le=1)
    random_erasing: float | None = Field(None, ge=0, le=1)
    crop_pct: float | None = Field(None, gt=0, le=1)  # eval centre crop; None: the model's default
    in_chans: Literal[1, 3] = 3  # 1 trains on grayscale with a one-value mean/std
    # Beyond the plan: the rest of the recipe
    weighted_sampler: bool = False
    multi_label_loss: Literal["bce", "asymmetric"] = "bce"
    grad_clip_norm: float = Field(0.0, ge=0)  # 0: no clipping
    min_lr: float = Field(1e-6, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1, le=64)  # >1: DDP, one process per device (core.ml.spawn); batch_size is global
    num_workers: int = Field(0, ge=0, le=64)  # 0 + the decoded-image cache is fastest on small CPUs
    cache_images: bool = True
    export_formats: list[Literal["onnx", "torchscript"]] = ["onnx", "torchscript"]
    # Beyond the plan: the recipe (core.ml.recipe) and budgets
    recipe: Literal["auto", "full"] = "auto"  # auto: chosen from the facts; full: the fine-tuning recipe
    recipe_auto: list[str] = []  # the settings the recipe chose (re-chosen on the worker from measured facts)
    recipe_notes: dict[str, str] = {}  # why, per setting
    time_budget_min: float | None = Field(None, gt=0, le=7 * 24 * 60)  # wall-clock cap; sets epochs if unset
    auto_lr: bool = False  # an LR range test picks learning_rate before training
    lr_range_test: dict[str, Any] | None = None  # its curve and choice, recorded on the run
    # A search's refit: the settings were chosen on the val split, so it trains on train + val and keeps
    # its last weights (nothing held out to pick an epoch; the schedule has annealed by then)
    train_on_val: bool = False

    @model_validator(mode="after")
    def _check_and_fill(self) -> TrainingConfig:
        spec = get_spec(self.model_type, self.model_size)
        check_image_size(spec, self.image_size)
        if self.auto_augment not in (None, "trivialaugment") and not self.auto_augment.startswith(("rand", "augmix")):
            raise ValueError(f"auto_augment {self.auto_augment!r}: use rand-…, augmix-… or trivialaugment")
        if self.task_type == "single_label" and self.num_classes < 2:
            raise ValueError("single-label training needs at least 2 classes")
        multi = self.task_type == "multi_label"
        for name in ("mixup_alpha", "cutmix_alpha"):
            if multi and name in self.model_fields_set and (getattr(self, name) or 0) > 0:
                raise ValueError(f"{name} mixes single labels; set it to 0 for multi-label training")
        preset = PRESETS[self.augmentation_preset].settings
        for name in PRESET_SETTINGS:
            if name not in self.model_fields_set:
                object.__setattr__(self, name, preset[name])
        if multi:
            object.__setattr__(self, "mixup_alpha", 0.0)
            object.__setattr__(self, "cutmix_alpha", 0.0)
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} is split evenly over {self.devices} devices: "
                             f"use a multiple of {self.devices}")
        if self.mixing and (self.batch_size // self.devices) % 2:
            raise ValueError(f"mixup/cutmix pair images within a batch: batch_size {self.batch_size} must be even"
                             + (f" on each of the {self.devices} devices" if self.devices > 1 else ""))
        if self.freeze_backbone_epochs >= self.epochs:
            raise ValueError(
                f"freeze_backbone_epochs ({self.freeze_backbone_epochs}) must be below epochs ({self.epochs})"
            )
        if multi and self.early_stopping_metric in ("val_accuracy", "val_top5"):
            raise ValueError(f"{self.early_stopping_metric} is a single-label metric; use val_f1, val_map or val_loss")
        if self.early_stopping_metric == "val_top5" and self.num_classes <= 5:
            raise ValueError(f"val_top5 is measured only with more than 5 classes (this version has "
                             f"{self.num_classes}); use val_f1, val_accuracy or val_loss")
        if not multi and self.early_stopping_metric == "val_map":
            raise ValueError("val_map is a multi-label metric; use val_f1, val_accuracy, val_top5 or val_loss")
        if self.train_on_val and self.lr_scheduler == "plateau":
            raise ValueError("train_on_val holds no val split out, and the plateau schedule steps on its score: "
                             "use cosine, step or one_cycle")
        if self.pretrained_weights and not self.pretrained_weights.startswith(("file:", "storage:", "model:")):
            raise ValueError("pretrained_weights must start with file:, storage: or model:")
        return self

    @property
    def mixing(self) -> bool:
        return (self.mixup_alpha or 0) > 0 or (self.cutmix_alpha or 0) > 0

    @property
    def timm_name(self) -> str:
        return get_spec(self.model_type, self.model_size).timm_name

    def augment_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PRESET_SETTINGS}


def parse_config(values: dict[str, Any]) -> TrainingConfig:
    """Validate a config dict; every problem becomes one line `field: message`."""
    try:
        return TrainingConfig(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "config"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{field}: {message}")
        raise InvalidInput("invalid training config: " + "; ".join(lines)) from None
    except InvalidInput as exc:  # raised by get_spec / check_image_size inside the validator
        raise InvalidInput(f"invalid training config: {exc}") from None


def check_fits_dataset(config: TrainingConfig, *, split_counts: dict[str, int]) -> None:
    """Problems that only the dataset version reveals: a batch larger than the train split, no val split."""
    train, val = split_counts.get("train", 0), split_counts.get("val", 0)
    if train == 0:
        raise InvalidInput("the version has no train images; assign splits and create a new version")
    if val == 0:
        raise InvalidInput("the version has no val images: training needs a val split to pick the best epoch")
    if config.batch_size > train:
        raise InvalidInput(f"batch_size {config.batch_size} is larger than the train split ({train} images)")
    if config.devices > val and not config.train_on_val:
        raise InvalidInput(f"devices={config.devices} shard the val split ({val} images): it needs one image per device")


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value`: the value is read as JSON (numbers, true/false, null) or else as text."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--set {pair!r}: expected key=value")
        key = key.strip()
        if key not in TrainingConfig.model_fields:
            raise InvalidInput(f"--set {key}: no such training setting")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values
