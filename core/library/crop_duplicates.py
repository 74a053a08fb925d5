"""Near duplicates that survive crops, against the library: the duplicate finder's whole-library pairs
and one image's matches, from the sub-crop view hashes ingest stores (cls_images.crop_phash,
crop_phash256; the method and its figures: core/library/crop_hashes.py), and the backfill that
gives them to rows ingested before (`python -m core duplicates --backfill-crops`).

A crop pair links the whole image of one to a sub-crop view of the other (pHash ≤ CROP_THRESHOLD),
confirmed on those two views' 256-bit hashes (crop_confirm_limit). Whole-against-whole
pairs stay with core/library/duplicates.py at the caller's threshold. Images without stored views
(not backfilled yet) still pair through their whole hash, against other images' views."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.library.crop_hashes import (
    CROP_THRESHOLD,
    VIEW_NAMES,
    crop_confirm_limit,
    thumbnail_hashes,
    unpack_coarse,
    unpack_fine,
)
from core.library.fingerprints import confirm_distances
from core.library.hamming import hash_to_int, pairs_within
from core.library.library_index import library_index
from core.models import ClsImage
from core.permissions import requires
from core.users import User

log = logging.getLogger(__name__)

BACKFILL_BATCH = 200
"""Rows hashed and written per transaction by the backfill (a few seconds of work each)."""


def _stored_views(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[bytes, bytes]]:
    found: dict[uuid.UUID, tuple[bytes, bytes]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(select(ClsImage.id, ClsImage.crop_phash, ClsImage.crop_phash256)
                               .where(ClsImage.id.in_(ids[start:start + 500]), ClsImage.crop_phash.is_not(None)))
        found.update((image_id, (bytes(coarse), bytes(fine))) for image_id, coarse, fine in rows)
    return found


def library_crop_pairs(session: Session, ids: list[uuid.UUID], hashes: np.ndarray,
                       fine_of: Callable[[list[uuid.UUID]], dict[uuid.UUID, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed crop pairs (positions into `ids`, i < j) among the library's images; `hashes`: their
    whole pHashes; `fine_of(ids)`: their 256-bit whole hashes (computed where missing)."""
    views = _stored_views(session, ids)
    owners = np.array([k for k, image_id in enumerate(ids) if image_id in views], dtype=np.int64)
    coarse = unpack_coarse([views[ids[k]][0] for k in owners])
    per = len(VIEW_NAMES)
    flat = np.concatenate([np.asarray(hashes, dtype=np.uint64), coarse.reshape(-1)])
    owner = np.concatenate([np.arange(len(ids)), np.repeat(owners, per)])
    view = np.concatenate([np.full(len(ids), -1), np.tile(np.arange(per), len(owners))])
    pi, pj, phash_distance = pairs_within(flat, CROP_THRESHOLD)
    # whole of one against a view of another: whole-whole pairs are the caller's, view-view add only noise
    keep = (owner[pi] != owner[pj]) & ((view[pi] < 0) ^ (view[pj] < 0))
    pi, pj, phash_distance = pi[keep], pj[keep], phash_distance[keep]
    whole, cropped = np.where(view[pi] < 0, pi, pj), np.where(view[pi] < 0, pj, pi)
    if not len(whole):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    fine = fine_of([ids[k] for k in np.unique(owner[whole])])
    usable = np.array([ids[owner[w]] in fine for w in whole], dtype=bool)
    whole, cropped, phash_distance = whole[usable], cropped[usable], phash_distance[usable]
    distances = confirm_distances([fine[ids[owner[w]]] for w in whole],
                                  [unpack_fine(views[ids[owner[c]]][1])[view[c]] for c in cropped])
    confirmed = distances <= crop_confirm_limit(phash_distance)
    a, b = owner[whole[confirmed]], owner[cropped[confirmed]]
    return np.minimum(a, b), np.maximum(a, b)


