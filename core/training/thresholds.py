"""Confidence thresholds of a trained model, tuned on its stored validation probabilities.

Multi-label: each class fires when its probability reaches its own threshold; the F1-optimal
threshold per class comes from scikit-learn's precision-recall curve. Single-label: the model
predicts its arg-max class, or abstains when the top probability is below one abstain threshold;
the suggested one is the lowest that keeps the accuracy of the answered images at a target.

Saved in `cls_trained_models.thresholds` as {"abstain": t} (single-label) or
{"per_class": {class name: t}} (multi-label), plus how they were chosen; prediction reads them.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput, NotFound
from core.models import ClsTrainedModel
from core.permissions import requires
from core.users import User

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
"""Thresholds at which the explorer draws its curves (0.00 … 1.00)."""

DEFAULT_TARGET_ACCURACY = 0.9
"""Accuracy on answered images the suggested abstain threshold keeps (single-label)."""

MIN_ANSWERED_SHARE = 0.1
"""A suggested abstain threshold answers at least this share of the images: one that keeps its target
by answering a handful (or none) says nothing about the model, so none is suggested then, with why."""


@dataclass
class SplitPredictions:
    """Class probabilities of one split in the model's class order, with the true labels."""

    split: str
    image_ids: list[str]
    probs: np.ndarray  # (n, classes)
    targets: np.ndarray  # (n,) class indices, or (n, classes) multi-hot for multi-label
    multi_label: bool
    keys: list[str] = field(default_factory=list)  # storage keys of the original images

    @property
    def predicted(self) -> np.ndarray:
        return (self.probs >= 0.5).astype(int) if self.multi_label else self.probs.argmax(axis=1)

    def wrong(self) -> np.ndarray:
        """Indices of the misclassified images (multi-label: any class wrong at 0.5)."""
        if self.multi_label:
            return np.flatnonzero((self.predicted != self.targets).any(axis=1))
        return np.flatnonzero(self.predicted != self.targets)


def load_predictions(*, storage, model: ClsTrainedModel) -> dict[str, SplitPredictions]:
    """The per-image probabilities the engine stored with the model (core.ml.pipeline.finish):
    predictions.json = {"class_names": [...], "splits": {split: {"image_ids", "keys", "labels", "probs"}}},
    labels being class indices per image."""
    if not model.predictions_key:
        raise NotFound(f"model {model.name!r} has no stored predictions (it was trained before they were kept)")
    body = json.loads(storage.get(model.predictions_key))
    names = list(model.class_names)
    if list(body.get("class_names") or names) != names:
        raise Conflict(f"the stored predictions of {model.name!r} name other classes than the model")
    multi, classes = model.task_type == "multi_label", len(names)
    result = {}
    for split, part in (body.get("splits") or {}).items():
        probs = np.asarray(part["probs"], dtype=float).reshape(-1, classes)
        labels = part["labels"]
        if multi:
            targets = np.zeros((len(labels), classes), dtype=int)
            for row, indices in enumerate(labels):
                targets[row, list(indices)] = 1
        else:
            targets = np.asarray([indices[0] for indices in labels], dtype=int)
        result[split] = SplitPredictions(split, [str(i) for i in part["image_ids"]], probs, targets, multi,
                                         list(part.get("keys") or []))
    return result


# ---------------------------------------------------------------- curves


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (undefined, drawn as a gap)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    p, r = np.nan_to_num(precision), np.nan_to_num(recall)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)


def multi_label_curves(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray = GRID) -> dict[str, np.ndarray]:
    """precision/recall/F1 per class (rows) at each threshold of the grid (columns)."""
    classes = probs.shape[1]
    tp = np.zeros((classes, len(grid)))
    fired = np.zeros((classes, len(grid)))
    for c in range(classes):  # one class at a time keeps memory at n × grid
        positive = probs[:, c, None] >= grid[None, :]
        fired[c] = positive.sum(axis=0)
        tp[c] = (positive & (targets[:, c, None] > 0)).sum(axis=0)
    actual = targets.sum(axis=0).astype(float)[:, None]
    precision, recall = _ratio(tp, fired), _ratio(tp, np.broadcast_to(actual, tp.shape))
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": actual[:, 0]}


