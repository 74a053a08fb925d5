"""Augmentation presets: named bundles of transform and regularisation settings, shown by the
training wizard (name, description, time factor, expected gain) and applied by the config.

A preset only fills the settings the user left unset; `build_transforms` turns the resolved config
into timm's `create_transform` pipelines (the same eval pipeline is saved with the model and used
for inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    description: str
    training_time_factor: float
    accuracy_boost: str
    settings: dict[str, Any] = field(default_factory=dict)


# RandAugment strings keep "inc1-mmax9": Pillow ≥ 12 refuses posterize to 0 bits, which timm's
# posterize reaches at magnitude 10 (increasing set) or near 0 (plain set).
# Crop scale starts at 0.25–0.35 rather than timm's 0.08: close-up, centred product images lose
# what matters when a crop keeps only 8 % of them (measured, shared/notes/cpu-training.md).
PRESETS: dict[str, Preset] = {
    "sota": Preset(
        "sota", "SOTA (Recommended)", "RandAugment + MixUp + CutMix + Label Smoothing + Random Erasing",
        1.3, "+2-4%",
        {"auto_augment": "rand-m9-mstd0.5-inc1-mmax9", "crop_scale_min": 0.25, "hflip": 0.5, "color_jitter": 0.0,
         "random_erasing": 0.25, "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
    ),
    "heavy": Preset(
        "heavy", "Heavy (Small Datasets)", "TrivialAugmentWide + MixUp/CutMix + strong regularisation",
        1.8, "+4-6%",
        {"auto_augment": "trivialaugment", "crop_scale_min": 0.2, "hflip": 0.5, "color_jitter": 0.0,
         "random_erasing": 0.35, "mixup_alpha": 1.0, "cutmix_alpha": 1.0, "label_smoothing": 0.15},
    ),
    "medium": Preset(
        "medium", "Medium (Balanced)", "Light RandAugment + MixUp, random crops and flips",
        1.2, "+1-2%",
        {"auto_augment": "rand-m6-n2-mstd0.5-inc1-mmax9", "crop_scale_min": 0.35, "hflip": 0.5, "color_jitter": 0.2,
         "random_erasing": 0.1, "mixup_alpha": 0.2, "cutmix_alpha": 0.0, "label_smoothing": 0.1},
    ),
    "light": Preset(
        "light", "Light (Large Datasets)", "Random crops, flips and mild colour jitter",
        1.05, "+0.5-1%",
        {"auto_augment": None, "crop_scale_min": 0.5, "hflip": 0.5, "color_jitter": 0.1,
         "random_erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.1},
    ),
    "crops": Preset(
        "crops", "Crops and Flips (Short Runs)", "Random crops and flips only; no colour jitter, mixing or smoothing",
        1.0, "Short runs from scratch",
        {"auto_augment": None, "crop_scale_min": 0.5, "hflip": 0.5, "color_jitter": 0.0,
         "random_erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.0},
    ),
    "none": Preset(
        "none", "None (Baseline)", "Resize and centre crop only; no mixing, no smoothing",
        1.0, "Baseline",
        {"auto_augment": None, "crop_scale_min": None, "hflip": 0.0, "color_jitter": 0.0,
         "random_erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.0},
    ),
}

PRESET_SETTINGS = tuple(PRESETS["sota"].settings)


def preset_rows() -> list[dict[str, Any]]:
    """The presets as rows for the wizard and the CLI."""
    return [
        {"key": p.key, "name": p.name, "description": p.description,
         "training_time_factor": p.training_time_factor, "accuracy_boost": p.accuracy_boost, **p.settings}
        for p in PRESETS.values()
    ]


def eval_transform(preprocessing: dict[str, Any]):
    """Resize + centre crop + normalise from a model's saved preprocessing (training eval and
    inference share this, so the numbers match)."""
    from timm.data import create_transform  # deferred: heavy

    return create_transform(
        input_size=(preprocessing["in_chans"], preprocessing["size"], preprocessing["size"]),
        is_training=False, interpolation=preprocessing["interpolation"], mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]), crop_pct=preprocessing["crop_pct"],
    )


def train_transform(preprocessing: dict[str, Any], augment: dict[str, Any]):
    """timm's training pipeline with the preset's settings; "trivialaugment" (not in timm) comes from
    torchvision and is placed where timm puts its auto-augment."""
    from timm.data import create_transform
    from torchvision import transforms

    size = preprocessing["size"]
    common = {"interpolation": preprocessing["interpolation"], "mean": tuple(preprocessing["mean"]),
              "std": tuple(preprocessing["std"])}
    if augment.get("crop_scale_min") is None:  # no random crops: the eval pipeline plus flips
        steps = [transforms.RandomHorizontalFlip(augment["hflip"])] if augment.get("hflip") else []
        return transforms.Compose(steps + [eval_transform(preprocessing)])
    trivial = augment.get("auto_augment") == "trivialaugment"
    parts = create_transform(
        input_size=(preprocessing["in_chans"], size, size), is_training=True,
        scale=(augment["crop_scale_min"], 1.0), hflip=augment.get("hflip") or 0.0,
        color_jitter=augment.get("color_jitter") or 0.0,
        auto_augment=None if trivial else augment.get("auto_augment"),
        re_prob=augment.get("random_erasing") or 0.0, separate=trivial, **common,
    )
    if trivial:
        primary, secondary, final = parts
        return transforms.Compose([primary, transforms.TrivialAugmentWide(), final])
    return parts
