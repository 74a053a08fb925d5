"""Manifest records, the SHA-256 download cache, the decoded cache, class weights, losses, metrics
and the preset transforms."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from core.errors import InvalidInput
from core.ml import data
from core.ml.augment import PRESETS, eval_transform, train_transform
from tests.training_data import digit_png, digits


def line(i, labels, split="train", sha="0" * 64):
    return {"image_id": f"id{i}", "key": f"images/{i}.png", "sha256": sha, "labels": labels, "split": split}


def test_records_skip_unassigned_and_name_bad_lines():
    records = data.records_from_manifest([line(1, [0]), line(2, [1], "val"), line(3, [1], "unassigned")],
                                         num_classes=2)
    assert [r.image_id for r in records] == ["id1", "id2"]
    with pytest.raises(InvalidInput, match="manifest line 2: label index outside 0..1"):
        data.records_from_manifest([line(1, [0]), line(2, [5])], num_classes=2)
    with pytest.raises(InvalidInput, match="manifest line 1: malformed"):
        data.records_from_manifest([{"image_id": "x"}], num_classes=2)


class MemoryStore:
    """A storage stand-in with no local files, so ImageFiles must download (S3 behaves so)."""

    def __init__(self, objects):
        self.objects, self.gets = objects, 0

    def local_path(self, key):
        return None

    def get(self, key):
        self.gets += 1
        return self.objects[key]


def test_download_cache_is_keyed_by_sha256_and_checks_the_bytes(tmp_path):
    pixels, _ = digits(1, 1)
    png = digit_png(pixels[0], 16)
    sha = hashlib.sha256(png).hexdigest()
    store = MemoryStore({"images/a.png": png, "images/b.png": png})
    files = data.ImageFiles(store, tmp_path)
    first = files.path(data.Record("a", "images/a.png", sha, (0,), "train"))
    second = files.path(data.Record("b", "images/b.png", sha, (0,), "train"))  # same bytes: no second download
    assert first == second == tmp_path / sha[:2] / sha and store.gets == 1
    with pytest.raises(InvalidInput, match="image bad .*do not match the manifest's SHA-256"):
        files.path(data.Record("bad", "images/a.png", "f" * 64, (0,), "train"))


def test_decoded_cache_keeps_images_within_its_budget(tmp_path):
    pixels, _ = digits(1, 2)
    pngs = [digit_png(p, 64) for p in pixels]
    store = MemoryStore({f"images/{i}.png": png for i, png in enumerate(pngs)})
    records = [data.Record(str(i), f"images/{i}.png", hashlib.sha256(png).hexdigest(), (0,), "train")
               for i, png in enumerate(pngs)]
    cache = data.DecodedCache(data.ImageFiles(store, tmp_path), mode="RGB", max_side=32, budget_bytes=32 * 32 * 3)
    image = cache.load(records[0])
    assert image.size == (32, 32)  # downscaled to max_side
    cache.load(records[1])
    assert len(cache.arrays) == 1 and cache.used == 32 * 32 * 3  # the second did not fit
    assert cache.load(records[0]).size == (32, 32)


def test_broken_image_bytes_name_the_image():
    with pytest.raises(InvalidInput, match="img7: cannot decode image"):
        data.decode_image(b"not an image", name="img7")


def test_class_weights_balanced_sqrt_none_and_sampler_weights():
    counts = np.array([90.0, 10.0, 0.0])
    balanced = data.class_weights(counts, "balanced")
    assert balanced[1] / balanced[0] == pytest.approx(9) and balanced[2] == 0
    assert balanced[:2].mean() == pytest.approx(1)
    sqrt = data.class_weights(counts, "sqrt")
    assert sqrt[1] / sqrt[0] == pytest.approx(3)
    assert data.class_weights(counts, "none") is None
    records = [data.Record("a", "k", "s", (0,), "train"), data.Record("b", "k", "s", (0, 1), "train")]
    assert data.sample_weights(records, balanced) == pytest.approx([balanced[0], balanced[:2].mean()])


def test_losses_ce_focal_bce_asymmetric():
    import torch

    from core.ml.losses import FocalCrossEntropy, build_loss

    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    ce = build_loss(multi_label=False, label_smoothing=0.1, focal_gamma=0, weights=None, mixing=False)
    focal0 = FocalCrossEntropy(gamma=0.0, label_smoothing=0.1)
    assert float(focal0(logits, target)) == pytest.approx(float(ce(logits, target)), rel=1e-5)
    focal2 = build_loss(multi_label=False, label_smoothing=0.0, focal_gamma=2, weights=np.ones(3), mixing=False)
    assert float(focal2(logits, target)) < float(focal0(logits, target))
    soft = torch.softmax(torch.randn(6, 3), 1)  # mixup targets
    assert torch.isfinite(ce(logits, soft))
    multi = torch.randint(0, 2, (6, 3)).float()
    bce = build_loss(multi_label=True, label_smoothing=0, focal_gamma=0, weights=None, mixing=False,
                     pos_weight=np.array([1.0, 2.0, 3.0]))
    asl = build_loss(multi_label=True, label_smoothing=0, focal_gamma=0, weights=None, mixing=False,
                     multi_label_loss="asymmetric")
    assert torch.isfinite(bce(logits, multi)) and torch.isfinite(asl(logits, multi))


def test_metrics_single_and_multi_label():
    from core.ml.metrics import epoch_metrics, final_report

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    targets = np.array([0, 1, 1, 2])
    scores = epoch_metrics(probs, targets, multi_label=False)
    assert scores["accuracy"] == 0.75 and scores["top5"] is None  # 3 classes: every class is in the top 5
    seven = np.eye(7)[[0, 1, 2, 3, 4, 5, 6, 0]] * 0.4 + 0.6 / 7
    seven[7] = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.79]  # true class 0 ranked last of 7: outside the top 5
    assert epoch_metrics(seven, np.array([0, 1, 2, 3, 4, 5, 6, 0]), multi_label=False)["top5"] == 7 / 8
    report = final_report(probs, targets, multi_label=False, class_names=["a", "b", "c"])
    assert report["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    multi = epoch_metrics(np.array([[0.9, 0.6], [0.2, 0.7]]), np.array([[1, 0], [0, 1]]), multi_label=True)
    assert multi["map"] == 1.0 and multi["f1_micro"] == pytest.approx(0.8) and multi["accuracy"] == 0.5


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_transforms_a_real_image(preset):
    from PIL import Image

    pixels, _ = digits(1, 1)
    image = Image.open(__import__("io").BytesIO(digit_png(pixels[0], 40))).convert("RGB")
    prep = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 0.9,
            "in_chans": 3}
    transform = train_transform(prep, PRESETS[preset].settings)
    for _ in range(20):  # random ops: several draws
        assert transform(image).shape == (3, 32, 32)
    assert eval_transform(prep)(image).shape == (3, 32, 32)
    gray = {**prep, "mean": [0.5], "std": [0.5], "in_chans": 1}
    assert train_transform(gray, PRESETS[preset].settings)(image.convert("L")).shape == (1, 32, 32)


def _png_records(count: int, size: int = 24):
    pixels, _ = digits(10, 20)
    pngs = list({digit_png(p, size): None for p in pixels})[:count]  # distinct bytes
    assert len(pngs) == count
    return pngs, [data.Record(str(i), f"cache-test/{i}.png", hashlib.sha256(png).hexdigest(), (0,), "train")
                  for i, png in enumerate(pngs)]


def test_a_second_run_on_the_worker_reads_no_object_again(s3_server, tmp_path):
    """Real S3 protocol (moto's server over HTTP): the first run fetches in parallel threads, each
    object once; a second run (a new ImageFiles on the same cache) reads nothing from the store."""
    from core.storage import S3Storage

    store = S3Storage("cls-test", prefix=f"cache-{tmp_path.name}", endpoint_url=s3_server, region="us-east-1")
    pngs, records = _png_records(40)
    for png, record in zip(pngs, records, strict=True):
        store.put(record.key, png)
    steps = []
    first = data.ImageFiles(store, tmp_path, threads=8)
    first.fetch_all(records + records[:5], on_step=lambda done, total: steps.append((done, total)))
    unique = len({r.sha256 for r in records})
    assert first.downloads == unique and steps[-1] == (unique, unique)
    second = data.ImageFiles(store, tmp_path, threads=8)
    second.fetch_all(records)
    assert second.downloads == 0
    assert all(second.path(r).read_bytes() == png for r, png in zip(records, pngs, strict=True))


def test_the_cache_drops_the_least_recently_used_files_beyond_its_bound(tmp_path):
    import os

    pngs, records = _png_records(12)
    store = MemoryStore({r.key: png for r, png in zip(records, pngs, strict=True)})
    size = max(len(png) for png in pngs)
    warm = data.ImageFiles(store, tmp_path, threads=1)
    warm.fetch_all(records[:6])
    for age, record in enumerate(records[:6]):  # records[0] used longest ago
        os.utime(warm.path(record), (1_000_000 + age, 1_000_000 + age))
    os.utime(warm.path(records[5]), (1_000_000, 1_000_000))  # ... then records[5] is the oldest use
    data.ImageFiles(store, tmp_path, threads=1).path(records[1])  # a hit makes records[1] recent
    bounded = data.ImageFiles(store, tmp_path, max_bytes=8 * size, threads=1)
    bounded.fetch_all(records[6:9])
    kept = {p.name for p in tmp_path.glob("*/*")}
    assert bounded.cached_bytes() <= 8 * size and len(kept) <= 8
    assert records[1].sha256 in kept  # recently used
    assert records[5].sha256 not in kept and records[0].sha256 not in kept  # the two oldest uses went
    assert all(r.sha256 in kept for r in records[6:9])  # this run's own files are never evicted


def test_a_failed_object_is_raised_after_the_others_are_cached(tmp_path):
    pngs, records = _png_records(6)
    store = MemoryStore({r.key: png for r, png in zip(records, pngs, strict=True) if r.image_id != "3"})
    files = data.ImageFiles(store, tmp_path, threads=4)
    with pytest.raises(KeyError):
        files.fetch_all(records)
    assert files.downloads == 5
