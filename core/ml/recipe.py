"""The training recipe chosen from the facts of a run: one pure function, `choose_recipe`, decides the
settings the user left unset, each with one line of why.

The facts: pretrained weights or not, images per class, image size, the budget in optimizer steps,
the device. The rules (tests/test_ml_recipe.py holds them to this table):

| setting | from scratch | pretrained |
| --- | --- | --- |
| learning_rate | AdamW/LAMB 6e-3 per 256 images, × √(batch/256); SGD 0.1 × batch/256 | a tenth of that |
| llrd_decay | 1 (random layers all learn at the full rate) | 0.9 (earlier layers change less) |
| warmup | 5 % of the optimizer steps (at least 20 when there are 400+) | 3 % |
| EMA | off under 1,000 steps; else decay 1 − 10/steps (time constant a tenth of the run), 0.99–0.9999 | same |
| augmentation | by passes over the data: < 100 crops (crops and flips, no jitter, mixing or smoothing), < 300 medium, else sota | < 100 images/class medium, else light; 100+ passes sota |
| drop_path_rate | 0 under 100 passes, else 0.1 | 0.1 |
| early-stopping patience | half of the epochs, at least 5; no early stop when the epochs are fitted to a time budget (the run trains to the deadline and keeps its last epoch's weights) | same |
| mixed precision | on where the device computes bf16/fp16 natively | same |
| num_workers | 0 on a CPU (decoded-image cache); 4 on a GPU | same |
| crop_pct (evaluation) | 1: the whole image, as it was trained | the model's own (its weights' convention) |

Why: the old defaults were those of fine-tuning a pretrained ImageNet model on a GPU for hundreds of
epochs (lr 1e-4, 5 warmup epochs, EMA 0.9999, MixUp + CutMix + RandAugment): from scratch on a CPU
budget of a few hundred steps a model learned nothing (issue 16). That recipe stays as the "full"
recipe (`FULL_RECIPE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.ml.augment import PRESET_SETTINGS, PRESETS
from core.ml.config import TrainingConfig

RECIPE_FIELDS = ("learning_rate", "weight_decay", "llrd_decay", "warmup_epochs", "use_ema", "ema_decay",
                 "augmentation_preset", "drop_path_rate", "early_stopping_patience", "mixed_precision",
                 "num_workers", "crop_pct")
"""The settings a recipe decides; any of them set by the user is kept as given."""

FULL_RECIPE: dict[str, Any] = {
    "learning_rate": 1e-4, "weight_decay": 0.05, "llrd_decay": 0.9, "warmup_epochs": 5, "use_ema": True,
    "ema_decay": 0.9999, "augmentation_preset": "sota", "drop_path_rate": 0.1, "early_stopping_patience": 15,
    "mixed_precision": True, "num_workers": 0, "crop_pct": None,
}
"""The full fine-tuning recipe (pretrained ImageNet weights, a GPU, hundreds of epochs): the old defaults."""

SCRATCH_CROPS_ONLY_PASSES = 100
"""From scratch, below this many passes over the data only crops and flips pay: bench_recipe at 15 min
(~60 passes of resnet18 on 2,000 grayscale crops of scans): the medium preset (RandAugment, MixUp 0.2,
colour jitter, random erasing, label smoothing, drop path) reached 0.962, a loop with crops and flips 0.989."""

EMA_MIN_STEPS = 1000
"""Below this many optimizer steps the EMA is off: it would trail the model by most of the run."""


@dataclass(frozen=True)
class RecipeFacts:
    pretrained: bool
    train_images: int
    num_classes: int
    image_size: int
    batch_size: int
    epochs: int
    device: str = "cpu"  # "cpu" or "cuda"
    optimizer: str = "adamw"
    accumulation: int = 1
    fast_low_precision: bool = False  # the device computes bf16/fp16 natively (CPU: AVX512-BF16/AMX)

    @property
    def updates_per_epoch(self) -> int:
        return max(1, (self.train_images // max(1, self.batch_size)) // max(1, self.accumulation))

    @property
    def steps(self) -> int:
        return self.epochs * self.updates_per_epoch

    @property
    def images_per_class(self) -> float:
        return self.train_images / max(1, self.num_classes)

    @property
    def passes(self) -> float:
        """Epochs, the count of passes over the training images."""
        return float(self.epochs)


@dataclass
class Recipe:
    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, value: Any, why: str) -> None:
        self.values[name], self.reasons[name] = value, why

    def rows(self) -> list[dict[str, Any]]:
        return [{"setting": k, "value": v, "why": self.reasons[k]} for k, v in self.values.items()]


def choose_recipe(facts: RecipeFacts) -> Recipe:
    """Every RECIPE_FIELDS value for these facts, each with its reason."""
    recipe = Recipe()
    _learning_rate(recipe, facts)
    _schedule(recipe, facts)
    _ema(recipe, facts)
    _augmentation(recipe, facts)
    _device(recipe, facts)
    return recipe


def full_recipe() -> Recipe:
    recipe = Recipe()
    for name, value in FULL_RECIPE.items():
        recipe.set(name, value, "the full fine-tuning recipe (pretrained weights, GPU, long schedule)")
    return recipe


def _learning_rate(recipe: Recipe, facts: RecipeFacts) -> None:
    batch = facts.batch_size * facts.accumulation
    start = "pretrained weights" if facts.pretrained else "from scratch"
    if facts.optimizer == "sgd":
        base = 0.1 if not facts.pretrained else 0.01
        lr = base * batch / 256
        why = f"SGD {start}: {base:g} per 256 images, scaled linearly to batch {batch}"
    else:
        base = 6e-3 if not facts.pretrained else 6e-4
        lr = base * math.sqrt(batch / 256)
        why = f"{facts.optimizer} {start}: {base:g} per 256 images, scaled by √(batch/256) to batch {batch}"
    recipe.set("learning_rate", float(f"{lr:.2g}"), why)
    if facts.optimizer == "sgd":
        recipe.set("weight_decay", 1e-4, "SGD: the usual 1e-4")
    else:
        recipe.set("weight_decay", 0.05, f"{facts.optimizer}: decoupled weight decay 0.05")
    if facts.pretrained:
        recipe.set("llrd_decay", 0.9, "pretrained: earlier layers hold general features and change less")
    else:
        recipe.set("llrd_decay", 1.0, "from scratch: random layers all learn at the full rate")


def _schedule(recipe: Recipe, facts: RecipeFacts) -> None:
    steps = facts.steps
    share = 0.03 if facts.pretrained else 0.05
    warmup_steps = round(share * steps)
    if steps >= 400:
        warmup_steps = max(warmup_steps, 20)
    epochs = round(warmup_steps / facts.updates_per_epoch, 2)
    recipe.set("warmup_epochs", epochs, f"{share:.0%} of the {steps:,} optimizer steps ({warmup_steps} steps)")
    patience = max(5, math.ceil(facts.epochs / 2))  # a decaying schedule often peaks late: stop only on a long stall
    recipe.set("early_stopping_patience", patience, f"half of the {facts.epochs} epochs, at least 5")


def _ema(recipe: Recipe, facts: RecipeFacts) -> None:
    steps = facts.steps
    if steps < EMA_MIN_STEPS:
        recipe.set("use_ema", False, f"{steps:,} optimizer steps: too few for an average of weights to pay")
        recipe.set("ema_decay", FULL_RECIPE["ema_decay"], "unused (EMA off)")
        return
    decay = min(0.9999, max(0.99, 1 - 10 / steps))
    recipe.set("use_ema", True, f"{steps:,} optimizer steps: the average of recent weights generalises better")
    recipe.set("ema_decay", float(f"{decay:.5g}"),
               f"time constant {1 / (1 - decay):,.0f} steps, a tenth of the run (warmed up from 0)")


def ema_decay_at(step: int, decay: float, *, warmup: bool = True, warmup_power: float = 2 / 3) -> float:
    """The decay timm's ModelEmaV3 applies at update `step` (1-based; gamma 1, no update_after_step)."""
    warm = max(0, step - 1)
    if warm <= 0:
        return 0.0
    return min(decay, 1 - (1 + warm) ** -warmup_power) if warmup else decay


