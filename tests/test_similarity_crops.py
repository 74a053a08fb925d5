"""Crop-robust near duplicates on real photos (skimage's samples): copies cropped by 3-10 % per side
are found by the multi-crop hashes, which the whole-image pHash misses, and distinct overlapping
tiles of one photo are not paired."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sqlalchemy import select, update

from core.library.crop_hashes import crop_duplicate_pairs, crop_hashes


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


# ---------------------------------------------------------------- wired into the library


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _library_set():
    """A real photo tile, a copy cropped by 6-9 % per side, and the overlapping neighbour tile (a
    different image the crops must not pair)."""
    tiles = real_tiles()
    base, neighbour = tiles[0], tiles[1]
    w, h = base.size
    cropped = base.crop((int(w * 0.07), int(h * 0.06), w - int(w * 0.09), h - int(h * 0.08)))
    return {"base": _png(base), "cropped": _png(cropped), "neighbour": _png(neighbour)}


def _ingest(stack, images: dict[str, bytes]) -> dict:
    from core.library.ingest import ingest_bytes
    from tests.factories import ADMIN

    ids = {}
    with stack.session() as session:
        for name, data in images.items():
            result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data,
                                  filename=f"{name}.png", skip_duplicates=False)
            assert result.status == "imported", result.error
            ids[name] = result.image_id
    return ids


def test_ingest_stores_sub_crop_hashes_and_the_finder_groups_a_cropped_copy(stack):
    from core.library.crop_hashes import VIEW_NAMES, thumbnail_hashes
    from core.library.duplicates import check_image, duplicates_of, near_duplicate_groups
    from core.models import ClsImage

    images = _library_set()
    ids = _ingest(stack, {"base": images["base"], "neighbour": images["neighbour"]})
    with stack.session() as session:
        probe = check_image(session=session, data=images["cropped"])
        rows = session.execute(select(ClsImage.thumbnail_path, ClsImage.crop_phash, ClsImage.crop_phash256)).all()
    assert all(len(coarse) == 8 * len(VIEW_NAMES) and len(fine) == 32 * len(VIEW_NAMES) for _, coarse, fine in rows)
    assert all(thumbnail_hashes(stack.storage.get(thumb))[1:] == (coarse, fine) for thumb, coarse, fine in rows)
    assert [(m["id"], m["match"]) for m in probe["near"]] == [(ids["base"], "crop")], \
        "an upload cropped from a library image finds it (its whole hash against the library's views)"

    ids |= _ingest(stack, {"cropped": images["cropped"]})
    with stack.session() as session:
        of_base = duplicates_of(session=session, image_id=ids["base"])
        of_crop = duplicates_of(session=session, image_id=ids["cropped"])
        groups = near_duplicate_groups(session=session, storage=stack.storage)
        without = near_duplicate_groups(session=session, storage=stack.storage, crops=False)
    assert [(m["id"], m["match"]) for m in of_base] == [(ids["cropped"], "crop")], "the original's views find it"
    assert [(m["id"], m["match"]) for m in of_crop] == [(ids["base"], "crop")]
    assert [set(g) for g in groups] == [{ids["base"], ids["cropped"]}], "grouped; the neighbour tile is not"
    assert without == [], "the whole-image pHash alone misses this crop"


def test_backfill_gives_old_rows_their_crop_hashes(stack, monkeypatch):
    from core.library.crop_duplicates import backfill_crop_hashes
    from core.library.duplicates import near_duplicate_groups
    from core.models import ClsImage
    from tests.factories import ADMIN

    ids = _ingest(stack, _library_set())
    with stack.session() as session:
        stored = {row.id: (row.crop_phash, row.crop_phash256) for row in session.execute(
            select(ClsImage.id, ClsImage.crop_phash, ClsImage.crop_phash256))}
        session.execute(update(ClsImage).values(crop_phash=None, crop_phash256=None))
    with stack.session() as session:
        assert near_duplicate_groups(session=session, storage=stack.storage) == [], "no views: no crop pairs"
    with stack.session() as session:
        first = backfill_crop_hashes(session=session, actor=ADMIN, storage=stack.storage, limit=1)
        session.execute(update(ClsImage).values(crop_phash=None, crop_phash256=None))
    assert first == {"hashed": 1, "failed": 0, "remaining": 2}
    stack.storage.delete(_thumb(stack, ids["neighbour"]))
    with stack.session() as session:
        rest = backfill_crop_hashes(session=session, actor=ADMIN, storage=stack.storage)
    assert rest == {"hashed": 2, "failed": 1, "remaining": 1}, "an unreadable thumbnail is counted and left"
    with stack.session() as session:
        now = {row.id: (row.crop_phash, row.crop_phash256) for row in session.execute(
            select(ClsImage.id, ClsImage.crop_phash, ClsImage.crop_phash256))}
        groups = near_duplicate_groups(session=session, storage=stack.storage)
    assert all(now[ids[k]] == stored[ids[k]] for k in ("base", "cropped")), "the same hashes ingest stores"
    assert now[ids["neighbour"]] == (None, None)
    assert [set(g) for g in groups] == [{ids["base"], ids["cropped"]}]


def _thumb(stack, image_id) -> str:
    from core.models import ClsImage

    with stack.session() as session:
        return session.get(ClsImage, image_id).thumbnail_path


def test_cli_backfills_and_refuses_a_bad_limit(embedded_stack, capsys):
    import json

    from core.cli import main
    from core.models import ClsImage

    _ingest(embedded_stack, {"base": _library_set()["base"]})
    with embedded_stack.session() as session:
        session.execute(update(ClsImage).values(crop_phash=None, crop_phash256=None))
    assert main(["duplicates", "--backfill-crops", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    assert main(["duplicates", "--backfill-crops"]) == 0
    assert json.loads(capsys.readouterr().out) == {"hashed": 1, "failed": 0, "remaining": 0}
