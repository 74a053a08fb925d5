"""Embeddings of the real sets (bench/real_sets.py) from a model trained here: a small CNN (four
conv-BN-ReLU stages, 16→128 channels, global average pooling: ~100k weights, random init) trained
for a few epochs on CPU on one set's training crops; its pooled 128-d features (the pre-logits),
L2-normalised, are the vectors, as core.similarity.embedder makes them. (timm's smallest ResNet took
over 5 CPU-minutes an epoch on this shared 2-core machine; this one takes seconds.) Cached under /tmp
by set, seed and epochs.

`trained_on` picks the set the model learns: the same set (its training blocks; the crops embedded
come from blocks it never saw) or the other set (transfer: the model never saw these classes)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path("/tmp/bench_embeddings_trained_here")


def load_digits_set(seed: int = 0):
    """scikit-learn's handwritten digits (1,797 real 8×8 scans, 10 classes), scaled to 32×32;
    split at random 50/25/25 into train/val/test."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = torch.nn.functional.interpolate(torch.from_numpy(digits.images / 16.0).float().unsqueeze(1),
                                             size=(32, 32), mode="bilinear", align_corners=False)[:, 0].numpy()
    order = np.random.default_rng(seed).permutation(len(pixels))
    splits = np.empty(len(pixels), dtype=object)
    splits[order[:len(order) // 2]], splits[order[len(order) // 2:3 * len(order) // 4]] = "train", "val"
    splits[order[3 * len(order) // 4:]] = "test"
    return pixels, digits.target.astype(np.int64), splits.astype(str), [str(d) for d in range(10)]


def load_set(kind: str, *, seed: int = 0, per_block: int = 16):
    from bench.real_sets import crops

    if kind == "digits":
        return load_digits_set(seed)

    names, splits, pixels, labels = [], [], [], []
    for label, split, data, _name in crops(kind, per_block=per_block, seed=seed):
        names.append(label)
        splits.append(split)
        pixels.append(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0)
        labels.append(label)
    classes = sorted(set(labels))
    return np.stack(pixels), np.array([classes.index(x) for x in labels]), np.array(splits), classes


def small_cnn(classes: int):
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers, width = [], 1
            for out in (16, 32, 64, 128):
                layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                           nn.MaxPool2d(2)]
                width = out
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(width, classes)

        def forward_features(self, x):
            return self.features(x)

        def forward_head(self, x, pre_logits: bool = False):
            pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return pooled if pre_logits else self.head(pooled)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return SmallCNN()


def train(kind: str, *, epochs: int = 8, seed: int = 0, threads: int = 2):
    """The small CNN trained on the `train` crops of a set (random init); returns the model."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    pixels, labels, splits, classes = load_set(kind, seed=seed)
    x = torch.from_numpy(pixels[splits == "train"]).unsqueeze(1)
    x = (x - 0.5) / 0.25
    y = torch.from_numpy(labels[splits == "train"])
    model = small_cnn(len(classes))
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * ((len(x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    started = time.perf_counter()
    model.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            images = x[batch]
            flip = torch.rand(len(batch)) < 0.5
            images[flip] = images[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(model(images), y[batch], label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    print(f"  trained the small CNN (random init) on {kind} train crops ({len(x)}): {epochs} epochs, "
          f"{time.perf_counter() - started:.0f} s")
    return model.eval()


def embed(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    x = (torch.from_numpy(pixels).unsqueeze(1) - 0.5) / 0.25
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 256):
            out.append(model.forward_head(model.forward_features(x[start:start + 256]), pre_logits=True).numpy())
    vectors = np.concatenate(out)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def predict(model, pixels: np.ndarray) -> np.ndarray:
    import torch

    x = (torch.from_numpy(pixels).unsqueeze(1) - 0.5) / 0.25
    with torch.no_grad():
        return np.concatenate([model(x[s:s + 256]).argmax(1).numpy() for s in range(0, len(x), 256)])


def embeddings(kind: str, *, trained_on: str, epochs: int = 8, seed: int = 0):
    """(vectors, labels, splits, classes, model predictions or None) of set `kind`'s crops, embedded by
    a model trained on `trained_on`'s training crops (predictions only when it learned these classes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{kind}-by-{trained_on}-s{seed}-e{epochs}.npz"
    pixels, labels, splits, classes = load_set(kind, seed=seed)
    if path.exists():
        saved = np.load(path)
        predicted = saved["predicted"] if saved["predicted"].size else None
        return saved["vectors"], labels, splits, classes, predicted
    model = train(trained_on, epochs=epochs, seed=seed)
    vectors = embed(model, pixels)
    predicted = predict(model, pixels) if trained_on == kind else None
    np.savez(path, vectors=vectors, predicted=predicted if predicted is not None else np.zeros(0))
    return vectors, labels, splits, classes, predicted