def ema_early_share(steps: int, decay: float, *, warmup: bool = True, early: float = 0.1) -> float:
    """The share of an EMA's weights that comes from the initial weights and the first `early` part
    of the `steps` updates so far. Above one half, the EMA is "mostly initial" and is not evaluated."""
    cutoff = math.floor(early * steps)
    share = 1.0  # before any update the EMA is the initial weights
    for step in range(1, steps + 1):
        d = ema_decay_at(step, decay, warmup=warmup)
        share = share * d + ((1 - d) if step <= cutoff else 0.0)
    return share


def _augmentation(recipe: Recipe, facts: RecipeFacts) -> None:
    passes, per_class = facts.passes, facts.images_per_class
    if facts.pretrained:
        if passes >= 100:
            preset, why = "sota", f"{passes:.0f} passes over the data: long enough for mixing and RandAugment to pay"
        elif per_class < 100:
            preset, why = "medium", f"{per_class:.0f} images per class on pretrained weights: some augmentation against over-fitting"
        else:
            preset, why = "light", f"{per_class:.0f} images per class on pretrained weights: crops and flips suffice"
        recipe.set("drop_path_rate", 0.1, "pretrained: the stochastic depth the weights were trained with")
        recipe.set("crop_pct", None, "pretrained: the evaluation crop the weights were made with")
    else:
        if passes < SCRATCH_CROPS_ONLY_PASSES:
            preset, why = "crops", (f"{passes:.0f} passes from scratch: too short for colour jitter, RandAugment, "
                                    "mixing or label smoothing to pay; crops and flips only")
        elif passes < 300:
            preset, why = "medium", f"{passes:.0f} passes from scratch: light RandAugment and MixUp"
        else:
            preset, why = "sota", f"{passes:.0f} passes from scratch: long enough for MixUp, CutMix and RandAugment"
        recipe.set("crop_pct", 1.0, "from scratch: evaluate the whole image, as it was trained (no pretrained "
                   "convention to match; +0.6 points measured on the scans bench)")
        if passes < SCRATCH_CROPS_ONLY_PASSES:
            recipe.set("drop_path_rate", 0.0, f"{passes:.0f} passes from scratch: no stochastic depth")
        else:
            recipe.set("drop_path_rate", 0.1, f"{passes:.0f} passes: some stochastic depth against over-fitting")
    recipe.set("augmentation_preset", preset, why)