def crop_matches(session: Session, *, phash: str | None, fine: str | None, crop_phash: bytes | None,
                 crop_phash256: bytes | None, exclude: set) -> list[dict[str, Any]]:
    """One image's crop matches in the library (after the whole-image search has caught this process's
    LibraryIndex up): its whole hash against the library's views, its views against the library's
    whole hashes; each confirmed, as display-ready rows with match "crop" and the view that matched."""
    index = library_index(session)
    proposals: list[tuple[uuid.UUID, str, str]] = []  # (id, our view's name, whose view)
    value = hash_to_int(phash) if phash else None
    if value is not None and fine:
        proposals += [(image_id, "", "theirs") for image_id in index.search_views(value, CROP_THRESHOLD)]
    if crop_phash and crop_phash256:
        for name, view_value in zip(VIEW_NAMES, unpack_coarse([bytes(crop_phash)])[0].tolist(), strict=True):
            ids, _since, _now = index.search(session, view_value, CROP_THRESHOLD)
            proposals += [(image_id, name, "ours") for image_id in ids]
    proposals = [p for p in proposals if p[0] not in exclude]
    if not proposals:
        return []
    rows = {row.id: row for start in range(0, len(proposals), 500) for row in session.execute(
        select(ClsImage.id, ClsImage.phash, ClsImage.phash256, ClsImage.crop_phash, ClsImage.crop_phash256,
               ClsImage.original_filename, ClsImage.thumbnail_path)
        .where(ClsImage.id.in_({p[0] for p in proposals[start:start + 500]})))}
    ours = dict(zip(VIEW_NAMES, zip(unpack_coarse([bytes(crop_phash)])[0].tolist(), unpack_fine(bytes(crop_phash256)),
                                    strict=True), strict=True)) if crop_phash and crop_phash256 else {}
    best: dict[uuid.UUID, dict[str, Any]] = {}
    for image_id, name, side in proposals:
        row = rows.get(image_id)
        for view_name, distance, first, second in _pairs_to_confirm(row, side, name, value, fine, ours):
            confirm = int(confirm_distances([first], [second])[0])
            if distance <= CROP_THRESHOLD and confirm <= crop_confirm_limit(distance) and \
                    (image_id not in best or (distance, confirm) < (best[image_id]["phash_distance"],
                                                                    best[image_id]["confirm_distance"])):
                best[image_id] = {"id": image_id, "match": "crop", "filename": row.original_filename,
                                  "phash_distance": distance, "confirm_distance": confirm, "view": view_name,
                                  "thumbnail_path": row.thumbnail_path}
    return list(best.values())


def _pairs_to_confirm(row, side: str, name: str, value: int | None, fine: str | None, ours: dict):
    """(view name, pHash distance, fine hash, fine hash) of each whole/view pair a proposal stands for,
    re-checked on the stored row (deleted or changed rows propose nothing). `ours`: view name →
    (64-bit value, 256-bit hex) of the image checked."""
    if row is None:
        return
    if side == "theirs" and row.crop_phash and row.crop_phash256 and value is not None:
        their_fine = unpack_fine(bytes(row.crop_phash256))
        for k, their in enumerate(unpack_coarse([bytes(row.crop_phash)])[0].tolist()):
            yield f"theirs: {VIEW_NAMES[k]}", (their ^ value).bit_count(), fine, their_fine[k]
    elif side == "ours" and row.phash and row.phash256:
        our_value, our_fine = ours[name]
        yield f"ours: {name}", (our_value ^ hash_to_int(row.phash)).bit_count(), our_fine, row.phash256


@requires("admin", "backfilling duplicate hashes")
def backfill_crop_hashes(*, session: Session, actor: User, storage, limit: int | None = None,
                         progress: Callable[..., None] | None = None) -> dict[str, int]:
    """Give rows ingested before crop hashes existed their sub-crop view hashes (and a missing 256-bit
    hash), computed from each stored thumbnail; commits every BACKFILL_BATCH rows, so a stopped run
    keeps what it did and the next one goes on. Rows whose thumbnail cannot be read are counted and
    left as they are."""
    report = progress or (lambda *args, **kwargs: None)
    missing = select(ClsImage.id, ClsImage.thumbnail_path, ClsImage.phash256).where(
        ClsImage.crop_phash.is_(None), ClsImage.thumbnail_path.is_not(None)).order_by(ClsImage.id)
    todo = session.execute(missing.limit(limit) if limit else missing).all()
    done = failed = 0
    for start in range(0, len(todo), BACKFILL_BATCH):
        for image_id, thumb, phash256 in todo[start:start + BACKFILL_BATCH]:
            try:
                fine, crop_phash, crop_phash256 = thumbnail_hashes(storage.get(thumb))
            except Exception as exc:  # a missing or unreadable thumbnail: left for a later run
                log.warning("cannot hash %s for crop duplicates: %s", thumb, exc)
                failed += 1
                continue
            session.execute(update(ClsImage).where(ClsImage.id == image_id).values(
                crop_phash=crop_phash, crop_phash256=crop_phash256, phash256=phash256 or fine))
            done += 1
        session.commit()
        report(min(start + BACKFILL_BATCH, len(todo)), len(todo), f"{done:,} images hashed")
    remaining = session.scalar(select(func.count()).select_from(ClsImage).where(
        ClsImage.crop_phash.is_(None), ClsImage.thumbnail_path.is_not(None)))
    return {"hashed": done, "failed": failed, "remaining": int(remaining or 0)}
