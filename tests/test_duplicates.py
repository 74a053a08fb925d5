"""Duplicates (core/library/duplicates.py, core/library/hamming.py, `python -m core duplicates`, the Duplicates view):
the index against brute force, exact and confirmed near groups of real photos and their edited copies,
a homogeneous pair the confirmation must reject, deleting extras, and bad input. Service tests run on
both stacks."""

from __future__ import annotations

import io
import json
import uuid
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance
from sqlalchemy import func, insert, select, update

from core.errors import InvalidInput, NotFound
from core.library.duplicates import (
    CONFIRM_MAX_DISTANCE,
    check_image,
    check_threshold,
    delete_extras,
    duplicates_of,
    exact_duplicate_groups,
    near_duplicate_components,
    near_duplicate_groups,
)
from core.library.hamming import HashIndex, pairs_within
from core.library.ingest import ingest_bytes
from core.models import ClsImage
from tests.factories import ADMIN


def encoded(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(Image.fromarray(array) for array in load_sample_images().images)


def packshot(box: tuple[int, int, int, int]) -> bytes:
    """A crop of a real photo in an ellipse on a plain background, the layout every packshot shares."""
    canvas = Image.new("RGB", (320, 320), (245, 245, 245))
    item = photos()[0].crop(box).resize((170, 170))
    mask = Image.new("L", item.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, 169, 169), fill=255)
    canvas.paste(item, (75, 75), mask)
    return encoded(canvas)


def library_images() -> dict[str, bytes]:
    """A photo crop with an exact copy and three edited copies; another photo; two different packshots
    whose 64-bit pHashes are 4 bits apart (a pair the confirmation must reject)."""
    a = photos()[0].crop((0, 0, 320, 300))
    return {
        "a": encoded(a),
        "a_copy": encoded(a),
        "a_small": encoded(a.resize((160, 150)), "JPEG", quality=60),
        "a_bright": encoded(ImageEnhance.Brightness(a).enhance(1.3)),
        "a_crop": encoded(a.crop((5, 5, 315, 295))),
        "b": encoded(photos()[1].crop((100, 100, 420, 400))),
        "pack1": packshot((270, 90, 430, 250)),
        "pack2": packshot((270, 180, 430, 340)),
    }


def ingest_library(stack, names: list[str] | None = None) -> dict[str, uuid.UUID]:
    ids = {}
    with stack.session() as session:
        for name, data in library_images().items():
            if names is not None and name not in names:
                continue
            result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename=f"{name}.png",
                                  skip_duplicates=False)
            assert result.status == "imported", result.error
            ids[name] = result.image_id
    return ids


@pytest.fixture
def library(stack) -> dict[str, uuid.UUID]:
    return ingest_library(stack)


def stored_keys(storage) -> set[str]:
    return set(storage.list_keys("images/")) | set(storage.list_keys("thumbs/"))


# ---------------------------------------------------------------- the index, pure


