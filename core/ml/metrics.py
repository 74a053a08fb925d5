"""Classification metrics from class probabilities, with scikit-learn: per-epoch scores and the
final report (confusion matrix, per-class precision/recall/F1/support)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def epoch_metrics(probs: np.ndarray, targets: np.ndarray, *, multi_label: bool) -> dict[str, float]:
    """Single-label: accuracy, top-5, macro F1/precision/recall. Multi-label: mAP, micro/macro F1 at
    0.5, exact-match accuracy. `targets` is class indices or a multi-hot matrix."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        top_k_accuracy_score,
    )

    classes = probs.shape[1]
    with warnings.catch_warnings():  # classes absent from a small val split are scored 0, not warned
        warnings.simplefilter("ignore")
        if multi_label:
            predicted = (probs >= 0.5).astype(int)
            present = targets.sum(axis=0) > 0
            mean_ap = float(average_precision_score(targets[:, present], probs[:, present], average="macro")) \
                if present.any() else 0.0
            return {
                "accuracy": float(accuracy_score(targets, predicted)),
                "map": mean_ap,
                "f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
                "f1_micro": float(f1_score(targets, predicted, average="micro", zero_division=0)),
                "precision": float(precision_score(targets, predicted, average="macro", zero_division=0)),
                "recall": float(recall_score(targets, predicted, average="macro", zero_division=0)),
            }
        predicted = probs.argmax(axis=1)
        labels = list(range(classes))
        # top-5 says something only with more than 5 classes (else every true class is in the top 5)
        top5 = float(top_k_accuracy_score(targets, probs, k=5, labels=labels)) if classes > 5 else None
        return {
            "accuracy": float(accuracy_score(targets, predicted)),
            "top5": top5,
            "f1": float(f1_score(targets, predicted, labels=labels, average="macro", zero_division=0)),
            "precision": float(precision_score(targets, predicted, labels=labels, average="macro", zero_division=0)),
            "recall": float(recall_score(targets, predicted, labels=labels, average="macro", zero_division=0)),
        }


def final_report(probs: np.ndarray, targets: np.ndarray, *, multi_label: bool,
                 class_names: list[str]) -> dict[str, Any]:
    """epoch_metrics + confusion matrix (single-label; per-class 2×2 for multi-label) and
    per-class precision/recall/F1/support keyed by class name."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    scores = epoch_metrics(probs, targets, multi_label=multi_label)
    if multi_label:
        predicted = (probs >= 0.5).astype(int)
        matrix = multilabel_confusion_matrix(targets, predicted, labels=labels).tolist()
    else:
        predicted = probs.argmax(axis=1)
        matrix = confusion_matrix(targets, predicted, labels=labels).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=labels, zero_division=0
    )
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    return {**scores, "confusion_matrix": matrix, "per_class": per_class, "count": int(len(probs))}


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best