def _device(recipe: Recipe, facts: RecipeFacts) -> None:
    if facts.device == "cuda":
        recipe.set("mixed_precision", True, "GPU: bf16/fp16 autocast")
        recipe.set("num_workers", 4, "GPU: loader workers keep it fed")
        return
    if facts.fast_low_precision:
        recipe.set("mixed_precision", True, "this CPU computes bf16 natively (+22–57 % measured)")
    else:
        recipe.set("mixed_precision", False, "this CPU emulates bf16: slower than fp32")
    recipe.set("num_workers", 0, "CPU: the decoded-image cache in the training process is fastest")


# ---------------------------------------------------------------- applying it to a run's settings


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """bf16 autocast pays on CPUs with native bf16 (AVX512-BF16/AMX: +22–57 % measured); on AVX2
    it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_visible() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (the app and CLI start fast)."""
    return Path("/proc/driver/nvidia/version").exists()


def device_fact(preference: str) -> str:
    return "cuda" if preference == "cuda" or (preference == "auto" and gpu_visible()) else "cpu"


def facts_for(values: dict[str, Any], *, train_images: int, num_classes: int, device: str) -> RecipeFacts:
    """The facts of a run from its settings (the config's defaults where unset) and its data."""
    def get(name: str) -> Any:
        return values[name] if values.get(name) is not None else TrainingConfig.model_fields[name].default

    return RecipeFacts(
        pretrained=bool(get("pretrained")) or bool(values.get("pretrained_weights")),
        train_images=train_images, num_classes=num_classes, image_size=int(get("image_size")),
        batch_size=int(get("batch_size")), epochs=int(get("epochs")), device=device,
        optimizer=str(get("optimizer")), accumulation=int(get("gradient_accumulation_steps")),
        fast_low_precision=device == "cuda" or cpu_has_bf16(),
    )


