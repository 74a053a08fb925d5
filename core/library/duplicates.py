"""Duplicates in the image library: exact groups (same SHA-256), near-duplicate groups (64-bit pHash
within a Hamming threshold, each candidate confirmed by a second measure), one image checked against
the library, and deleting the extras of a group.

Candidates come from an index, never an all-pairs scan: the pHash is cut into three bands (see
core/library/hamming.py), so one image is a few hundred probes and the whole library a numpy self-join. One
image is checked against a per-process in-memory copy of every pHash (LibraryIndex: ≈ 2 ms a query at
1,000,000 images on Postgres, against 6–25 ms for the same probes in SQL); the indexed band columns
(cls_images.phash_band0..2) serve the SQL path, kept as the fallback and as the reference in tests.

Why a confirmation: on homogeneous collections (packshots on one background, inspection images of one
part) the 64-bit pHash is dominated by the shared layout; on our edited-real-photo set 42 % of the pairs
within distance 8 were different images (65 % among packshots). Each candidate pair must also agree on
the mid frequencies of a 256-bit pHash of the thumbnail (imagehash, hash_size=16): only its 192 bits
outside the 8×8 low-frequency corner are compared, frequencies the 64-bit hash never sees, so the two
measures are independent rather than one hash read twice. With it, pair precision 0.58 → 0.997 at
recall 0.91 (threshold 8); figures: bench/bench_duplicates.py.
"""

from __future__ import annotations

import logging
import numbers
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sqlalchemy import Integer, bindparam, func, or_, select, text, union, update
from sqlalchemy.orm import Session

from core.config import get_settings
from core.errors import InvalidInput, NotFound
from core.library.crop_duplicates import crop_matches, library_crop_pairs
from core.library.decode import decode_image
from core.library.fingerprints import (
    CONFIRM_MAX_DISTANCE,
    confirm_distances,
    fine_hash_of_bytes,
    mid_bits,
)
from core.library.hamming import (
    band_probes,
    band_values,
    connected_groups,
    hash_to_int,
    pairs_within,
    to_uint64,
)
from core.library.images import delete_images
from core.library.library_index import (
    library_index,
)
from core.models import ClsImage
from core.permissions import requires
from core.storage import get_storage
from core.users import User

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 8
"""Default largest pHash Hamming distance (of 64 bits) for a near-duplicate candidate."""

MAX_THRESHOLD = 12
"""Largest threshold accepted: beyond it 64-bit pHash matches unrelated images (random pairs average
32) and a query would probe over 20,000 band values."""



# ---------------------------------------------------------------- the second measure


def check_threshold(threshold: Any) -> int:
    """A threshold from a form, CLI or caller as an int in 0..MAX_THRESHOLD, else InvalidInput."""
    if isinstance(threshold, str) and threshold.strip().isdigit():
        threshold = int(threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Integral) \
            or not 0 <= threshold <= MAX_THRESHOLD:
        raise InvalidInput(f"threshold must be a whole number from 0 to {MAX_THRESHOLD}, got {threshold!r}")
    return int(threshold)


