"""Near duplicates that survive crops: pHashes of a few sub-crops beside the whole image's.

The 64-bit pHash of the whole image moves past any useful threshold once a copy loses more than a
few percent per side (bench/bench_duplicates.py: recall ≈ 0.3 for 4-10 % crops). A copy cropped by
m per side is close to the original's own crop by m, so each image also gets the pHash of its
centre 90, 85 and 80 % and of its four corner 92 % and 85 % crops (uneven crops shift the centre);
seven views caught 0.79 of 3-10 % crops, these twelve 0.93 (seed 1). A pair is a
candidate when the whole-image hash of one is within the threshold of any hash of the other (crop
against crop is not compared: it only adds false pairs), and it is kept only when the 256-bit
mid-frequency hash of the same two views confirms it, as for whole images (core.library.duplicates).
Figures: bench/bench_crop_duplicates.py."""

from __future__ import annotations

import numpy as np

from core.library.fingerprints import confirm_distances, fine_hash
from core.library.hamming import pairs_within

CROP_CONFIRM_MAX_DISTANCE = 64
"""Largest mid-frequency distance (of 192 bits) confirming a whole image against another's sub-crop
view: views never align exactly with a crop, and mid frequencies feel the misalignment, so the
whole-image limit (32) would reject most crops. Chosen on seed 1 of bench_crop_duplicates.py
(0 false pairs of 444,150 at pHash ≤ 10); reported on another seed."""

EMBEDDING_RESCUE_MAX_DISTANCE = 80
"""Whole-against-view pairs past CROP_CONFIRM_MAX_DISTANCE but within this are kept when the two
images' embedding cosine reaches `min_cosine` (the second stage, where an embedding index exists)."""

CROP_THRESHOLD = 10
"""pHash distance (of 64 bits) for a candidate pair of views."""

CROP_BOXES = {
    "full": (0.0, 0.0, 1.0, 1.0),
    "centre90": (0.05, 0.05, 0.95, 0.95),
    "centre85": (0.075, 0.075, 0.925, 0.925),
    "centre80": (0.10, 0.10, 0.90, 0.90),
    "top_left85": (0.0, 0.0, 0.85, 0.85),
    "top_right85": (0.15, 0.0, 1.0, 0.85),
    "bottom_left85": (0.0, 0.15, 0.85, 1.0),
    "bottom_right85": (0.15, 0.15, 1.0, 1.0),
    "top_left92": (0.0, 0.0, 0.92, 0.92),
    "top_right92": (0.08, 0.0, 1.0, 0.92),
    "bottom_left92": (0.0, 0.08, 0.92, 1.0),
    "bottom_right92": (0.08, 0.08, 1.0, 1.0),
}
"""The views hashed, as fractions of width and height (left, top, right, bottom); "full" first."""


def crop_hashes(image) -> tuple[np.ndarray, list[str]]:
    """(64-bit pHash of each view as uint64, 256-bit pHash hex of each view) of a decoded image."""
    import imagehash

    w, h = image.size
    coarse, fine = [], []
    for left, top, right, bottom in CROP_BOXES.values():
        view = image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
        coarse.append(int(str(imagehash.phash(view)), 16))
        fine.append(fine_hash(view))
    return np.array(coarse, dtype=np.uint64), fine


def crop_duplicate_pairs(coarse: np.ndarray, fine: list[list[str]], threshold: int = CROP_THRESHOLD,
                         crop_confirm_max: int = CROP_CONFIRM_MAX_DISTANCE, *, embeddings: np.ndarray | None = None,
                         min_cosine: float = 0.95) -> set[tuple[int, int]]:
    """Pairs (i < j) of images that are near copies, crops included. `coarse`: (n, views) uint64 from
    crop_hashes; `fine`: each image's view hashes. A candidate links a whole image to any view of the
    other and must be confirmed on those two views' 256-bit hashes (whole against whole as the
    library does, whole against a view within `crop_confirm_max`). With `embeddings` (one unit vector
    per image), a whole-against-view pair up to EMBEDDING_RESCUE_MAX_DISTANCE is also kept when the
    two images' cosine is at least `min_cosine`."""
    from core.library.duplicates import CONFIRM_MAX_DISTANCE

    n, views = coarse.shape
    pi, pj, _distance = pairs_within(coarse.reshape(-1), threshold)
    owner_i, owner_j, view_i, view_j = pi // views, pj // views, pi % views, pj % views
    keep = (owner_i != owner_j) & ((view_i == 0) | (view_j == 0))
    pi, pj = pi[keep], pj[keep]
    if not len(pi):
        return set()
    flat = [value for per_image in fine for value in per_image]
    whole = (pi % views == 0) & (pj % views == 0)
    distances = confirm_distances([flat[k] for k in pi], [flat[k] for k in pj])
    confirmed = distances <= np.where(whole, CONFIRM_MAX_DISTANCE, crop_confirm_max)
    if embeddings is not None:
        cosine = np.einsum("nd,nd->n", embeddings[pi // views], embeddings[pj // views])
        confirmed |= ~whole & (distances <= EMBEDDING_RESCUE_MAX_DISTANCE) & (cosine >= min_cosine)
    first, second = pi[confirmed] // views, pj[confirmed] // views
    return {(int(min(a, b)), int(max(a, b))) for a, b in zip(first, second, strict=True)}
