"""The second measure of near duplicates: a 256-bit pHash of the thumbnail, of which only the 192
mid-frequency bits the 64-bit pHash never sees are compared (why: core/library/duplicates.py)."""

from __future__ import annotations

import numpy as np

from core import limits
from core.image_decoding import open_image

FINE_HASH_SIZE = 16

CONFIRM_MAX_DISTANCE = 32
"""Largest distance (of 192 mid-frequency bits of the 256-bit pHash) that confirms a candidate: the
largest keeping group precision ≥ 0.98 on the tuning set (`bench_duplicates.py --tune --seed 0`)."""


# The 192 bits outside the 8×8 low-frequency corner the 64-bit pHash is made of.
MID_FREQUENCY_MASK = np.pad(np.zeros((8, 8), dtype=bool), ((0, FINE_HASH_SIZE - 8), (0, FINE_HASH_SIZE - 8)),
                    constant_values=True)


def fine_hash(image) -> str:
    """The 256-bit pHash (64 hex chars) of a decoded thumbnail; ingest stores it as `phash256`."""
    import imagehash

    return str(imagehash.phash(image, hash_size=FINE_HASH_SIZE))


def fine_hash_of_bytes(data: bytes) -> str:
    """The 256-bit pHash of a stored thumbnail's bytes (opened under the pixel limit like any image)."""
    with open_image(data, max_pixels=limits.MAX_IMAGE_PIXELS) as image:
        image.load()
        return fine_hash(image.convert("RGB"))


def mid_bits(fine_hashes: list[str]) -> np.ndarray:
    """The confirming bits of each 256-bit hash, packed as three uint64 words per hash."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in fine_hashes), dtype=np.uint8)
    bits = np.unpackbits(raw.reshape(len(fine_hashes), 32), axis=1).reshape(-1, FINE_HASH_SIZE, FINE_HASH_SIZE)
    return np.ascontiguousarray(np.packbits(bits[:, MID_FREQUENCY_MASK], axis=1)).view(np.uint64)


def confirm_distances(first: list[str], second: list[str]) -> np.ndarray:
    """Mid-frequency distance of each pair of 256-bit hashes (first[k] vs second[k])."""
    if not first:
        return np.zeros(0, dtype=np.int64)
    return np.bitwise_count(mid_bits(first) ^ mid_bits(second)).sum(axis=1).astype(np.int64)
