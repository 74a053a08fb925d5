"""One training run from a manifest to files on disk: data, model, fit, final evaluation, exports.

No database here: the caller (core.training.runs) passes callbacks for progress and per-epoch
checkpoints, then uploads the files and records the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import InvalidInput
from core.ml import FINISHING_MESSAGE, augment, data, trainer
from core.ml.config import TrainingConfig, parse_config
from core.ml.families import create_model, get_spec
from core.ml.losses import build_loss, multi_label_pos_weight
from core.ml.metrics import final_report
from core.ml.ranks import SINGLE, Ranks, shard, train_sampler

EXPORT_CHECK_IMAGES = 8
"""Real (val/test) images the ONNX and TorchScript outputs are compared on."""


@dataclass
class Artifacts:
    files: dict[str, Path]  # checkpoint, onnx, onnx_data, torchscript, predictions
    preprocessing: dict[str, Any]
    report: dict[str, Any]  # final metrics on the test split (val if there is none)
    evaluated_split: str
    export_check: dict[str, Any]
    state: trainer.FitState
    extra: dict[str, Any] = field(default_factory=dict)


def model_preprocessing(model, config: TrainingConfig) -> dict[str, Any]:
    """Size, mean, std, interpolation, crop_pct, in_chans: saved with the model for inference."""
    cfg = model.pretrained_cfg
    mean, std = list(cfg.get("mean", (0.485, 0.456, 0.406))), list(cfg.get("std", (0.229, 0.224, 0.225)))
    if config.in_chans == 1:  # grayscale: one value each (measured to work for every family)
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    return {"size": config.image_size, "mean": mean, "std": std,
            "interpolation": cfg.get("interpolation", "bicubic") or "bicubic",
            "crop_pct": config.crop_pct or cfg.get("crop_pct", 0.875), "in_chans": config.in_chans}


def build_model(config: TrainingConfig, weights_file: Path | None, finetune_state: dict | None):
    spec = get_spec(config.model_type, config.model_size)
    pretrained = config.pretrained and weights_file is None and finetune_state is None
    try:
        model = create_model(spec, num_classes=config.num_classes, image_size=config.image_size,
                             pretrained=pretrained, weights_file=weights_file,
                             drop_path_rate=config.drop_path_rate, in_chans=config.in_chans)
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained or weights_file:
            raise InvalidInput(
                f"pretrained weights for {spec.timm_name} could not be loaded ({type(exc).__name__}: {exc}); "
                "set pretrained=false, or pretrained_weights=file:… / storage:… / model:…") from None
        raise
    if finetune_state is not None:
        own = model.state_dict()
        kept = {k: v for k, v in finetune_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(kept, strict=False)  # the head is new when the class count differs
    return model


def make_loaders(config: TrainingConfig, splits: dict[str, list[data.Record]], cache: data.DecodedCache,
                 preprocessing: dict[str, Any], seed: int, ranks: Ranks = SINGLE) -> dict[str, Any]:
    """Under several ranks: this rank's share of train (batch_size / world per step: the global batch
    stays batch_size) and its shard of val; test stays whole (rank 0 alone evaluates it)."""
    from torch.utils.data import DataLoader, WeightedRandomSampler

    multi = config.task_type == "multi_label"
    eval_tf = augment.eval_transform(preprocessing)
    train_tf = augment.train_transform(preprocessing, config.augment_settings())
    common = {"num_workers": config.num_workers, "persistent_workers": config.num_workers > 0,
              "pin_memory": torch.cuda.is_available()}
    generator = torch.Generator().manual_seed(seed)
    train_set = data.ManifestDataset(splits["train"], cache, train_tf, num_classes=config.num_classes, multi_label=multi)
    sampler, weights = None, None
    if config.weighted_sampler:
        class_weights = data.class_weights(data.class_counts(splits["train"], config.num_classes), "balanced")
        weights = data.sample_weights(splits["train"], class_weights)
        sampler = WeightedRandomSampler(weights, len(train_set), generator=generator)
    if ranks.many:
        sampler = train_sampler(train_set, ranks, seed, weights)
    loaders = {"train": DataLoader(train_set, batch_size=config.batch_size // ranks.world, shuffle=sampler is None,
                                   sampler=sampler, drop_last=True, generator=generator, **common)}
    for split in ("val", "test"):
        if splits[split]:
            dataset = data.ManifestDataset(splits[split], cache, eval_tf, num_classes=config.num_classes,
                                           multi_label=multi)
            loaders[split] = DataLoader(shard(dataset, ranks) if split == "val" else dataset,
                                        batch_size=config.batch_size, shuffle=False, **common)
    return loaders


def build_loss_for(config: TrainingConfig, train: list[data.Record]):
    counts = data.class_counts(train, config.num_classes)
    multi = config.task_type == "multi_label"
    return build_loss(
        multi_label=multi, label_smoothing=config.label_smoothing or 0.0, focal_gamma=config.focal_loss_gamma,
        weights=None if multi else data.class_weights(counts, config.class_weights), mixing=config.mixing,
        multi_label_loss=config.multi_label_loss,
        pos_weight=multi_label_pos_weight(counts, len(train), config.class_weights) if multi else None,
    )


def run_training(config: TrainingConfig, records: list[data.Record], *, class_names: list[str], storage,
                 workdir: Path, weights_file: Path | None = None, finetune_state: dict | None = None,
                 resume_payload: dict | None = None, exports: tuple[str, ...] = ("onnx", "torchscript"),
                 on_message: Callable[[str, int, int], None] | None = None,
                 on_batch: Callable[[int, int, int], None] | None = None,
                 on_epoch: Callable[[trainer.FitState, dict], None] | None = None,
                 on_config: Callable[[TrainingConfig], None] | None = None,
                 evaluate_and_export: bool = True, ranks: Ranks = SINGLE) -> Artifacts | None:
    """Train one run. A new run first settles its recipe on this machine (device, measured throughput
    for a time budget, the LR range test) and reports the final config through `on_config`.
    evaluate_and_export=False (search trials) stops after fitting: no test split is looked at.
    Under several ranks (core.ml.spawn) rank 0 settles the recipe for all and alone evaluates and
    exports; the other ranks return None."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    splits = data.split_records(records, train_on_val=config.train_on_val)
    files = data.ImageFiles(storage)
    files.fetch_all(records, on_step=(lambda d, t: on_message("downloading images", d, t)) if on_message else None)

    model = build_model(config, weights_file, finetune_state)
    if ranks.many:  # the same first weights, then each rank its own augmentation draws
        torch.manual_seed(config.seed + ranks.rank)
    preprocessing = model_preprocessing(model, config)
    resize = data.eval_resize(config.image_size, preprocessing["crop_pct"])
    cache = data.DecodedCache(files, mode="L" if config.in_chans == 1 else "RGB", max_side=2 * resize,
                              enabled=config.cache_images)
    loaders = make_loaders(config, splits, cache, preprocessing, config.seed, ranks)
    if resume_payload is None:
        settled = ranks.broadcast(settle_config(config, model, loaders, splits, started, on_message, ranks.world)
                                  if ranks.main else None)
        if settled.augment_settings() != config.augment_settings() or settled.batch_size != config.batch_size:
            loaders = make_loaders(settled, splits, cache, preprocessing, config.seed, ranks)
        config = settled
        if on_config:
            on_config(config)
    deadline = started + 60 * config.time_budget_min * BUDGET_FOR_TRAINING if config.time_budget_min else None
    fit_start = time.monotonic()
    clock = (lambda: (time.monotonic() - fit_start) / max(1e-3, deadline - fit_start)) if deadline else None
    parts = trainer.build_parts(model, config, build_loss_for(config, splits["train"]), len(loaders["train"]),
                                clock=clock, ranks=ranks)
    state = trainer.restore(parts, resume_payload) if resume_payload else trainer.FitState()

    def epoch_done(fit_state: trainer.FitState) -> None:
        if on_epoch:
            on_epoch(fit_state, trainer.state_to_save(parts, fit_state))

    state = trainer.fit(parts, loaders, config, state, on_batch=on_batch, on_epoch=epoch_done, deadline=deadline)
    if on_message:  # the run page shows this phase, not a finished "training" bar

        on_message(FINISHING_MESSAGE, 0, 0)
    if not evaluate_and_export:
        return Artifacts({}, preprocessing, {}, "val", {}, state, extra={"config": config})
    if not ranks.main:
        return None
    best = trainer.best_model(parts, state) if not ranks.many else plain_model(config, state)
    artifacts = finish(config, best, state, loaders, splits, preprocessing, class_names, workdir, exports,
                       device=parts.device)
    artifacts.extra["config"] = config
    return artifacts