@pytest.mark.parametrize("threshold", [0, 3, 8, 12])
def test_pairs_within_finds_exactly_the_brute_force_pairs(threshold):
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**64 - 1, 1500, dtype=np.uint64)
    flips = np.zeros(700, dtype=np.uint64)
    for _ in range(threshold // 2 + 1):  # planted near copies at every distance up to ~threshold
        flips |= np.uint64(1) << rng.integers(0, 64, 700).astype(np.uint64)
    hashes[800:] = hashes[:700] ^ flips
    hashes[:30] = rng.integers(0, 2**12, 30, dtype=np.uint64)  # a crowded corner of the space
    i, j, d = pairs_within(hashes, threshold)
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    upper_i, upper_j = np.triu_indices(len(hashes), 1)
    close = distance[upper_i, upper_j] <= threshold
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == set(zip(upper_i[close].tolist(), upper_j[close].tolist(),
                                                                    strict=True))
    assert (d == distance[i, j]).all() and len(i) > 0


@pytest.mark.parametrize("path", ["band probes", "full pass"])
@pytest.mark.parametrize("threshold", [0, 3, 8, 9, 12])
def test_hash_index_search_finds_exactly_the_brute_force_matches(threshold, path, monkeypatch):
    """Band probes (what large libraries use at narrow thresholds) and the full pass (small libraries,
    wide thresholds), in the sorted part and the added tail alike."""
    import core.library.hamming

    monkeypatch.setattr(core.library.hamming, "_PROBE_COST_IN_HASHES", 0 if path == "band probes" else 10**9)
    rng = np.random.default_rng(threshold)
    hashes = rng.integers(0, 2**64 - 1, 6000, dtype=np.uint64)
    flips = np.zeros(3000, dtype=np.uint64)
    for _ in range(threshold // 2 + 1):
        flips |= np.uint64(1) << rng.integers(0, 64, 3000).astype(np.uint64)
    hashes[3000:] = hashes[:3000] ^ flips
    hashes[:40] = rng.integers(0, 2**12, 40, dtype=np.uint64)  # a crowded corner
    keys = np.arange(len(hashes), dtype=np.int64)
    index = HashIndex(hashes[:5000], keys[:5000])
    index.add(hashes[5000:5500], keys[5000:5500])  # stays in the scanned tail
    index.add(hashes[5500:], keys[5500:])
    assert len(index) == len(hashes)
    for query in [*hashes[:20], *hashes[3000:3020], *hashes[5990:]]:
        found, distances = index.search(int(query), threshold)
        brute = np.bitwise_count(hashes ^ query)
        assert sorted(found.tolist()) == np.nonzero(brute <= threshold)[0].tolist()
        assert (distances == brute[found]).all()


def test_hash_index_merges_a_large_tail_and_handles_empty():
    empty = HashIndex()
    assert len(empty) == 0 and len(empty.search(0, 8)[0]) == 0
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**64 - 1, 10_000, dtype=np.uint64)
    empty.add(hashes[:100], np.arange(100))
    empty.add(hashes[100:], np.arange(100, 10_000))
    assert len(empty.hashes) == 10_000, "a tail over 4096 is merged into the sorted bands"
    assert empty.search(int(hashes[1234]), 0)[0].tolist() == [1234]
    with pytest.raises(ValueError):
        HashIndex(hashes[:3], np.arange(2))


def test_near_duplicate_components_groups_ids_and_applies_confirmation():
    a, b, c, d, e = (uuid.uuid4() for _ in range(5))
    base = 0x0F0F_F0F0_1234_5678
    hashes = {a: base, b: base ^ 0b111, c: base ^ (0b1111 << 40) ^ 0b111, d: ~base & (2**64 - 1), e: f"{base:016x}"}
    assert sorted(map(len, near_duplicate_components(hashes, 8))) == [4]  # a-b-c chained, e is a's hex; d is far
    assert near_duplicate_components(hashes, 2) == [{a, e}]
    same, other = "ab" * 32, "ab" * 16 + "54" * 16  # 256-bit hex: the second differs in 128 mid bits
    confirm = {a: same, b: same, c: other, e: same}
    assert near_duplicate_components(hashes, 8, confirm_hashes=confirm) == [{a, b, e}]
    assert near_duplicate_components({}, 8) == []


@pytest.mark.parametrize("bad", [-1, 13, 99, "abc", "", 2.5, True, None, "8.0"])
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(InvalidInput, match="threshold must be a whole number from 0 to 12"):
        check_threshold(bad)


def test_threshold_from_text_is_accepted():
    assert check_threshold("8") == 8 and check_threshold(0) == 0


# ---------------------------------------------------------------- groups on both stacks


def test_exact_and_confirmed_near_groups(stack, library):
    ids = library
    with stack.session() as session:
        exact = exact_duplicate_groups(session=session)
        near = near_duplicate_groups(session=session, storage=stack.storage, threshold=8)
        raw = near_duplicate_groups(session=session, storage=stack.storage, threshold=8, confirm=False)
    assert exact == [[ids["a"], ids["a_copy"]]]
    edited = {ids[k] for k in ("a", "a_copy", "a_small", "a_bright", "a_crop")}
    assert [set(g) for g in near] == [edited], "the edited copies group with the photo, the packshots do not"
    assert near[0][0] == ids["a"], "oldest first: the natural one to keep"
    assert {ids["pack1"], ids["pack2"]} in [set(g) for g in raw], "pHash alone groups the two packshots"
    with stack.session() as session:
        stored = dict(session.execute(select(ClsImage.id, ClsImage.phash256)).all())
    assert stored[ids["pack1"]] and len(stored[ids["pack1"]]) == 64, "the confirming hash is kept for next time"


def test_threshold_zero_keeps_only_identical_hashes(stack, library):
    with stack.session() as session:
        groups = near_duplicate_groups(session=session, storage=stack.storage, threshold=0)
    assert all(set(g) <= {library[k] for k in ("a", "a_copy", "a_small", "a_bright", "a_crop")} for g in groups)


def test_duplicates_of_one_image(stack, library):
    ids = library
    with stack.session() as session:
        found = duplicates_of(session=session, image_id=ids["a"])
        packs = duplicates_of(session=session, image_id=ids["pack1"])
        with pytest.raises(NotFound):
            duplicates_of(session=session, image_id=uuid.uuid4())
        with pytest.raises(InvalidInput):
            duplicates_of(session=session, image_id=ids["a"], threshold=40)
    assert found[0]["id"] == ids["a_copy"] and found[0]["match"] == "exact"
    assert {m["id"] for m in found} == {ids[k] for k in ("a_copy", "a_small", "a_bright", "a_crop")}
    assert all(m["confirm_distance"] <= CONFIRM_MAX_DISTANCE for m in found)
    assert packs == [], "a different packshot is not called a duplicate"


def test_in_memory_index_gives_the_database_index_results(stack, library, monkeypatch):
    """Every library image and an uploaded edit, at several thresholds: the in-memory index (on its
    band-probe path, which a library this small would not take by itself) and the band-index SQL agree
    exactly; the index follows rows added (even committed late) and deleted."""
    from datetime import timedelta

    import core.library.hamming
    from core.library.library_index import library_index

    monkeypatch.setattr(core.library.hamming, "_PROBE_COST_IN_HASHES", 0)

    def both(session, **kwargs):
        fast = duplicates_of(session=session, **kwargs)
        slow = duplicates_of(session=session, use_index=False, **kwargs)
        assert fast == slow, kwargs
        return fast

    ids = library
    with stack.session() as session:
        for threshold in (0, 4, 8, 12):
            for image_id in ids.values():
                both(session, image_id=image_id, threshold=threshold)
        assert library_index(session).index is not None and len(library_index(session).index) == len(ids)
        probe = encoded(photos()[0].crop((0, 0, 320, 300)).resize((240, 225)), "JPEG", quality=50)
        fast = check_image(session=session, data=probe)
        assert fast == check_image(session=session, data=probe, use_index=False) and fast["near"]
    extra = ingest_library(stack, ["a_small"])["a_small"]  # a new row after the index was built
    with stack.session() as session:
        late = session.get(ClsImage, extra)
        late.created_at = late.created_at - timedelta(seconds=20)  # as if its transaction committed late
    with stack.session() as session:
        assert extra in {m["id"] for m in both(session, image_id=ids["a"])}
        session.delete(session.get(ClsImage, ids["a_bright"]))
        session.flush()
        found = {m["id"] for m in both(session, image_id=ids["a"])}
    assert ids["a_bright"] not in found and ids["a_crop"] in found


def test_check_image_against_the_library(stack, library):
    a = photos()[0].crop((0, 0, 320, 300))
    before = stored_keys(stack.storage)
    with stack.session() as session:
        edited = check_image(session=session, data=encoded(a.resize((240, 225)), "JPEG", quality=50))
        same = check_image(session=session, data=library_images()["a"])
        other = check_image(session=session, data=encoded(photos()[1].crop((0, 0, 200, 200))))
        count = session.scalar(select(func.count()).select_from(ClsImage))
    assert library["a"] in {m["id"] for m in edited["near"]} and edited["exact"] == []
    assert set(same["exact"]) == {library["a"], library["a_copy"]} and len(same["file_hash"]) == 64
    assert other["exact"] == [] and other["near"] == []
    assert count == len(library) and stored_keys(stack.storage) == before, "checking stores nothing"


@pytest.mark.parametrize("case,data,reason", [
    ("zero bytes", b"", "empty file"),
    ("text named .jpg", b"just some text, not an image\n", "not an image"),
    ("truncated png", None, "corrupt or truncated"),
])
def test_check_image_bad_input(stack, case, data, reason):
    if data is None:
        data = encoded(photos()[0].crop((0, 0, 200, 200)))[:400]
    with stack.session() as session, pytest.raises(InvalidInput, match=reason):
        check_image(session=session, data=data)


def test_delete_extras_removes_rows_and_both_objects(stack, library):
    ids = library
    with stack.session() as session:
        rows = {r.id: (r.storage_path, r.thumbnail_path) for r in session.scalars(select(ClsImage))}
    with stack.session() as session:
        deleted = delete_extras(actor=ADMIN, session=session, storage=stack.storage,
                                group_keep={ids["a"]: [ids["a_copy"], ids["a_small"]], ids["pack1"]: [ids["pack2"]]})
    assert deleted == 3
    gone = {ids["a_copy"], ids["a_small"], ids["pack2"]}
    with stack.session() as session:
        left = set(session.scalars(select(ClsImage.id)))
    assert left == set(ids.values()) - gone
    assert stored_keys(stack.storage) == {key for image_id in left for key in rows[image_id]}


@pytest.mark.parametrize("problem", ["kept is also an extra", "kept image is gone"])
def test_delete_extras_refuses_and_deletes_nothing(stack, library, problem):
    ids = library
    before = stored_keys(stack.storage)
    if problem == "kept is also an extra":
        group_keep, error = {ids["a"]: [ids["a_copy"]], ids["a_copy"]: [ids["a_small"]]}, InvalidInput
    else:
        group_keep, error = {uuid.uuid4(): [ids["a_copy"]]}, NotFound
    with pytest.raises(error, match="nothing was deleted"), stack.session() as session:
        delete_extras(actor=ADMIN, session=session, storage=stack.storage, group_keep=group_keep)
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsImage)) == len(ids)
    assert stored_keys(stack.storage) == before