def apply_recipe(values: dict[str, Any], *, train_images: int, num_classes: int, device: str,
                 budget_epochs: tuple[int, str] | None = None) -> dict[str, Any]:
    """`values` with every unset RECIPE_FIELDS setting filled by the recipe (auto) or the full recipe,
    and the record: `recipe_auto` (what the recipe chose), `recipe_notes` (why, per setting).

    budget_epochs: (epochs, why) fitted to a time budget, used when the user set no epochs."""
    values = dict(values)
    notes: dict[str, str] = {}
    auto: list[str] = []
    if budget_epochs is not None and values.get("epochs") is None:
        values["epochs"], notes["epochs"] = budget_epochs
        auto.append("epochs")
    facts = facts_for(values, train_images=train_images, num_classes=num_classes, device=device)
    recipe = full_recipe() if values.get("recipe") == "full" else choose_recipe(facts)
    for name in RECIPE_FIELDS:
        if values.get(name) is None:
            values[name] = recipe.values[name]
            notes[name] = recipe.reasons[name]
            auto.append(name)
        else:
            notes[name] = "set by you"
    if values.get("auto_lr"):
        notes["learning_rate"] = "found by an LR range test at the start of training"
    if "epochs" in auto and "early_stopping_patience" in auto:
        notes["early_stopping_patience"] = ("unused: the run trains to its time budget's deadline, the learning "
                                            "rate annealed by the clock (an early stop would keep a high rate), "
                                            "and keeps its last epoch's weights")
    values["recipe_auto"], values["recipe_notes"] = auto, notes
    return values


def epochs_for_budget(budget_s: float, *, train_images: int, val_images: int, batch_size: int,
                      train_images_per_s: float, ema: bool) -> tuple[int, str]:
    """Whole epochs of training and validation that fit in `budget_s` at the given throughput
    (validation is forward only, ~3× faster; the EMA doubles it)."""
    used = (train_images // max(1, batch_size)) * batch_size
    per_epoch = used / train_images_per_s + val_images * (2 if ema else 1) / (3 * train_images_per_s)
    epochs = max(1, int(budget_s * 0.97 // per_epoch))  # 3 %: the final evaluation and checks
    return epochs, (f"{budget_s / 60:g} min at {train_images_per_s:,.0f} img/s: {per_epoch:.1f} s an epoch "
                    f"with validation → {epochs} epochs")


def reresolve(config_values: dict[str, Any], *, train_images: int, num_classes: int, device: str,
              budget_epochs: tuple[int, str] | None = None) -> dict[str, Any]:
    """Choose the recipe's settings of a run again from facts known only on the worker (its device,
    the throughput it measured); the user's settings stay as they were."""
    auto = set(config_values.get("recipe_auto") or [])
    values = {k: v for k, v in config_values.items() if k not in auto and k not in ("recipe_auto", "recipe_notes")}
    if "augmentation_preset" in auto:  # the old preset's fill-ins go with it
        old = PRESETS[config_values["augmentation_preset"]].settings
        for key in PRESET_SETTINGS:
            if key in values and values[key] == old[key]:
                values.pop(key)
    if "epochs" in auto and budget_epochs is None:
        budget_epochs = (config_values["epochs"], (config_values.get("recipe_notes") or {}).get("epochs", ""))
    return apply_recipe(values, train_images=train_images, num_classes=num_classes, device=device,
                        budget_epochs=budget_epochs)