def ensure_fine_hashes(*, session: Session, storage, image_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The 256-bit hash of each image, computed from its thumbnail (or original) and stored where
    missing (rows ingested before ingest stored it, or written around it). Images whose bytes cannot
    be read are left out: they cannot be confirmed."""
    found, computed = _fine_hashes(session, storage, image_ids)
    _store_fine_hashes(session, computed)
    return found


def _fine_hashes(session: Session, storage, image_ids: Iterable[uuid.UUID]) -> tuple[dict, dict]:
    """(every hash found or computed, the newly computed ones) without writing anything."""
    ids = list(image_ids)
    found: dict[uuid.UUID, str] = {}
    computed: dict[uuid.UUID, str] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(select(ClsImage.id, ClsImage.phash256, ClsImage.thumbnail_path, ClsImage.storage_path)
                               .where(ClsImage.id.in_(ids[start:start + 500])))
        for image_id, stored, thumb, original in rows.all():
            value = stored or _hash_stored_image(storage, thumb, original)
            if value is not None:
                found[image_id] = value
                if not stored:
                    computed[image_id] = value
    return found, computed


def _store_fine_hashes(session: Session, computed: dict[uuid.UUID, str]) -> None:
    for image_id, value in computed.items():
        session.execute(update(ClsImage).where(ClsImage.id == image_id).values(phash256=value))


def _hash_stored_image(storage, thumb: str | None, original: str) -> str | None:
    for key in (thumb, original):
        if not key:
            continue
        try:
            data = storage.get(key)
            if key == thumb:
                return fine_hash_of_bytes(data)
            return decode_image(data, max_pixels=get_settings().max_image_pixels).phash256
        except Exception as exc:  # a missing or unreadable object: try the next, else give up
            log.warning("cannot hash %s for duplicate confirmation: %s", key, exc)
    return None


# ---------------------------------------------------------------- groups


def exact_duplicate_groups(*, session: Session) -> list[list[uuid.UUID]]:
    """Images with the same SHA-256, oldest first in each group; largest groups first."""
    repeated = (select(ClsImage.file_hash).where(ClsImage.file_hash.is_not(None))
                .group_by(ClsImage.file_hash).having(func.count() > 1))
    rows = session.execute(select(ClsImage.file_hash, ClsImage.id).where(ClsImage.file_hash.in_(repeated))
                           .order_by(ClsImage.file_hash, ClsImage.created_at, ClsImage.id))
    groups: dict[str, list[uuid.UUID]] = {}
    for file_hash, image_id in rows:
        groups.setdefault(file_hash, []).append(image_id)
    return sorted(groups.values(), key=len, reverse=True)


def _library_hashes(session: Session) -> tuple[list[uuid.UUID], np.ndarray, list[tuple[uuid.UUID, str]]]:
    """Every image with a pHash, oldest first, and those written around the ORM without bands."""
    ids: list[uuid.UUID] = []
    hexes: list[str] = []
    unbanded: list[tuple[uuid.UUID, str]] = []
    # Plain rows from the connection: ORM result processing of 1,000,000 rows was seconds of its own.
    rows = session.connection().execute(select(ClsImage.id, ClsImage.phash, ClsImage.phash_band0)
                                        .where(ClsImage.phash.is_not(None))
                                        .order_by(ClsImage.created_at, ClsImage.id))
    for image_id, phash, band0 in rows:
        ids.append(image_id)
        hexes.append(phash)
        if band0 is None:
            unbanded.append((image_id, phash))
    return ids, to_uint64(hexes), unbanded


def _store_bands(session: Session, unbanded: list[tuple[uuid.UUID, str]]) -> None:
    for image_id, phash in unbanded:
        band0, band1, band2 = band_values(hash_to_int(phash))
        session.execute(update(ClsImage).where(ClsImage.id == image_id)
                        .values(phash_band0=band0, phash_band1=band1, phash_band2=band2))


def near_duplicate_groups(*, session: Session, storage, threshold: int = DEFAULT_THRESHOLD, confirm: bool = True,
                          crops: bool = True, progress: Callable[..., None] | None = None) -> list[list[uuid.UUID]]:
    """Groups of images whose pHashes are within `threshold` (connected through confirmed pairs),
    oldest first in each group; largest groups first. `confirm=False` gives the raw pHash groups.
    `crops` (with `confirm`): also copies cropped by up to ~10 % per side, through the stored sub-crop
    hashes (core/library/crop_duplicates.py)."""
    threshold = check_threshold(threshold)
    report = progress or (lambda *args, **kwargs: None)
    report(0, 3, "loading hashes")
    ids, hashes, unbanded = _library_hashes(session)
    report(1, 3, f"searching {len(ids):,} hashes")
    pair_i, pair_j, _distance = pairs_within(hashes, threshold)
    computed: dict[uuid.UUID, str] = {}
    if confirm and len(pair_i):
        report(2, 3, f"confirming {len(pair_i):,} candidate pairs")
        involved = np.unique(np.concatenate([pair_i, pair_j]))
        fine, computed = _fine_hashes(session, storage, [ids[k] for k in involved])
        keep = _confirmed(ids, fine, pair_i, pair_j)
        pair_i, pair_j = pair_i[keep], pair_j[keep]
    if confirm and crops:
        report(2, 3, "pairing cropped copies")
        crop_i, crop_j = library_crop_pairs(session, ids, hashes, lambda wanted: _fine_into(session, storage, wanted,
                                                                                            computed))
        pair_i, pair_j = np.concatenate([pair_i, crop_i]), np.concatenate([pair_j, crop_j])
    report(3, 3, "grouping")
    groups = [[ids[k] for k in members] for members in connected_groups(len(ids), pair_i, pair_j)]
    # Writes come last: a job reports progress through another connection and SQLite has one writer.
    _store_bands(session, unbanded)
    _store_fine_hashes(session, computed)
    return sorted(groups, key=len, reverse=True)


def _fine_into(session: Session, storage, wanted: list, computed: dict) -> dict:
    """The 256-bit hashes of `wanted` (found or computed), adding the computed ones to `computed`."""
    found, new = _fine_hashes(session, storage, wanted)
    computed.update(new)
    return found


def _confirmed(ids: list, fine: dict, pair_i: np.ndarray, pair_j: np.ndarray) -> np.ndarray:
    """Which pairs the second measure confirms (a pair without both fine hashes is not confirmed)."""
    involved = np.unique(np.concatenate([pair_i, pair_j]))
    has = np.array([ids[k] in fine for k in involved], dtype=bool)
    words = np.zeros((len(involved), 3), dtype=np.uint64)
    if has.any():
        words[has] = mid_bits([fine[ids[k]] for k in involved[has]])
    first, second = np.searchsorted(involved, pair_i), np.searchsorted(involved, pair_j)
    distances = np.bitwise_count(words[first] ^ words[second]).sum(axis=1)
    return has[first] & has[second] & (distances <= CONFIRM_MAX_DISTANCE)


def near_duplicate_components(hashes: dict[uuid.UUID, int | str], threshold: int = DEFAULT_THRESHOLD, *,
                              confirm_hashes: dict[uuid.UUID, str] | None = None) -> list[set[uuid.UUID]]:
    """Pure: groups (two or more members) of ids whose pHashes (ints or hex) are within `threshold`.
    With `confirm_hashes` (id -> 256-bit hex, as in cls_images.phash256), a pair only links its two
    images when both have one and it confirms them. For keeping near duplicates in one split."""
    threshold = check_threshold(threshold)
    ids = list(hashes)
    pair_i, pair_j, _distance = pairs_within(to_uint64([hashes[k] for k in ids]), threshold)
    if confirm_hashes is not None and len(pair_i):
        keep = _confirmed(ids, confirm_hashes, pair_i, pair_j)
        pair_i, pair_j = pair_i[keep], pair_j[keep]
    return [{ids[k] for k in members} for members in connected_groups(len(ids), pair_i, pair_j)]


# ---------------------------------------------------------------- one image against the library


def _band_condition(session: Session, value: int, threshold: int):
    """Rows whose pHash may be within `threshold` of `value`: the band-index probes (no scan). On
    Postgres the exact distance is checked in SQL too, so only true candidates travel back, and each
    band's probes go as one array parameter, so the statement text never changes (prepared once)."""
    probes = band_probes(value, threshold)
    columns = (ClsImage.phash_band0, ClsImage.phash_band1, ClsImage.phash_band2)
    if session.get_bind().dialect.name != "postgresql":
        return or_(*(column.in_(values) for column, values in zip(columns, probes, strict=True)))
    from sqlalchemy.dialects.postgresql import ARRAY

    distance = text("bit_count(('x' || cls_images.phash)::bit(64) # ('x' || :probe_hash)::bit(64)) "
                    "<= :probe_threshold").bindparams(probe_hash=f"{value:016x}", probe_threshold=threshold)
    per_band = [select(ClsImage.id).where(column == func.any(bindparam(f"band{k}", values, type_=ARRAY(Integer))),
                                          distance)
                for k, (column, values) in enumerate(zip(columns, probes, strict=True))]
    return ClsImage.id.in_(union(*per_band))


def _candidate_rows(session: Session, columns, file_hash: str | None, value: int | None, threshold: int,
                    use_index: bool) -> tuple[list, list]:
    """(rows with the same SHA-256, rows whose stored pHash may be within `threshold` of `value`).
    With the in-memory index: one query reads back its candidates, the exact matches and the rows
    created since it last caught up (which it then takes in). With use_index=False (or when the index
    fails): the band-index SQL."""
    if use_index and value is not None:
        try:
            index = library_index(session)
            candidates, since, now = index.search(session, value, threshold)
            conditions = [ClsImage.created_at >= since, ClsImage.id.in_(candidates[:1000])]
            if file_hash:
                conditions.append(ClsImage.file_hash == file_hash)
            rows = session.execute(select(*columns, ClsImage.created_at).where(or_(*conditions))).all()
            index.absorb([row for row in rows if row.created_at is not None and row.created_at >= since], now)
            for start in range(1000, len(candidates), 1000):
                rows += session.execute(select(*columns, ClsImage.created_at)
                                        .where(ClsImage.id.in_(candidates[start:start + 1000]))).all()
        except Exception:  # the database path below gives the same answer, only slower
            log.exception("in-memory duplicate index failed; using the database index")
        else:
            exact = {row.id: row for row in rows if file_hash and row.file_hash == file_hash}
            return list(exact.values()), list({row.id: row for row in rows if row.id not in exact}.values())
    exact = session.execute(select(*columns).where(ClsImage.file_hash == file_hash)).all() if file_hash else []
    if value is None:
        return exact, []
    return exact, session.execute(select(*columns).where(_band_condition(session, value, threshold))).all()


def _matches(*, session: Session, storage, phash: str | None, fine: str | None, file_hash: str | None,
             threshold: int, exclude: uuid.UUID | None, use_index: bool = True,
             crops: tuple[bytes | None, bytes | None] = (None, None)) -> list[dict[str, Any]]:
    """Exact matches (same SHA-256), confirmed near matches and confirmed crop matches (`crops`: the
    image's crop_phash and crop_phash256; always through the in-memory index), as display-ready rows."""
    columns = (ClsImage.id, ClsImage.phash, ClsImage.phash256, ClsImage.file_hash, ClsImage.original_filename,
               ClsImage.thumbnail_path)
    value = hash_to_int(phash) if phash and fine else None
    exact_rows, near_rows = _candidate_rows(session, columns, file_hash, value, threshold, use_index)
    found: dict[uuid.UUID, dict[str, Any]] = {}
    for row in exact_rows:
        if row.id != exclude:
            found[row.id] = {"id": row.id, "match": "exact", "filename": row.original_filename,
                             "phash_distance": 0, "confirm_distance": 0, "thumbnail_path": row.thumbnail_path}
    near = []
    for row in near_rows:
        distance = (hash_to_int(row.phash) ^ value).bit_count() if row.phash else threshold + 1
        if row.id != exclude and row.id not in found and distance <= threshold:
            near.append((row, distance))
    fines = {row.id: row.phash256 for row, _ in near if row.phash256}
    if unhashed := [row.id for row, _ in near if not row.phash256]:
        if storage is None:
            storage = get_storage()
        fines.update(ensure_fine_hashes(session=session, storage=storage, image_ids=unhashed))
    usable = [(row, d) for row, d in near if row.id in fines]
    confirms = confirm_distances([fine] * len(usable), [fines[row.id] for row, _ in usable]).tolist()
    for (row, distance), confirm in zip(usable, confirms, strict=True):
        if confirm <= CONFIRM_MAX_DISTANCE:
            found[row.id] = {"id": row.id, "match": "near", "filename": row.original_filename,
                             "phash_distance": distance, "confirm_distance": confirm,
                             "thumbnail_path": row.thumbnail_path}
    try:
        for match in crop_matches(session, phash=phash, fine=fine, crop_phash=crops[0], crop_phash256=crops[1],
                                  exclude={exclude, *found}):
            found[match["id"]] = match
    except Exception:  # crop matches add to the answer; without them it is still the near-duplicate one
        log.exception("crop duplicate search failed")
    return sorted(found.values(),
                  key=lambda m: (m["match"] != "exact", m["phash_distance"], m["confirm_distance"], str(m["id"])))


def duplicates_of(*, session: Session, image_id: uuid.UUID, threshold: int = DEFAULT_THRESHOLD,
                  storage=None, use_index: bool = True) -> list[dict[str, Any]]:
    """Exact and confirmed near duplicates of one library image (for its detail view). `use_index`:
    candidates from this process's in-memory index (LibraryIndex), else from the band-index SQL."""
    threshold = check_threshold(threshold)
    image = session.execute(select(ClsImage.id, ClsImage.phash, ClsImage.phash256, ClsImage.file_hash,
                                   ClsImage.crop_phash, ClsImage.crop_phash256)
                            .where(ClsImage.id == image_id)).first()
    if image is None:
        raise NotFound(f"no image {image_id}")
    fine = image.phash256
    if image.phash and not fine:
        if storage is None:
            storage = get_storage()
        fine = ensure_fine_hashes(session=session, storage=storage, image_ids=[image.id]).get(image.id)
    return _matches(session=session, storage=storage, phash=image.phash, fine=fine, file_hash=image.file_hash,
                    threshold=threshold, exclude=image.id, use_index=use_index,
                    crops=(image.crop_phash, image.crop_phash256))


def check_image(*, session: Session, data: bytes, threshold: int = DEFAULT_THRESHOLD, storage=None,
                use_index: bool = True) -> dict[str, Any]:
    """One uploaded image (not stored) against the library: its hashes, exact and near matches
    (`use_index` as in duplicates_of)."""
    threshold = check_threshold(threshold)
    settings = get_settings()
    if len(data) > settings.max_upload_bytes:
        raise InvalidInput(f"file is {len(data):,} bytes, over the limit of {settings.max_upload_bytes:,}")
    decoded = decode_image(data, max_pixels=settings.max_image_pixels)
    fine = decoded.phash256 or fine_hash_of_bytes(decoded.thumbnail)
    matches = _matches(session=session, storage=storage, phash=decoded.phash, fine=fine, file_hash=decoded.sha256,
                       threshold=threshold, exclude=None, use_index=use_index,
                       crops=(decoded.crop_phash, decoded.crop_phash256))
    return {"file_hash": decoded.sha256, "phash": decoded.phash, "phash256": fine, "threshold": threshold,
            "exact": [m["id"] for m in matches if m["match"] == "exact"],
            "near": [m for m in matches if m["match"] != "exact"]}


# ---------------------------------------------------------------- clean-up


@requires("admin", "deleting images")
def delete_extras(*, session: Session, actor: User, storage, group_keep: dict[uuid.UUID, list[uuid.UUID]]) -> int:
    """Delete the extras of each group (rows now, original and thumbnail objects once the transaction
    commits) and keep one image per group. Refuses, deleting nothing, when a kept image is missing or
    would itself be deleted."""
    kept = set(group_keep)
    extras: list[uuid.UUID] = []
    for group_extras in group_keep.values():
        for extra in group_extras:
            if extra in kept:
                raise InvalidInput(f"image {extra} is both kept and marked for deletion; nothing was deleted")
            extras.append(extra)
    present = set()
    keep_list = list(kept)
    for start in range(0, len(keep_list), 500):
        present |= set(session.scalars(select(ClsImage.id).where(ClsImage.id.in_(keep_list[start:start + 500]))))
    if missing := kept - present:
        raise NotFound(f"image to keep {sorted(map(str, missing))[0]} no longer exists; nothing was deleted")
    return delete_images(session=session, actor=actor, storage=storage, image_ids=list(dict.fromkeys(extras)))


# ---------------------------------------------------------------- the review view's background search


