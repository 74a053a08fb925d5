"""Crop-robust near duplicates on real photos (skimage's samples): copies cropped by 3-10 % per side
are found by the multi-crop hashes, which the whole-image pHash misses, and distinct overlapping
tiles of one photo are not paired."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.similarity.crop_hashes import crop_duplicate_pairs, crop_hashes


def real_tiles() -> list:
    import skimage.data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        photo.thumbnail((480, 480))
        w, h = photo.size
        for x, y in ((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)):  # four quarter-overlapping halves
            out.append(photo.crop((x // 2, y // 2, x // 2 + w // 2, y // 2 + h // 2)))
    return out


def test_crops_of_up_to_ten_percent_per_side_are_found_and_distinct_tiles_are_not():
    rng = np.random.default_rng(3)
    bases = real_tiles()
    images = list(bases)
    for base in bases:
        w, h = base.size
        left, top, right, bottom = rng.uniform(0.03, 0.10, size=4)
        images.append(base.crop((int(w * left), int(h * top), w - int(w * right), h - int(h * bottom))))
    hashed = [crop_hashes(image) for image in images]
    coarse, fine = np.stack([c for c, _ in hashed]), [f for _, f in hashed]
    found = crop_duplicate_pairs(coarse, fine)
    n = len(bases)
    truth = {(k, k + n) for k in range(n)}
    assert not found - truth, "distinct images were paired"
    assert len(found & truth) >= n - 2, f"found {len(found & truth)} of {n} cropped copies"
    whole = {(a, b) for a, b in truth if (int(coarse[a, 0]) ^ int(coarse[b, 0])).bit_count() <= 8}
    assert len(whole) < len(found & truth)  # the whole-image pHash alone misses crops this deep
