"""TrainingConfig: the plan's fields, preset filling, and one clear line per bad value."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.ml.augment import PRESETS, preset_rows
from core.ml.config import TrainingConfig, check_fits_dataset, parse_config, parse_set_options

BASE = {"model_type": "convnext", "model_size": "atto", "num_classes": 4}


def test_plan_defaults_and_sota_preset_fill_unset_settings():
    config = parse_config(BASE)
    assert (config.epochs, config.batch_size, config.optimizer, config.lr_scheduler) == (100, 32, "adamw", "cosine")
    assert (config.use_ema, config.llrd_decay, config.augmentation_preset) == (True, 0.9, "sota")
    assert config.mixup_alpha == 0.8 and config.cutmix_alpha == 1.0 and config.label_smoothing == 0.1
    assert config.timm_name == "convnextv2_atto"


def test_explicit_values_win_over_the_preset():
    config = parse_config({**BASE, "augmentation_preset": "heavy", "mixup_alpha": 0.0, "crop_scale_min": 0.9})
    assert config.mixup_alpha == 0.0 and config.crop_scale_min == 0.9
    assert config.cutmix_alpha == PRESETS["heavy"].settings["cutmix_alpha"]


def test_saved_config_parses_back_to_the_same_values():
    config = parse_config({**BASE, "augmentation_preset": "light"})
    assert parse_config(config.model_dump(mode="json")) == config


def test_multi_label_turns_preset_mixing_off_but_refuses_explicit_mixup():
    config = parse_config({**BASE, "task_type": "multi_label"})
    assert config.mixup_alpha == 0.0 and config.cutmix_alpha == 0.0 and not config.mixing
    with pytest.raises(InvalidInput, match="mixup_alpha mixes single labels; set it to 0 for multi-label"):
        parse_config({**BASE, "task_type": "multi_label", "mixup_alpha": 0.4})


@pytest.mark.parametrize(("changes", "message"), [
    ({"model_size": "huge"}, "'convnext' has no size 'huge'"),
    ({"model_type": "resnext"}, "model_type: Input should be 'vit'"),
    ({"model_type": "dinov2", "model_size": "small", "image_size": 100}, "multiple of 14"),
    ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ({"learning_rate": -1}, "learning_rate: Input should be greater than 0"),
    ({"batch_size": 7}, "batch_size 7 must be even"),
    ({"freeze_backbone_epochs": 5, "epochs": 5}, "freeze_backbone_epochs \\(5\\) must be below epochs \\(5\\)"),
    ({"early_stopping_metric": "val_map"}, "val_map is a multi-label metric"),
    ({"num_classes": 1}, "at least 2 classes"),
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
    ({"pretrained_weights": "http://x"}, "must start with file:, storage: or model:"),
    ({"auto_augment": "magic"}, "auto_augment 'magic'"),
])
def test_bad_values_are_named(changes, message):
    with pytest.raises(InvalidInput, match=message):
        parse_config({**BASE, **changes})


def test_several_problems_are_reported_together():
    with pytest.raises(InvalidInput) as info:
        parse_config({**BASE, "epochs": 0, "weight_decay": -1})
    assert "epochs:" in str(info.value) and "weight_decay:" in str(info.value)


def test_dataset_checks_batch_larger_than_train_and_missing_val():
    config = parse_config({**BASE, "batch_size": 32})
    with pytest.raises(InvalidInput, match="batch_size 32 is larger than the train split \\(10 images\\)"):
        check_fits_dataset(config, split_counts={"train": 10, "val": 5})
    with pytest.raises(InvalidInput, match="no val images"):
        check_fits_dataset(config, split_counts={"train": 100, "val": 0})
    with pytest.raises(InvalidInput, match="no train images"):
        check_fits_dataset(config, split_counts={"train": 0, "val": 3})
    check_fits_dataset(config, split_counts={"train": 32, "val": 1})


def test_set_options_read_json_values_and_refuse_unknown_keys():
    assert parse_set_options(["batch_size=16", "pretrained=false", "optimizer=sgd", "crop_pct=0.9"]) == {
        "batch_size": 16, "pretrained": False, "optimizer": "sgd", "crop_pct": 0.9}
    with pytest.raises(InvalidInput, match="--set nosuch: no such training setting"):
        parse_set_options(["nosuch=1"])
    with pytest.raises(InvalidInput, match="expected key=value"):
        parse_set_options(["batch_size"])


def test_presets_carry_wizard_facts():
    rows = {row["key"]: row for row in preset_rows()}
    assert list(rows) == ["sota", "heavy", "medium", "light", "crops", "none"]
    assert rows["crops"]["color_jitter"] == 0.0 and rows["crops"]["label_smoothing"] == 0.0
    assert rows["heavy"]["training_time_factor"] == 1.8 and rows["none"]["accuracy_boost"] == "Baseline"
    assert all(row["description"] for row in rows.values())
    assert set(TrainingConfig.model_fields) >= set(PRESETS["sota"].settings)