def evaluate_saved(config: TrainingConfig, records: list[data.Record], fit_state: dict[str, Any], *,
                   class_names: list[str], storage, workdir: Path,
                   exports: tuple[str, ...] = ("onnx", "torchscript")) -> Artifacts:
    """The end of run_training for weights trained earlier (a search's best trial, saved in its
    checkpoint): the final evaluation on the test split, best.pt and the checked exports."""
    splits = data.split_records(records, train_on_val=config.train_on_val)
    files = data.ImageFiles(storage)
    files.fetch_all(records)
    model = build_model(config.model_copy(update={"pretrained": False, "pretrained_weights": None}), None, None)
    state = trainer.FitState(**fit_state)
    model.load_state_dict(state.best_state)
    preprocessing = model_preprocessing(model, config)
    resize = data.eval_resize(config.image_size, preprocessing["crop_pct"])
    cache = data.DecodedCache(files, mode="L" if config.in_chans == 1 else "RGB", max_side=2 * resize,
                              enabled=config.cache_images)
    loaders = make_loaders(config, splits, cache, preprocessing, config.seed)
    artifacts = finish(config, model.eval(), state, loaders, splits, preprocessing, class_names, workdir, exports)
    artifacts.extra["config"] = config
    return artifacts


BUDGET_FOR_TRAINING = 0.97
"""Share of a time budget given to training and validation; the rest is the final evaluation and exports."""


