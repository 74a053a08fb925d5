"""Losses: torch's cross-entropy (class weights, label smoothing, mixed soft targets), a softmax focal
loss, BCE with per-class positive weights, and timm's asymmetric loss for multi-label.
Imported only by the training pipeline, so torch is imported at the top."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def build_loss(*, multi_label: bool, label_smoothing: float, focal_gamma: float, weights: np.ndarray | None,
               mixing: bool, multi_label_loss: str = "bce", pos_weight: np.ndarray | None = None):
    if multi_label:
        if multi_label_loss == "asymmetric":
            from timm.loss import AsymmetricLossMultiLabel

            return AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=0, clip=0.05)
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        return nn.BCEWithLogitsLoss(pos_weight=pw)
    class_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    # timm's Mixup already smooths the targets it mixes; smoothing again would double it.
    smoothing = 0.0 if mixing else label_smoothing
    if focal_gamma > 0:
        return FocalCrossEntropy(gamma=focal_gamma, weight=class_weight, label_smoothing=smoothing)
    return nn.CrossEntropyLoss(weight=class_weight, label_smoothing=smoothing)


def multi_label_pos_weight(counts: np.ndarray, total: int, mode: str) -> np.ndarray | None:
    """BCE's pos_weight: negatives / positives per class (balanced) or its square root (sqrt)."""
    if mode == "none":
        return None
    positives = np.maximum(counts, 1)
    ratio = np.maximum(total - counts, 1) / positives
    return np.sqrt(ratio) if mode == "sqrt" else ratio


class FocalCrossEntropy(nn.Module):
    """Softmax focal loss with soft targets and class weights. Written here because neither torch
    nor timm ships a multi-class focal loss (torchvision's is binary, sigmoid-only)."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits.float(), dim=1)
        if target.dim() == 1:
            classes = logits.shape[1]
            target = nn.functional.one_hot(target, classes).float()
            target = target * (1 - self.label_smoothing) + self.label_smoothing / classes
        per_class = -target * (1 - log_probs.exp()).pow(self.gamma) * log_probs
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(dim=1).mean()