def single_label_curves(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray = GRID) -> dict[str, np.ndarray]:
    """With abstention below each threshold: per class precision/recall/F1 (rows × thresholds), and
    overall coverage (share answered) and accuracy of the answered images."""
    classes = probs.shape[1]
    predicted, top = probs.argmax(axis=1), probs.max(axis=1)
    answered = (top[:, None] >= grid[None, :]).astype(float)  # (n, grid)
    predicted_onehot = np.eye(classes)[predicted]
    correct_onehot = predicted_onehot * (predicted == targets)[:, None]
    fired = predicted_onehot.T @ answered
    tp = correct_onehot.T @ answered
    actual = np.bincount(targets, minlength=classes).astype(float)[:, None]
    precision, recall = _ratio(tp, fired), _ratio(tp, np.broadcast_to(actual, tp.shape))
    answered_count = answered.sum(axis=0)
    return {
        "precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": actual[:, 0],
        "coverage": answered_count / max(len(targets), 1),
        "accuracy": _ratio(tp.sum(axis=0), answered_count),
    }


# ---------------------------------------------------------------- suggested thresholds


def f1_optimal_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """Per class, the threshold with the best F1 on these images (scikit-learn's PR curve, exact at
    every distinct score); None for a class with no positive image (nothing to tune on)."""
    from sklearn.metrics import precision_recall_curve

    best: list[float | None] = []
    for c in range(probs.shape[1]):
        if targets[:, c].sum() == 0:
            best.append(None)
            continue
        precision, recall, thresholds = precision_recall_curve(targets[:, c], probs[:, c])
        f1 = _f1(precision[:-1], recall[:-1])  # the last PR point has no threshold
        best.append(float(thresholds[int(np.argmax(f1))]))
    return best


def abstain_threshold(probs: np.ndarray, targets: np.ndarray,
                      target_accuracy: float = DEFAULT_TARGET_ACCURACY) -> float | None:
    """The lowest top-probability threshold at which the answered images are at least
    `target_accuracy` correct (answering as many as possible); 0.0 when all images already are;
    None when no threshold reaches it."""
    if not 0 < target_accuracy <= 1:
        raise InvalidInput(f"target accuracy must be above 0 and at most 1, not {target_accuracy}")
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    order = np.argsort(-top, kind="stable")
    top, correct = top[order], correct[order]
    accuracy = np.cumsum(correct) / np.arange(1, len(top) + 1)
    # Only cut after the last image of a run of equal scores: a threshold answers all or none of them.
    cut_ok = np.append(top[1:] < top[:-1], True)
    reaching = np.flatnonzero(cut_ok & (accuracy >= target_accuracy - 1e-12))
    if len(reaching) == 0:
        return None
    last = int(reaching[-1])
    return 0.0 if last == len(top) - 1 else float(top[last])


# ---------------------------------------------------------------- explorer data


def explorer(predictions: SplitPredictions, class_names: list[str], *,
             target_accuracy: float = DEFAULT_TARGET_ACCURACY) -> dict[str, Any]:
    """Everything the threshold explorer draws: curves on the grid and the suggested thresholds."""
    if predictions.multi_label:
        curves = multi_label_curves(predictions.probs, predictions.targets)
        optimal = f1_optimal_thresholds(predictions.probs, predictions.targets)
        pairs = list(zip(class_names, optimal, strict=True))
        # rounded down to the slider's 0.01: a class then fires on at least the images it fired on at t
        suggested = {"per_class": {name: (0.5 if t is None else math.floor(t * 100) / 100) for name, t in pairs}}
        untuned = [name for name, t in pairs if t is None]
    else:
        curves = single_label_curves(predictions.probs, predictions.targets)
        threshold, reason = suggest_abstain(curves, target_accuracy)
        suggested = {"abstain": threshold, **({"reason": reason} if reason else {})}
        untuned = []
    return {"grid": GRID, "curves": curves, "suggested": suggested, "untuned_classes": untuned,
            "images": len(predictions.image_ids), "split": predictions.split}


def suggest_abstain(curves: dict[str, np.ndarray], target_accuracy: float) -> tuple[float | None, str | None]:
    """The lowest threshold of the explorer's grid (what its slider can choose) whose answered images are
    at least `target_accuracy` right while it answers at least MIN_ANSWERED_SHARE of them; else None and
    why, with the best the model does reach at that coverage."""
    if not 0 < target_accuracy <= 1:
        raise InvalidInput(f"target accuracy must be above 0 and at most 1, not {target_accuracy}")
    coverage, accuracy = curves["coverage"], np.nan_to_num(curves["accuracy"], nan=-1.0)
    enough = coverage >= MIN_ANSWERED_SHARE - 1e-12
    good = np.flatnonzero(enough & (accuracy >= target_accuracy - 1e-12))
    if len(good):
        return float(GRID[good[0]]), None
    if not enough.any():
        return None, "the model answers no image at any threshold"
    best = int(np.argmax(np.where(enough, accuracy, -1.0)))
    return None, (f"no threshold keeps {target_accuracy:.0%} of the answered images right while answering at least "
                  f"{MIN_ANSWERED_SHARE:.0%} of them: the best is {accuracy[best]:.0%} right at threshold "
                  f"{GRID[best]:.2f} ({coverage[best]:.0%} answered). Lower the target, or improve the model "
                  "(more images, more epochs).")


