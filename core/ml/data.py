"""Training data from a version's manifest only: a local download cache keyed by SHA-256, a RAM
cache of decoded images, single- and multi-label targets, class weights and a weighted sampler.

Measured on a 2-core CPU (shared/notes/cpu-training.md): decoding PNGs each epoch costs ~12 % of
throughput and DataLoader workers made it worse, so the default is num_workers=0 + the decoded cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import get_settings
from core.errors import InvalidInput
from core.image_decoding import draft_for, open_image, shrunk_for_model
from core.vocabulary import TRAINING_SPLITS


def cache_dir() -> Path:
    """Local cache of downloaded images and model files (CLS_CACHE_DIR, default data/cache)."""
    return Path(os.environ.get("CLS_CACHE_DIR", "data/cache"))

MODEL_REDUCING_GAP = 3.0
"""A large image is box-reduced before the model's resize to no less than this many times the size the
resize gives (3: "indistinguishable from fair resampling in most cases", Pillow's reducing_gap docs)."""

DECODED_CACHE_BYTES = int(os.environ.get("CLS_DECODED_CACHE_BYTES", 2 * 1024**3))
"""Most RAM the decoded-image cache may hold; images beyond it are decoded each time."""


@dataclass(frozen=True)
class Record:
    image_id: str
    key: str
    sha256: str
    labels: tuple[int, ...]
    split: str
    filename: str = ""


def records_from_manifest(lines: list[dict[str, Any]], *, num_classes: int) -> list[Record]:
    """Check every manifest line; a bad line is named, not skipped silently."""
    records = []
    for number, line in enumerate(lines, 1):
        try:
            labels = tuple(int(x) for x in line["labels"])
            record = Record(str(line["image_id"]), str(line["key"]), str(line["sha256"]), labels,
                            str(line["split"]), str(line.get("filename") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"manifest line {number}: malformed ({exc})") from None
        if any(not 0 <= label < num_classes for label in labels):
            raise InvalidInput(f"manifest line {number}: label index outside 0..{num_classes - 1}")
        if record.split in TRAINING_SPLITS and labels:
            records.append(record)
    return records


def split_records(records: list[Record], *, train_on_val: bool = False) -> dict[str, list[Record]]:
    """Records per split; train_on_val (a search's refit) folds the val split into train and holds none out."""
    splits = {split: [r for r in records if r.split == split] for split in TRAINING_SPLITS}
    if train_on_val:
        splits["train"], splits["val"] = splits["train"] + splits["val"], []
    return splits


CACHE_MAX_BYTES = int(os.environ.get("CLS_CACHE_MAX_BYTES", 50 * 1024**3))
"""Most disk the download cache may hold; the least recently used images go first beyond it."""

FETCH_THREADS = int(os.environ.get("CLS_FETCH_THREADS", 16))
"""Parallel object-store reads when a run fetches its images (S3 latency, not bandwidth, dominates)."""


class ImageFiles:
    """Downloads each image once into `<cache>/images/<sha[:2]>/<sha>`, checked against its SHA-256;
    a local store's own file is used in place.

    The cache is content-addressed, so runs and versions share it, and size-bounded: a file's mtime
    is its last use, and when the cache grows past `max_bytes` the least recently used files go,
    never one this instance has handed out (the current run's working set)."""

    def __init__(self, storage, root: Path | None = None, *, max_bytes: int | None = None,
                 threads: int | None = None):
        self.storage = storage
        self.root = Path(root) if root is not None else cache_dir() / "images"
        self.max_bytes = CACHE_MAX_BYTES if max_bytes is None else max_bytes
        self.threads = max(1, FETCH_THREADS if threads is None else threads)
        self.downloads = 0  # objects read from the store by this instance
        self.pinned: set[str] = set()
        self._lock = threading.Lock()
        self._size: int | None = None  # bytes in the cache, scanned once then tracked

    def path(self, record: Record) -> Path:
        local = self.storage.local_path(record.key)
        if local is not None and local.exists():
            return local
        target = self.root / record.sha256[:2] / record.sha256
        with self._lock:
            self.pinned.add(record.sha256)
        if target.exists():
            _touch(target)
            return target
        data = self.storage.get(record.key)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise InvalidInput(f"image {record.image_id} ({record.key}): bytes do not match the manifest's SHA-256")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
        with self._lock:
            self.downloads += 1
            if self._size is not None:
                self._size += len(data)
        self._evict_if_over()
        return target

    def fetch_all(self, records: list[Record], on_step: Callable[[int, int], None] | None = None) -> None:
        """Every record's file, read from the store in parallel threads; the first error is raised
        after the others finished (their files stay cached for the next try)."""
        unique = list({record.sha256: record for record in records}.values())
        total = len(unique)
        if self.threads == 1 or total < 2:
            for done, record in enumerate(unique, 1):
                self.path(record)
                if on_step:
                    on_step(done, total)
            return
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fetch") as pool:
            futures = [pool.submit(self.path, record) for record in unique]
            for done, future in enumerate(as_completed(futures), 1):
                error = future.exception()
                if error is not None and first_error is None:
                    first_error = error
                if on_step:
                    on_step(done, total)
        if first_error is not None:
            raise first_error

    def cached_bytes(self) -> int:
        with self._lock:
            if self._size is None:
                self._size = sum(size for _, size, _ in _cache_entries(self.root))
            return self._size

    def _evict_if_over(self) -> None:
        if self.cached_bytes() <= self.max_bytes:
            return
        with self._lock:
            entries = sorted(_cache_entries(self.root))  # oldest use first; rescanned: other processes share it
            total = sum(size for _, size, _ in entries)
            goal = int(self.max_bytes * 0.9)  # free a margin so the next download does not evict again
            for _, size, path in entries:
                if total <= goal:
                    break
                if path.name in self.pinned:
                    continue
                try:
                    path.unlink()
                    total -= size
                except FileNotFoundError:  # another process evicted it first
                    total -= size
            self._size = total


def _touch(path: Path) -> None:
    """Marks a cache hit as the file's latest use (the LRU order is the mtime order)."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves; only its eviction order is older
        pass


def _cache_entries(root: Path) -> list[tuple[float, int, Path]]:
    entries = []
    if not root.exists():
        return entries
    for shard in os.scandir(root):
        if not shard.is_dir():
            continue
        for entry in os.scandir(shard.path):
            if entry.name.startswith(".tmp-") or not entry.is_file():
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    return entries


class DecodedCache:
    """Decoded images in RAM (uint8 arrays), downscaled so the shorter side is at most `max_side`
    (twice the eval resize: augmentation and the centre crop see nearly the same pixels)."""

    def __init__(self, files: ImageFiles, *, mode: str, max_side: int, budget_bytes: int = DECODED_CACHE_BYTES,
                 enabled: bool = True):
        self.files, self.mode, self.max_side = files, mode, max_side
        self.budget, self.enabled = budget_bytes, enabled
        self.arrays: dict[str, np.ndarray] = {}
        self.used = 0

    def load(self, record: Record):
        from PIL import Image

        cached = self.arrays.get(record.sha256)
        if cached is not None:
            return Image.fromarray(cached)
        image = decode_image(self.files.path(record).read_bytes(), mode=self.mode, name=record.image_id,
                             shorter_side=self.max_side)
        if min(image.size) > self.max_side:
            scale = self.max_side / min(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
        if self.enabled:
            array = np.asarray(image)
            if self.used + array.nbytes <= self.budget:
                self.arrays[record.sha256] = array
                self.used += array.nbytes
        return image


def decode_image(data: bytes, *, mode: str = "RGB", name: str = "image", shorter_side: int | None = None):
    """Pillow under the configured pixel limit (refused from the header, before decoding); EXIF
    rotation applied; a broken file names the image. With `shorter_side` (what the model's resize
    brings the shorter side to), a large image is reduced while decoding (JPEG DCT scaling, else a
    box reduce in bands) to no less than MODEL_REDUCING_GAP times that, so a huge grey or 1-bit
    image is never converted at full size."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with open_image(data, max_pixels=get_settings().max_image_pixels) as opened:
            if shorter_side:
                draft_for(opened, math.ceil(shorter_side * MODEL_REDUCING_GAP))
            # exif_transpose copies even an upright image: a second full-size copy, so only when rotated.
            image = ImageOps.exif_transpose(opened) if opened.getexif().get(0x0112, 1) != 1 else opened
            if not shorter_side:
                return image.convert(mode)
            return shrunk_for_model(image, mode=mode, shorter_side=shorter_side, gap=MODEL_REDUCING_GAP)
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"{name}: cannot decode image ({exc})") from None


class ManifestDataset:
    """(image tensor, target): a class index (single-label) or a multi-hot float vector."""

    def __init__(self, records: list[Record], cache: DecodedCache, transform, *, num_classes: int, multi_label: bool):
        self.records, self.cache, self.transform = records, cache, transform
        self.num_classes, self.multi_label = num_classes, multi_label

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        import torch

        record = self.records[index]
        image = self.transform(self.cache.load(record))
        if self.multi_label:
            target = torch.zeros(self.num_classes)
            target[list(record.labels)] = 1.0
            return image, target
        return image, record.labels[0]


def class_counts(records: list[Record], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.float64)
    for record in records:
        counts[list(record.labels)] += 1
    return counts


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray | None:
    """balanced: n / (k · count); sqrt: its square root; normalised to mean 1 over present classes.
    Absent classes get weight 0 (nothing to weigh)."""
    if mode == "none":
        return None
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    if mode == "sqrt":
        weights = np.sqrt(weights)
    weights[present] /= weights[present].mean()
    return weights


def sample_weights(records: list[Record], weights: np.ndarray) -> list[float]:
    """Per-image weight for a WeightedRandomSampler: the mean weight of its labels."""
    return [float(np.mean([weights[label] for label in record.labels])) for record in records]


def eval_resize(image_size: int, crop_pct: float) -> int:
    return math.floor(image_size / crop_pct)
