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

from functools import lru_cache

import numpy as np

from core import limits
from core.image_decoding import open_image
from core.library.fingerprints import CONFIRM_MAX_DISTANCE, confirm_distances, fine_hash
from core.library.hamming import pairs_within

CROP_CONFIRM_MAX_DISTANCE = 64
"""Largest mid-frequency distance (of 192 bits) confirming a whole image against another's sub-crop
view: views never align exactly with a crop, and mid frequencies feel the misalignment, so the
whole-image limit (32) would reject most crops. Chosen on seed 1 of bench_crop_duplicates.py
(0 false pairs of 444,150 at pHash ≤ 10); reported on another seed."""

CROP_EDGE_CONFIRM_MAX_DISTANCE = 60
"""The confirmation limit for a pair whose pHash distance is at CROP_THRESHOLD itself: the library run
of bench_crop_duplicates.py (hashes of stored thumbnails) found its only false pairs there, at
confirm distances 62-64 (seed 2), each merging two groups; 60 removes them and keeps group pair
recall ≥ 0.96 on seeds 1 and 2 (chosen after seeing seed 2; seed 3, held out: precision 1.000,
recall 0.962). Library paths only (core/library/crop_duplicates.py): on hashes of the decoded
originals (crop_duplicate_pairs, tests/test_similarity_crops.py) it cost recall and no false pair."""


def crop_confirm_limit(phash_distance):
    """The largest confirm distance accepted for whole/view pairs at these pHash distances."""
    return np.where(np.asarray(phash_distance) >= CROP_THRESHOLD, CROP_EDGE_CONFIRM_MAX_DISTANCE,
                    CROP_CONFIRM_MAX_DISTANCE)


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


VIEW_NAMES = tuple(CROP_BOXES)[1:]
"""The sub-crop views a library image stores (cls_images.crop_phash, crop_phash256), in this order: the
whole image's own hashes are its phash and phash256 columns."""

WORKING_SIZE = 128
"""Every view is cut from one 128×128 greyscale copy of the image. A view's pHash is imagehash.phash's
recipe (Lanczos to a 4x-oversized square, 2-D DCT, low frequencies against their median), and all of
it up to the median is linear in the pixels: so each view's low frequencies are one matrix product
of the copy with precomputed operators (Pillow's own Lanczos weights, the DCT rows kept), every view
at once. ≈ 1.8 ms an image for the 11 views against ≈ 5.5 ms resizing each view with Pillow
(load 13), and within 0-2 bits of that per view; ingest pays it per image (bench_ingest.py)."""


def _resampling(low: float, high: float, size: int) -> np.ndarray:
    """(size, WORKING_SIZE): Pillow's Lanczos resampling of [low, high) of the copy's side to `size`."""
    from PIL import Image

    side = WORKING_SIZE
    identity = Image.fromarray(np.eye(side, dtype=np.float32), mode="F")
    weights = identity.resize((size, side), Image.Resampling.LANCZOS, box=(low * side, 0, high * side, side))
    return np.asarray(weights, dtype=np.float64).T


def _dct_rows(n: int, keep: int) -> np.ndarray:
    """The first `keep` rows of the (unnormalised) DCT-II of length n, as scipy.fft.dct computes it."""
    return 2 * np.cos(np.pi * np.arange(keep)[:, None] * (2 * np.arange(n)[None, :] + 1) / (2 * n))


@lru_cache(maxsize=4)
def _operators(boxes: tuple) -> tuple[np.ndarray, ...]:
    """Per view (rows, columns) operators giving the 16×16 low frequencies of its 64×64 resize (the
    256-bit hash) and the 8×8 of its 32×32 (2×2 means of the 64×64: the 64-bit hash)."""
    halve = np.kron(np.eye(32), np.full((1, 2), 0.5))
    fine, coarse = _dct_rows(64, 16), _dct_rows(32, 8) @ halve
    ops: list[list[np.ndarray]] = [[], [], [], []]
    for left, top, right, bottom in boxes:
        rows, columns = _resampling(top, bottom, 64), _resampling(left, right, 64)
        for slot, op in enumerate((fine @ rows, fine @ columns, coarse @ rows, coarse @ columns)):
            ops[slot].append(op)
    return tuple(np.stack(op) for op in ops)