def test_ingest_stores_the_confirming_hash_of_the_thumbnail(stack, library):
    from core.library.fingerprints import fine_hash_of_bytes

    with stack.session() as session:
        rows = session.scalars(select(ClsImage)).all()
        assert all(row.phash256 == fine_hash_of_bytes(stack.storage.get(row.thumbnail_path)) for row in rows)


def test_confirmation_reads_the_original_when_the_thumbnail_is_gone(stack, library):
    """Rows without a stored confirming hash (ingested before it was stored, so without crop hashes
    either) get it from the thumbnail, else the original; with neither they are not confirmed."""
    ids = library
    with stack.session() as session:
        session.execute(update(ClsImage).where(ClsImage.id.in_([ids["a_small"], ids["a_bright"]]))
                        .values(phash256=None, crop_phash=None, crop_phash256=None))
        small = session.get(ClsImage, ids["a_small"])
        stack.storage.delete(small.thumbnail_path)
        bright = session.get(ClsImage, ids["a_bright"])
        stack.storage.delete(bright.thumbnail_path)
        stack.storage.delete(bright.storage_path)
        groups = near_duplicate_groups(session=session, storage=stack.storage)
    members = set(groups[0])
    assert ids["a_small"] in members, "confirmed from the original"
    assert ids["a_bright"] not in members, "nothing left to confirm with: not called a duplicate"


