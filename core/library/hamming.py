"""Hamming-distance search over 64-bit perceptual hashes by multi-index hashing (Norouzi, Punjani &
Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012).

The 64 bits are cut into three bands of 21/21/22 bits. Two hashes within distance t agree within
distance t // 3 on at least one band (pigeonhole), so a radius-t search probes, in each band, only
the band values within t // 3 bit flips (232 of them per band at t = 8) and checks the few hashes found
there. The database indexes the same bands (cls_images.phash_band0..2), so a single-image query is a
few hundred index probes; `pairs_within` does the whole-library self-join in memory with numpy.

Written by hand because no maintained library does this self-join fast enough here: faiss's
IndexBinaryMultiHash.range_search took 22 s for 100,000 of 1,000,000 queries (≈ 220 s for all) on
one core, this numpy version ≈ 18 s for all; a Python BK-tree is slower still.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

BANDS: tuple[tuple[int, int], ...] = ((0, 21), (21, 42), (42, 64))
"""Bit ranges [low, high) of the three bands of a 64-bit hash (bit 0 = least significant)."""

UINT64_MASK = (1 << 64) - 1


def hash_to_int(value: str | int) -> int:
    """A 64-bit hash as an unsigned int, from imagehash's 16-hex-char text or a (signed) int."""
    if isinstance(value, str):
        return int(value, 16) & UINT64_MASK
    return int(value) & UINT64_MASK


def band_values(value: int) -> tuple[int, int, int]:
    """The three band values of an unsigned 64-bit hash."""
    return tuple((value >> low) & ((1 << (high - low)) - 1) for low, high in BANDS)  # type: ignore[return-value]


def band_radius(threshold: int) -> int:
    """Per-band search radius that cannot miss a pair within `threshold` (pigeonhole over 3 bands)."""
    return threshold // len(BANDS)


@lru_cache(maxsize=32)
def flip_masks(bits: int, radius: int) -> np.ndarray:
    """Every mask of `bits` bits with 1..radius bits set (the zero mask is left out)."""
    masks = [sum(1 << b for b in combo) for k in range(1, radius + 1)
             for combo in itertools.combinations(range(bits), k)]
    return np.array(masks, dtype=np.int64)


def band_probes(value: int, threshold: int) -> list[list[int]]:
    """For each band, the band values a hash within `threshold` of `value` may have there."""
    radius = band_radius(threshold)
    probes = []
    for (low, high), band in zip(BANDS, band_values(value), strict=True):
        masks = flip_masks(high - low, radius)
        probes.append([band, *(band ^ masks).tolist()])
    return probes


def to_uint64(values) -> np.ndarray:
    """A list of hashes (hex text or ints, signed or not) as a uint64 array."""
    return np.array([hash_to_int(v) for v in values], dtype=np.uint64)


def pairs_within(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All index pairs (i < j) whose hashes differ in at most `threshold` bits, with the distances.

    Per band: sort the hashes by band value and count them per value (a table of 2^bits offsets), then
    for every flip mask look up, for each hash, the bucket of (its band value ^ mask). A mask is only
    applied to band values whose highest masked bit is 0, so each unordered pair is met once per band;
    pairs met in several bands are de-duplicated at the end.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, empty
    found = [pair for low, high in BANDS for pair in _band_pairs(hashes, low, high, threshold)]
    if not found:
        return empty, empty, empty
    first = np.concatenate([i for i, _ in found]).astype(np.int64)
    second = np.concatenate([j for _, j in found]).astype(np.int64)
    keys = np.unique(np.minimum(first, second) * n + np.maximum(first, second))
    pair_i, pair_j = keys // n, keys % n
    return pair_i, pair_j, np.bitwise_count(hashes[pair_i] ^ hashes[pair_j]).astype(np.int64)


def _band_pairs(hashes: np.ndarray, low: int, high: int, threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Close pairs met through one band (see `pairs_within`)."""
    bits = high - low
    n = len(hashes)
    band = ((hashes >> np.uint64(low)) & np.uint64((1 << bits) - 1)).astype(np.int32)
    order = np.argsort(band, kind="stable").astype(np.int32)
    band_sorted = band[order]
    hashes_sorted = hashes[order]
    starts = np.zeros((1 << bits) + 1, dtype=np.int32)
    np.cumsum(np.bincount(band_sorted, minlength=1 << bits), out=starts[1:])
    found = []
    # Same band value: each hash against the ones after it in its bucket.
    positions = np.arange(n, dtype=np.int32)
    found.append(_bucket_pairs(hashes_sorted, threshold, positions, positions + 1,
                               starts[band_sorted + 1] - positions - 1))
    masks = flip_masks(bits, band_radius(threshold))
    for top_bit in range(bits):
        group = masks[(masks >= (1 << top_bit)) & (masks < (1 << (top_bit + 1)))]
        if len(group) == 0:
            continue
        query_pos = np.nonzero(((band_sorted >> top_bit) & 1) == 0)[0].astype(np.int32)
        query_band = band_sorted[query_pos]
        for mask in group:
            probe = query_band ^ np.int32(mask)
            bucket_start = starts[probe]
            found.append(_bucket_pairs(hashes_sorted, threshold, query_pos, bucket_start,
                                       starts[probe + 1] - bucket_start))
    return [(order[i], order[j]) for i, j in found if len(i)]


def _bucket_pairs(hashes_sorted: np.ndarray, threshold: int, query_pos: np.ndarray, bucket_start: np.ndarray,
                  bucket_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in band order) of each query and each member of its bucket, kept when close enough."""
    hit = np.nonzero(bucket_count)[0]
    counts = bucket_count[hit]
    query = np.repeat(query_pos[hit], counts)
    offsets = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    partner = np.repeat(bucket_start[hit].astype(np.int64), counts) + offsets
    close = np.bitwise_count(hashes_sorted[query] ^ hashes_sorted[partner]) <= threshold
    return query[close], partner[close]


def connected_groups(n: int, pair_i: np.ndarray, pair_j: np.ndarray) -> list[np.ndarray]:
    """Connected components (of two or more members) of the graph with n nodes and the given edges."""
    if len(pair_i) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pair_i), dtype=np.int8), (pair_i, pair_j)), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    grouped = np.nonzero(np.bincount(labels)[labels] > 1)[0]  # singletons never reach the split
    order = grouped[np.argsort(labels[grouped], kind="stable")]
    cuts = np.nonzero(np.diff(labels[order]))[0] + 1
    return np.split(order, cuts)


