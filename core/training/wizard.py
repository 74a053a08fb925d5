"""The training wizard's rules, without Streamlit: the choices it offers (model families, augmentation
presets, the settings the recipe chooses), the values a new or cloned run starts from, which step
each setting belongs to, and every problem of a config so far mapped to the step that fixes it.
ui/training_wizard.py draws the steps; the checks are the engine's own (TrainingConfig,
check_fits_dataset, the recipe)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.datasets.versions import version_summary
from core.errors import UserError
from core.ids import as_uuid
from core.ml.augment import PRESET_SETTINGS, PRESETS
from core.ml.config import TrainingConfig, check_fits_dataset
from core.ml.families import FAMILIES, catalogue
from core.ml.recipe import RECIPE_FIELDS
from core.models import ClsDatasetVersion
from core.training.runs import get_run, recipe_values

__all__ = ["FAMILIES", "PRESETS", "RECIPE_FIELDS", "STEPS", "catalogue", "clone_values", "config_values",
           "default_values", "field_default", "fitted_batch_size", "problems", "recipe_preview", "start_values",
           "version_by_id"]

STEPS = ("Data", "Model", "Training", "Augmentation", "Advanced", "Review")
STEP_FIELDS: tuple[tuple[str, ...], ...] = (
    (),
    ("model_type", "model_size", "pretrained", "pretrained_weights"),
    ("epochs", "batch_size", "optimizer", "learning_rate", "weight_decay", "lr_scheduler", "warmup_epochs",
     "llrd_decay", "recipe", "auto_lr", "time_budget_min"),
    ("augmentation_preset", "image_size"),
    ("use_ema", "ema_decay", "mixed_precision", "gradient_accumulation_steps", "label_smoothing", "mixup_alpha",
     "cutmix_alpha", "drop_path_rate", "class_weights", "focal_loss_gamma", "early_stopping",
     "early_stopping_patience", "early_stopping_metric", "freeze_backbone_epochs"),
    (),
)
"""The settings each step shows: a problem with a setting blocks Next at its step."""

# Defaults a newcomer can accept: the config's own, with the smallest production model and a
# schedule that finishes in reasonable time; early stopping ends it sooner when val F1 stalls.
WIZARD_DEFAULTS = {"model_type": "convnext", "model_size": "atto", "epochs": 30}
REGULARISATION = ("label_smoothing", "mixup_alpha", "cutmix_alpha")
"""Preset settings the user may override as a group (the override switch)."""


def field_default(name: str) -> Any:
    """The engine's default of a TrainingConfig setting."""
    return TrainingConfig.model_fields[name].default


def default_values() -> dict[str, Any]:
    values = {name: field.default for name, field in TrainingConfig.model_fields.items() if not field.is_required()}
    return {**values, **WIZARD_DEFAULTS, **dict.fromkeys(RECIPE_FIELDS)}  # None: the recipe chooses


def start_values(values: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool, str]:
    """(values, override, pretrained source) a wizard starts from: the defaults under `values` (a
    clone's config), with what the recipe or the preset chose handed back to them."""
    values = {**default_values(), **(values or {})}
    for key in values.pop("recipe_auto", None) or []:  # a clone lets the recipe choose what it chose
        values[key] = None
    for key in ("recipe_notes", "lr_range_test"):
        values.pop(key, None)
    if values.get("warmup_epochs") is not None:
        values["warmup_epochs"] = float(values["warmup_epochs"])
    preset = PRESETS[values["augmentation_preset"] or "light"].settings
    override = any(values.get(k) not in (None, preset[k]) for k in REGULARISATION)
    for key in PRESET_SETTINGS:  # a clone's preset-filled values go back to "the preset's value"
        if values.get(key) == preset[key] and not (override and key in REGULARISATION):
            values[key] = None
    source = "scratch" if not values.get("pretrained") else (values.get("pretrained_weights") or "hub:").split(":", 1)[0]
    return values, override, source


def clone_values(*, session: Session, run_id) -> dict[str, Any]:
    """What a clone of a run starts from: its config, version, dataset and a name."""
    run = get_run(session=session, run_id=run_id)
    return {"values": {k: v for k, v in (run.config or {}).items() if k in TrainingConfig.model_fields},
            "version_id": str(run.dataset_version_id) if run.dataset_version_id else None,
            "dataset_id": str(run.dataset_id) if run.dataset_id else None, "name": f"{run.name} (copy)"}


def version_by_id(*, session: Session, version_id) -> dict[str, Any] | None:
    """A version's summary (counts, classes), or None when it is gone."""
    row = session.get(ClsDatasetVersion, as_uuid(version_id, "version"))
    return version_summary(row) if row is not None else None


def fitted_batch_size(batch_size: int, train_images: int) -> int:
    """A newcomer's default batch must fit a small train split (even, for mixup pairs)."""
    if train_images >= 2 and batch_size > train_images:
        return max(2, train_images - train_images % 2)
    return batch_size


def config_values(values: dict[str, Any], override: bool, version: dict[str, Any] | None) -> dict[str, Any]:
    """The config the wizard's values stand for: unset settings left to the recipe and the preset."""
    values = dict(values)
    for key in RECIPE_FIELDS:  # unset: the recipe chooses
        if values.get(key) is None:
            values.pop(key, None)
    for key in PRESET_SETTINGS:
        if values.get(key) is None or (key in REGULARISATION and not override):
            values.pop(key, None)
    if version is not None:
        values["task_type"], values["num_classes"] = version["task_type"], version["class_count"]
    return values


def step_of(field: str | None, text: str) -> int:
    """The step a problem belongs to: its field's, else the last step whose fields it names."""
    for index, fields in enumerate(STEP_FIELDS):
        if field in fields:
            return index
    named = [index for index, fields in enumerate(STEP_FIELDS) if any(f in text for f in fields)]
    return max(named) if named else 1


def problems(values: dict[str, Any], override: bool,
             version: dict[str, Any] | None) -> tuple[list[tuple[int, str]], TrainingConfig | None]:
    """(step, message) for everything wrong with the config so far, and the parsed config if valid."""
    if version is None:
        return [(0, "Choose a dataset version to train on (or create one from the current labels).")], None
    split_counts = version["split_counts"] or {}
    try:
        parsed = TrainingConfig(**recipe_values(config_values(values, override, version), split_counts=split_counts))
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or None
            message = error["msg"].removeprefix("Value error, ")
            found.append((step_of(field, message), f"{field}: {message}" if field else message))
        return found, None
    except UserError as exc:  # an unknown size or an image size that does not suit the model
        return [(step_of(None, str(exc)), str(exc))], None
    try:
        check_fits_dataset(parsed, split_counts=split_counts)
    except UserError as exc:
        return [(2 if "batch_size" in str(exc) else 0, str(exc))], parsed
    return [], parsed


def recipe_preview(values: dict[str, Any], version: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the recipe would choose for these values on this version (None before a version, or
    while the values do not parse yet)."""
    if version is None:
        return None
    try:
        return recipe_values(values, split_counts=version["split_counts"] or {})
    except UserError:
        return None