def plain_model(config: TrainingConfig, state: trainer.FitState):
    """The best weights in a freshly built model: after DDP the trained one may hold SyncBatchNorm
    layers, which neither export nor run on one device; the state_dict keys are the same."""
    model = build_model(config.model_copy(update={"pretrained": False, "pretrained_weights": None}), None, None)
    model.load_state_dict(state.best_state)
    return model.eval()


def settle_config(config: TrainingConfig, model, loaders: dict[str, Any], splits: dict[str, list[data.Record]],
                  started: float, on_message: Callable[[str, int, int], None] | None = None,
                  world: int = 1) -> TrainingConfig:
    """The recipe's settings chosen again with this machine's facts: its device, the epochs that fit the
    time budget at the throughput measured here (one rank's, on its 1/world of each epoch), and the LR
    range test's learning rate."""
    from core.ml import probe, recipe

    device = trainer.pick_device(config.device)
    budget_epochs = None
    if config.time_budget_min and "epochs" in config.recipe_auto:
        if on_message:
            on_message("measuring throughput for the time budget", 0, 1)
        probe.warm_cache(loaders["train"].dataset)
        amp = trainer.autocast_dtype(device, config.mixed_precision)
        ips = probe.train_throughput(model, loaders["train"], build_loss_for(config, splits["train"]), device=device,
                                     amp=amp, channels_last=config.model_type in ("efficientnet", "resnet"))
        remaining = 60 * config.time_budget_min * BUDGET_FOR_TRAINING - (time.monotonic() - started)
        budget_epochs = recipe.epochs_for_budget(
            remaining, train_images=len(splits["train"]) // world, val_images=len(splits["val"]) // world,
            batch_size=config.batch_size, train_images_per_s=ips, ema=config.use_ema)
    values = recipe.reresolve(config.model_dump(mode="json"), train_images=len(splits["train"]),
                              num_classes=config.num_classes, device=device.type, budget_epochs=budget_epochs)
    settled = parse_config(values)
    if settled.auto_lr:
        if on_message:
            on_message("LR range test", 0, 1)
        test = probe.lr_range_test(model, settled, loaders["train"], build_loss_for(settled, splits["train"]),
                                   device=device)
        notes = {**settled.recipe_notes, "learning_rate": (
            f"LR range test: lowest loss at {test['lowest_loss_lr']:g}, a tenth of it")}
        settled = parse_config({**settled.model_dump(mode="json"), "learning_rate": test["chosen"],
                                "lr_range_test": test, "recipe_notes": notes})
    return settled