_PROBE_COST_IN_HASHES = 200
"""One band probe (a binary search) costs about as much as scanning this many hashes (measured here)."""


class HashIndex:
    """An in-memory multi-index over 64-bit hashes for radius queries (one image against a library).

    Per band, the band values sorted once (with the positions they came from); a radius-t query looks
    up, in each band, the ranges of the band values within t // 3 flips (`searchsorted`, a few hundred
    probes) and checks only the hashes found there: ≈ 0.4 ms at threshold 8 over 1,000,000 hashes,
    a third of one XOR + popcount pass over all of them (which wide thresholds, 9 and up, use instead:
    thousands of probes cost more). Hashes added later go to a small tail that is scanned whole and
    merged into the sorted bands once it outgrows them by 1/8 (`add`). `keys` (ids, any numpy dtype)
    travel with the hashes and come back from `search`.
    """

    def __init__(self, hashes: np.ndarray | None = None, keys: np.ndarray | None = None):
        hashes = np.zeros(0, dtype=np.uint64) if hashes is None else np.ascontiguousarray(hashes, dtype=np.uint64)
        keys = np.zeros(0, dtype="V16") if keys is None else np.asarray(keys)
        if len(hashes) != len(keys):
            raise ValueError("hashes and keys must have the same length")
        self._build(hashes, keys)

    def _build(self, hashes: np.ndarray, keys: np.ndarray) -> None:
        self.hashes, self.keys = hashes, keys
        self._bands = []
        for low, high in BANDS:
            band = ((hashes >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)).astype(np.int32)
            order = np.argsort(band, kind="stable").astype(np.int32)
            self._bands.append((band[order], order))
        self._tail_hashes = np.zeros(0, dtype=np.uint64)
        self._tail_keys = keys[:0]

    def __len__(self) -> int:
        return len(self.hashes) + len(self._tail_hashes)

    def add(self, hashes: np.ndarray, keys: np.ndarray) -> None:
        """Append hashes (and their keys); merged into the sorted bands once the tail grows large."""
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        if len(hashes) != len(keys):
            raise ValueError("hashes and keys must have the same length")
        if not len(hashes):
            return
        if not len(self):  # the first hashes: sorted at once, and their keys set the key type
            self._build(hashes, np.asarray(keys))
            return
        self._tail_hashes = np.concatenate([self._tail_hashes, hashes])
        self._tail_keys = np.concatenate([self._tail_keys, np.asarray(keys, dtype=self.keys.dtype)])
        if len(self._tail_hashes) > max(4096, len(self.hashes) // 8):
            self._build(np.concatenate([self.hashes, self._tail_hashes]),
                        np.concatenate([self.keys, self._tail_keys]))

    def search(self, value: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys of every hash within `threshold` bits of `value`, and their distances (any order; a
        key added twice comes back twice)."""
        value = hash_to_int(value)
        radius = band_radius(threshold)
        target = np.uint64(value)
        probes_per_band = 1 + len(flip_masks(BANDS[0][1] - BANDS[0][0], radius))
        if len(BANDS) * probes_per_band * _PROBE_COST_IN_HASHES > len(self.hashes):
            # A wide radius (t ≥ 9 at 1M hashes): thousands of probes cost more than one XOR + popcount pass.
            positions = np.nonzero(np.bitwise_count(self.hashes ^ target) <= threshold)[0]
        else:
            positions = self._band_candidates(value, radius)
        distances = np.bitwise_count(self.hashes[positions] ^ target)
        close = distances <= threshold
        tail_distances = np.bitwise_count(self._tail_hashes ^ target)
        tail_close = tail_distances <= threshold
        keys = np.concatenate([self.keys[positions[close]], self._tail_keys[tail_close]])
        return keys, np.concatenate([distances[close], tail_distances[tail_close]]).astype(np.int64)

    def _band_candidates(self, value: int, radius: int) -> np.ndarray:
        """Positions of the hashes within `radius` of `value` on at least one band."""
        found = []
        for (low, high), (sorted_band, order) in zip(BANDS, self._bands, strict=True):
            band = (value >> low) & ((1 << (high - low)) - 1)
            probes = np.concatenate([[band], band ^ flip_masks(high - low, radius)]).astype(np.int32)
            start = np.searchsorted(sorted_band, probes, side="left")
            count = np.searchsorted(sorted_band, probes, side="right") - start
            hit = np.nonzero(count)[0]
            if len(hit):
                counts = count[hit]
                offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                found.append(order[np.repeat(start[hit], counts) + offsets])
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