def _view_bits(gray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(packed 64-bit pHashes (n, 8) uint8, packed 256-bit pHashes (n, 32) uint8) of the views of a
    greyscale image."""
    from PIL import Image

    fine_rows, fine_columns, coarse_rows, coarse_columns = _operators(tuple(boxes))
    side = WORKING_SIZE
    pixels = np.asarray(gray.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.float64)
    out = []
    for rows, columns in ((coarse_rows, coarse_columns), (fine_rows, fine_columns)):
        low = (rows @ pixels @ columns.transpose(0, 2, 1)).reshape(len(boxes), -1)
        out.append(np.packbits(low > np.median(low, axis=1, keepdims=True), axis=1))
    return out[0], out[1]


def crop_hashes(image) -> tuple[np.ndarray, list[str]]:
    """(64-bit pHash of each view of CROP_BOXES as uint64, 256-bit pHash hex of each view) of a
    decoded image."""
    coarse, fine = _view_bits(image.convert("L"), list(CROP_BOXES.values()))
    return coarse.view(">u8").ravel().astype(np.uint64), [bytes(row).hex() for row in fine]


def stored_crop_hashes(image) -> tuple[bytes, bytes]:
    """The sub-crop views' hashes as a library row stores them: (crop_phash: 8 bytes a view,
    crop_phash256: 32 bytes a view), views in VIEW_NAMES order."""
    coarse, fine = _view_bits(image.convert("L"), [CROP_BOXES[name] for name in VIEW_NAMES])
    return coarse.tobytes(), fine.tobytes()


def unpack_coarse(blobs: list[bytes]) -> np.ndarray:
    """crop_phash values → (n, len(VIEW_NAMES)) uint64."""
    if not blobs:
        return np.zeros((0, len(VIEW_NAMES)), dtype=np.uint64)
    return np.frombuffer(b"".join(blobs), dtype=">u8").astype(np.uint64).reshape(len(blobs), len(VIEW_NAMES))


def unpack_fine(blob: bytes) -> list[str]:
    """A crop_phash256 value → one 256-bit hash hex per view (as fingerprints.fine_hash writes them)."""
    return [blob[k:k + 32].hex() for k in range(0, len(blob), 32)]


def crop_duplicate_pairs(coarse: np.ndarray, fine: list[list[str]], threshold: int = CROP_THRESHOLD,
                         crop_confirm_max: int = CROP_CONFIRM_MAX_DISTANCE, *, embeddings: np.ndarray | None = None,
                         min_cosine: float = 0.95) -> set[tuple[int, int]]:
    """Pairs (i < j) of images that are near copies, crops included. `coarse`: (n, views) uint64 from
    crop_hashes; `fine`: each image's view hashes. A candidate links a whole image to any view of the
    other and must be confirmed on those two views' 256-bit hashes (whole against whole as the
    library does, whole against a view within `crop_confirm_max`). With `embeddings` (one unit vector
    per image), a whole-against-view pair up to EMBEDDING_RESCUE_MAX_DISTANCE is also kept when the
    two images' cosine is at least `min_cosine`."""
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


def thumbnail_hashes(data: bytes) -> tuple[str, bytes, bytes]:
    """(phash256, crop_phash, crop_phash256) of a stored thumbnail's bytes, decoded once: what ingest
    records and the backfill computes for rows ingested before."""
    with open_image(data, max_pixels=limits.MAX_IMAGE_PIXELS) as image:
        image.load()
        rgb = image.convert("RGB")
    return (fine_hash(rgb), *stored_crop_hashes(rgb))