def test_rows_written_around_the_orm_get_their_bands(stack, library):
    """A bulk INSERT skips the model's validator; grouping fills the bands so queries find the row."""
    source = library_images()["a_small"]
    image_id = uuid.uuid4()
    stack.storage.put(f"images/{image_id}.jpg", source)
    with stack.session() as session:
        phash = session.get(ClsImage, library["a_small"]).phash
        session.execute(insert(ClsImage).values(id=image_id, filename=f"{image_id}.jpg", phash=phash,
                                                storage_path=f"images/{image_id}.jpg", file_hash="f" * 64))
    with stack.session() as session:
        assert session.get(ClsImage, image_id).phash_band0 is None
        near_duplicate_groups(session=session, storage=stack.storage)
    with stack.session() as session:
        found = {m["id"] for m in duplicates_of(session=session, image_id=library["a"])}
    assert image_id in found


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from core.cli import main

    code = main(["duplicates", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prints_groups_as_json(embedded_stack, capsys, tmp_path):
    ids = ingest_library(embedded_stack, ["a", "a_copy", "a_small", "a_bright"])
    code, out, _ = run_cli(capsys, "--threshold", "8")
    document = json.loads(out)
    assert code == 0 and document["threshold"] == 8 and document["confirmed"] is True
    assert [[m["id"] for m in g] for g in document["exact_groups"]] == [[str(ids["a"]), str(ids["a_copy"])]]
    assert all(m["file"] for g in document["exact_groups"] for m in g)  # named by file, not bare ids
    assert {m["id"] for m in document["near_groups"][0]} == {str(i) for i in ids.values()} and document["near_extras"] == 3
    code, out, _ = run_cli(capsys, "--exact-only")
    assert code == 0 and set(json.loads(out)) == {"exact_groups", "exact_extras"}
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(library_images()["a_small"])
    code, out, _ = run_cli(capsys, "--check", str(probe))
    assert code == 0 and str(ids["a_small"]) in json.loads(out)["exact"]


@pytest.mark.parametrize("args,message", [
    (["--threshold", "99"], "threshold must be a whole number"),
    (["--threshold", "x"], "threshold must be a whole number"),
    (["--check", "/no/such/file.png"], "no such file"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_input_is_one_line_and_exit_2(embedded_stack, capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


# ---------------------------------------------------------------- the review view


def test_duplicates_view_finds_groups_and_deletes_extras(embedded_stack):
    from streamlit.testing.v1 import AppTest

    library = ingest_library(embedded_stack)
    app = AppTest.from_string("from ui.duplicates_view import render_duplicates\nrender_duplicates()\n",
                              default_timeout=60)
    app.run()
    assert not app.exception and any("No search yet" in i.value for i in app.info)
    app.button(key="dup_find").click().run()
    embedded_stack.drain_jobs()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("1 groups, 4 extra images" in c.value for c in app.caption)
    first = str(library["a"])
    app.radio(key=f"dup_keep_near_{first}").set_value(str(library["a_small"]))
    app.checkbox(key=f"dup_pick_near_{first}").check().run()
    app.button(key="dup_delete").click().run()
    app.button(key="dup_delete_yes").click().run()
    assert not app.exception, [e.value for e in app.exception]
    with embedded_stack.session() as session:
        left = set(session.scalars(select(ClsImage.id)))
    assert library["a_small"] in left and not left & {library[k] for k in ("a", "a_copy", "a_bright", "a_crop")}
    assert any("No duplicates found" in s.value for s in app.success)