def scores_at(predictions: SplitPredictions, class_names: list[str], thresholds: dict[str, Any]) -> list[dict]:
    """Per-class precision/recall/F1/support at given thresholds (the table under the chart)."""
    probs, targets = predictions.probs, predictions.targets
    rows = []
    if predictions.multi_label:
        per_class = thresholds.get("per_class") or {}
        for c, name in enumerate(class_names):
            t = float(per_class.get(name, 0.5))
            curves = multi_label_curves(probs[:, [c]], targets[:, [c]], np.array([t]))
            rows.append(_row(name, t, curves, 0))
        return rows
    t = float(thresholds.get("abstain") or 0.0)
    curves = single_label_curves(probs, targets, np.array([t]))
    return [_row(name, t, curves, c) for c, name in enumerate(class_names)]


def _row(name: str, threshold: float, curves: dict[str, np.ndarray], c: int) -> dict[str, Any]:
    def value(key: str) -> float | None:
        number = float(curves[key][c, 0])
        return None if math.isnan(number) else number

    return {"class": name, "threshold": threshold, "precision": value("precision"), "recall": value("recall"),
            "f1": value("f1"), "support": int(curves["support"][c])}


# ---------------------------------------------------------------- saving


def _check_probability(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{what} must be a number from 0 to 1, not {value!r}")
    return float(value)


def clean_thresholds(model: ClsTrainedModel, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Check thresholds against the model's task and classes; returns the dict to store."""
    if not isinstance(thresholds, dict):
        raise InvalidInput("thresholds must be an object")
    if model.task_type == "multi_label":
        if "abstain" in thresholds:
            raise InvalidInput("a multi-label model takes per-class thresholds, not an abstain threshold")
        per_class = thresholds.get("per_class")
        if not isinstance(per_class, dict):
            raise InvalidInput("multi-label thresholds need per_class: {class name: threshold}")
        names = list(model.class_names)
        unknown = sorted(set(per_class) - set(names))
        if unknown:
            raise InvalidInput(f"unknown class(es) {', '.join(map(repr, unknown))}; the model's classes are "
                               f"{', '.join(names)}")
        missing = [name for name in names if name not in per_class]
        if missing:
            raise InvalidInput(f"no threshold for class(es) {', '.join(map(repr, missing))}")
        cleaned = {"per_class": {name: _check_probability(f"threshold of {name!r}", per_class[name])
                                 for name in names}}
    else:
        if "per_class" in thresholds:
            raise InvalidInput("a single-label model takes one abstain threshold, not per-class thresholds")
        if "abstain" not in thresholds:
            raise InvalidInput("single-label thresholds need abstain: the top probability below which it abstains")
        cleaned = {"abstain": _check_probability("the abstain threshold", thresholds["abstain"])}
    for key in ("split", "method"):
        if isinstance(thresholds.get(key), str):
            cleaned[key] = thresholds[key][:40]
    if "target_accuracy" in thresholds:
        cleaned["target_accuracy"] = _check_probability("the target accuracy", thresholds["target_accuracy"])
    return cleaned


@requires("admin", "saving thresholds")
def save_thresholds(*, session: Session, actor: User, model_id: uuid.UUID, thresholds: dict[str, Any]) -> ClsTrainedModel:
    """Store checked thresholds on the model (replacing earlier ones); prediction applies them."""
    model = session.get(ClsTrainedModel, model_id)
    if model is None:
        raise NotFound(f"no trained model {model_id}")
    cleaned = clean_thresholds(model, thresholds)
    cleaned["saved_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    cleaned["saved_by"] = str(actor.id)
    model.thresholds = cleaned  # a new dict, so the JSON column is marked changed
    session.flush()
    return model


@requires("admin", "clearing thresholds")
def clear_thresholds(*, session: Session, actor: User, model_id: uuid.UUID) -> ClsTrainedModel:
    model = session.get(ClsTrainedModel, model_id)
    if model is None:
        raise NotFound(f"no trained model {model_id}")
    model.thresholds = {}
    session.flush()
    return model