def finish(config: TrainingConfig, best, state: trainer.FitState, loaders: dict[str, Any],
           splits: dict[str, list[data.Record]], preprocessing: dict[str, Any], class_names: list[str],
           workdir: Path, exports: tuple[str, ...], device: torch.device | None = None) -> Artifacts:
    """Final evaluation (on the training device, fp32), per-image probabilities, best.pt and the
    exports (on the CPU, checked on real images)."""
    multi = config.task_type == "multi_label"
    device = device or torch.device("cpu")
    best.to(device)
    predictions = {"class_names": class_names, "splits": {}}
    # a refit on train + val with no test split has nothing held out: no report (the search's trial has its score)
    evaluated = next((split for split in ("test", "val") if split in loaders), None)
    report = None
    for split in ("val", "test"):
        if split not in loaders:
            continue
        probs, targets, _ = trainer.predict_probs(best, loaders[split], device=device, amp=None, multi_label=multi)
        predictions["splits"][split] = {
            "image_ids": [r.image_id for r in splits[split]], "keys": [r.key for r in splits[split]],
            "labels": [list(r.labels) for r in splits[split]], "probs": np.round(probs, 6).tolist(),
        }
        if split == evaluated:
            report = final_report(probs, targets, multi_label=multi, class_names=class_names)
    best.cpu()
    files = {"checkpoint": workdir / "best.pt", "predictions": workdir / "predictions.json"}
    torch.save({"state_dict": best.state_dict(), "timm_name": config.timm_name, "num_classes": config.num_classes,
                "preprocessing": preprocessing, "class_names": class_names, "task_type": config.task_type},
               files["checkpoint"])
    files["predictions"].write_text(json.dumps(predictions))
    export_check = export_all(best, loaders[evaluated or "train"], preprocessing, workdir, exports, files)
    return Artifacts(files, preprocessing, report, evaluated, export_check, state)


def export_all(model, loader, preprocessing: dict[str, Any], workdir: Path, exports: tuple[str, ...],
               files: dict[str, Path]) -> dict[str, Any]:
    from core.ml.export import check_exports, export_onnx, export_torchscript

    size, chans = preprocessing["size"], preprocessing["in_chans"]
    if "onnx" in exports:
        written = export_onnx(model, workdir / "model.onnx", image_size=size, in_chans=chans)
        files["onnx"] = written[0]
        if len(written) > 1:
            files["onnx_data"] = written[1]
    if "torchscript" in exports:
        files["torchscript"] = export_torchscript(model, workdir / "model.ts", image_size=size, in_chans=chans)
    if not exports:
        return {}
    batch = next(iter(loader))[0][:EXPORT_CHECK_IMAGES]
    return check_exports(model, batch, onnx_path=files.get("onnx"), torchscript_path=files.get("torchscript"))
