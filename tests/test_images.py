"""Ingest pipeline and library queries/bulk actions (core/library/images.py), on both stacks."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from sqlalchemy import func, select

from core.datasets.dataset import add_images_to_dataset
from core.errors import InvalidInput
from core.library.images import (
    ImageFilters,
    delete_images,
    image_detail,
    image_filter_options,
    list_images,
    matching_image_ids,
    set_folder,
    update_image,
    update_tags,
)
from core.library.ingest import clean_filename, ingest_bytes, ingest_many
from core.models import ClsDataset, ClsDatasetImage, ClsImage
from tests.factories import ADMIN, drawn_image_bytes, make_class, make_dataset


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width×height with almost no data: what a decompression bomb looks like."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """80×40 pixels stored, orientation 6 (rotate 90° clockwise to show): shown as 40×80."""
    image = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    return encoded(Image.new("I;16", (40, 30), 30000), "PNG")


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG")


def stored_keys(storage) -> set[str]:
    return set(storage.list_keys("images/")) | set(storage.list_keys("thumbs/"))


def assert_consistent(stack) -> int:
    """Every row has both objects and every object has its row; returns the row count."""
    with stack.session() as session:
        rows = session.execute(select(ClsImage.storage_path, ClsImage.thumbnail_path)).all()
    expected = {key for row in rows for key in row}
    assert stored_keys(stack.storage) == expected
    return len(rows)


GOOD = drawn_image_bytes(1, (120, 90), "JPEG")
BAD_INPUTS = {
    "zero_byte": (b"", "empty file"),
    "truncated_jpeg": (drawn_image_bytes(2, (200, 200), "JPEG")[:600], "truncated"),
    "truncated_png": (drawn_image_bytes(3, (200, 200), "PNG")[:300], "truncated"),
    "text_named_jpg": (b"hello, I am not an image\n" * 20, "not an image"),
    # Past twice the limit Pillow's own guard refuses first; the message still names the header's size.
    "bomb_30000": (png_header_only(30000, 30000), "image is 30000×30000 = 900 MP, over the limit of 100 MP"),
    "over_pixel_limit": (png_header_only(12000, 12000), "image is 12000×12000 = 144 MP, over the limit of 100 MP"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_file_is_rejected_with_reason_and_nothing_stored(stack, case):
    data, reason = BAD_INPUTS[case]
    with stack.session() as session:
        bad = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename=f"{case}.jpg")
        good = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=GOOD, filename="good.jpg")
    assert bad.status == "rejected" and reason in bad.error and bad.image_id is None
    assert good.status == "imported"
    assert assert_consistent(stack) == 1


ODD_GOOD_INPUTS = {
    "one_pixel": (lambda: encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), (1, 1)),
    "cmyk": (cmyk_jpeg, (40, 30)),
    "sixteen_bit": (sixteen_bit_png, (40, 30)),
    "exif_rotated": (exif_rotated_jpeg, (40, 80)),
    "gif_first_frame": (lambda: encoded(Image.new("P", (30, 20)), "GIF", save_all=True,
                                        append_images=[Image.new("P", (30, 20), 3)]), (30, 20)),
    "webp": (lambda: encoded(Image.new("RGB", (30, 20), (1, 2, 3)), "WEBP"), (30, 20)),
    "bmp": (lambda: encoded(Image.new("RGB", (30, 20)), "BMP"), (30, 20)),
    "tiff": (lambda: encoded(Image.new("RGB", (30, 20)), "TIFF"), (30, 20)),
    "avif": (lambda: encoded(Image.new("RGB", (30, 20), (50, 60, 70)), "AVIF"), (30, 20)),
}


@pytest.mark.parametrize("case", sorted(ODD_GOOD_INPUTS))
def test_unusual_but_valid_images_are_imported(stack, case):
    make, (width, height) = ODD_GOOD_INPUTS[case]
    data = make()
    with stack.session() as session:
        result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename=f"{case}.img")
    assert result.status == "imported", result.error
    with stack.session() as session:
        row = session.get(ClsImage, result.image_id)
        assert (row.width, row.height) == (width, height)
        assert len(row.phash) == 16 and int(row.phash, 16) >= 0
        assert row.file_size_bytes == len(data)
    assert stack.storage.get(row.storage_path) == data  # the original, byte for byte
    thumb = Image.open(io.BytesIO(stack.storage.get(row.thumbnail_path)))
    assert thumb.format == "JPEG" and thumb.mode == "RGB" and max(thumb.size) <= 256
    if case == "exif_rotated":
        assert thumb.size[0] < thumb.size[1]  # shown upright: taller than wide
        assert thumb.getpixel((thumb.size[0] // 2, thumb.size[1] // 2))[0] > 150
    if case == "sixteen_bit":
        assert 100 < thumb.getpixel((5, 5))[0] < 140  # 30000/65535 of white, not clipped to 255


def test_heic_when_the_plugin_is_installed(stack):
    pytest.importorskip("pillow_heif")
    data = encoded(Image.new("RGB", (32, 24), (10, 200, 10)), "HEIF")
    with stack.session() as session:
        result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename="phone.heic")
        row = session.get(ClsImage, result.image_id)
        assert (result.status, row.format, row.storage_path.endswith(".heic")) == ("imported", "HEIF", True)


def test_unicode_long_and_repeated_names(stack):
    long_name = "ü" * 400 + ".png"
    items = [("çiçek 🌸 фото.png", drawn_image_bytes(10)), (long_name, drawn_image_bytes(11)),
             ("same.png", drawn_image_bytes(12)), ("same.png", drawn_image_bytes(13)),
             ("../../etc/passwd\x00.png", drawn_image_bytes(14))]
    results = ingest_many(actor=ADMIN, items=items, storage=stack.storage)
    assert [r.status for r in results] == ["imported"] * 5
    assert results[0].filename == "çiçek 🌸 фото.png"
    assert len(results[1].filename) <= 255 and results[1].filename.endswith(".png")
    assert results[2].image_id != results[3].image_id
    assert results[4].filename == "passwd.png"
    with stack.session() as session:
        names = set(session.scalars(select(ClsImage.original_filename)))
    assert {"same.png", "çiçek 🌸 фото.png", results[1].filename} <= names
    with stack.session() as session:  # the batch path inserts with Core: the indexed pHash bands still match
        for row in session.scalars(select(ClsImage)):
            expected = ClsImage(phash=row.phash)
            assert (row.phash_band0, row.phash_band1, row.phash_band2) == (
                expected.phash_band0, expected.phash_band1, expected.phash_band2)
            assert len(row.phash256) == 64, "the confirming hash is stored at ingest"
    assert assert_consistent(stack) == 5


def test_clean_filename_strips_folders_and_controls():
    assert clean_filename("C:\\Users\\me\\a\tb.jpg") == "ab.jpg"
    assert clean_filename("") == "unnamed"


def test_batch_with_every_bad_input_imports_the_rest_in_the_process_pool(stack, tmp_path):
    items = [(f"{case}.jpg", data) for case, (data, _reason) in BAD_INPUTS.items()]
    for seed in range(14):
        path = tmp_path / f"good_{seed}.png"
        path.write_bytes(drawn_image_bytes(100 + seed))
        items.append((path.name, path))
    items.append(("copy_of_good_0.png", drawn_image_bytes(100)))  # same bytes as a file in this batch
    seen = []
    results = ingest_many(actor=ADMIN, items=items, storage=stack.storage, folder="batch", tags=["a", "b"], workers=2,
                          progress=lambda done, total: seen.append((done, total)))
    by_status = {s: [r for r in results if r.status == s] for s in ("imported", "duplicate", "rejected")}
    assert len(by_status["imported"]) == 14 and len(by_status["rejected"]) == len(BAD_INPUTS)
    assert all(r.error for r in by_status["rejected"])
    assert by_status["duplicate"][0].duplicate_of == results[len(BAD_INPUTS)].image_id
    assert seen[-1] == (len(items), len(items))
    assert assert_consistent(stack) == 14
    with stack.session() as session:
        assert set(session.scalars(select(ClsImage.folder))) == {"batch"}


def test_exact_duplicates_skipped_or_kept(stack):
    data = drawn_image_bytes(5)
    with stack.session() as session:
        first = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename="a.png")
    with stack.session() as session:
        again = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename="b.png")
        forced = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=data, filename="c.png",
                              skip_duplicates=False)
    assert (again.status, again.duplicate_of, again.image_id) == ("duplicate", first.image_id, first.image_id)
    assert forced.status == "imported" and forced.image_id != first.image_id
    assert assert_consistent(stack) == 2


def test_rollback_removes_the_stored_objects(stack):
    with pytest.raises(RuntimeError), stack.session() as session:
        result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=drawn_image_bytes(6), filename="x.png")
        assert result.status == "imported"
        raise RuntimeError("the caller's transaction fails after the ingest")
    assert assert_consistent(stack) == 0


def test_bad_arguments_raise(stack):
    with stack.session() as session, pytest.raises(InvalidInput, match="source"):
        ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=GOOD, filename="a.jpg", source="nowhere")
    with pytest.raises(InvalidInput, match="tag"):
        ingest_many(actor=ADMIN, items=[("a.jpg", GOOD)], storage=stack.storage, tags=["x" * 500])


def _library(stack):
    specs = [("cat_1.png", "pets", ["cat", "cute"], "upload"), ("cat_2.png", "pets", ["cat"], "url_import"),
             ("dog.png", "pets", ["dog"], "upload"), ("car.png", "street", ["vehicle"], "upload"),
             ("100%_sure.png", None, [], "upload")]
    ids = {}
    for seed, (name, folder, tags, source) in enumerate(specs):
        with stack.session() as session:
            result = ingest_bytes(actor=ADMIN, session=session, storage=stack.storage, data=drawn_image_bytes(seed, (40 + seed, 40)),
                                  filename=name, folder=folder, tags=tags, source=source)
            ids[name] = result.image_id
    return ids


def test_filters_sort_and_pages(stack):
    ids = _library(stack)
    with stack.session() as session:
        def names(filters, **kwargs):
            rows, total = list_images(session=session, filters=filters, **kwargs)
            return [r.original_filename for r in rows], total

        assert names(ImageFilters(search="CAT"))[1] == 2
        assert names(ImageFilters(search="%"))[0] == ["100%_sure.png"]  # LIKE wildcards are literal
        assert names(ImageFilters(search="vehic"))[0] == ["car.png"]  # search covers tags
        assert names(ImageFilters(tags=["dog", "vehicle"]), sort="name_asc")[0] == ["car.png", "dog.png"]
        assert names(ImageFilters(folders=["pets"], sources=["upload"]), sort="name_desc")[0] == ["dog.png", "cat_1.png"]
        by_size = [r.original_filename for r in sorted(list_images(session=session, filters=ImageFilters())[0],
                                                           key=lambda r: (r.file_size_bytes, r.id))]
        assert names(ImageFilters(), sort="size_asc", limit=2, offset=1) == (by_size[1:3], 5)
        assert names(ImageFilters(statuses=["labeled"]))[1] == 0
        # a count that stops: limit + 1 means "more than limit"
        assert [names(ImageFilters(), count_limit=n)[1] for n in (1, 3, 5, 9)] == [2, 4, 5, 5]
        assert names(ImageFilters(search="cat"), count_limit=1) == (names(ImageFilters(search="cat"))[0], 2)
        assert set(matching_image_ids(session=session, filters=ImageFilters(tags=["cat"]))) == {
            ids["cat_1.png"], ids["cat_2.png"]}
        options = image_filter_options(session=session)
        with pytest.raises(InvalidInput):
            list_images(session=session, filters=ImageFilters(), sort="random")
    assert options == {"statuses": ["pending"], "sources": ["upload", "url_import"], "folders": ["pets", "street"],
                       "tags": ["cat", "cute", "dog", "vehicle"], "total_count": 5}


def test_tag_list_and_tag_counts_follow_every_write(stack):
    """cls_image_tags is kept by triggers: ingest, the ORM, a bulk UPDATE, a delete and a rollback all
    show at once in the filter options, and a tags-only count (read from it) equals the count through
    the images' own lists."""
    from sqlalchemy import text, update

    from core.library.images import filter_clauses

    def tags_and_counts(session, tags):
        """The tag list, the page's count (from cls_image_tags) and a count through the images' lists."""
        filters = ImageFilters(tags=tags)
        return (image_filter_options(session=session)["tags"], list_images(session=session, filters=filters)[1],
                session.scalar(select(func.count()).select_from(ClsImage).where(*filter_clauses(session, filters))))

    ids = _library(stack)
    with stack.session() as session:
        assert tags_and_counts(session, ["cat", "vehicle"]) == (["cat", "cute", "dog", "vehicle"], 3, 3)
        update_tags(actor=ADMIN, session=session, image_ids=[ids["car.png"]], replace=["cat", "cat2"])
        session.execute(update(ClsImage).where(ClsImage.id == ids["dog.png"]).values(tags=[]))  # bulk, no ORM
    with stack.session() as session:
        assert tags_and_counts(session, ["cat", "vehicle"]) == (["cat", "cat2", "cute"], 3, 3)
        assert list_images(session=session, filters=ImageFilters(tags=["cat"]), count_limit=1)[1] == 2
    with pytest.raises(RuntimeError), stack.session() as session:
        update_tags(actor=ADMIN, session=session, image_ids=list(ids.values()), add=["gone"])
        assert "gone" in image_filter_options(session=session)["tags"]  # the writer sees its own change
        raise RuntimeError("abort")
    with stack.session() as session:
        delete_images(actor=ADMIN, session=session, storage=stack.storage, image_ids=[ids["car.png"]])
    with stack.session() as session:
        assert tags_and_counts(session, ["cat", "cat2"]) == (["cat", "cute"], 2, 2)
        assert session.scalar(text("SELECT count(*) FROM cls_image_tags")) == 3  # cat_1: cat, cute; cat_2: cat


def test_library_size_is_exact_through_inserts_deletes_rollbacks_and_folds(postgres_stack, monkeypatch):
    """Postgres keeps the image count as trigger-written +n/-n rows (core.models.library_aggregates):
    it equals COUNT(*) after every kind of write, and folding the rows keeps it."""
    from sqlalchemy import delete, text

    from core import stats
    from core.stats import library_size

    monkeypatch.setattr(stats, "FOLD_COUNT_ROWS_PAST", 3)

    def both(session):
        return library_size(session=session), session.scalar(select(func.count()).select_from(ClsImage))

    ids = _library(postgres_stack)  # five ingests, one statement each
    with postgres_stack.session() as session:
        assert both(session) == (5, 5)  # and more than 3 rows: folded after this read
    with postgres_stack.session() as session:
        assert session.scalar(text("SELECT count(*) FROM cls_library_counts")) == 1
        delete_images(actor=ADMIN, session=session, storage=postgres_stack.storage, image_ids=[ids["car.png"]])
        assert both(session) == (4, 4)  # the writer sees its own delete
    with pytest.raises(RuntimeError), postgres_stack.session() as session:
        session.execute(delete(ClsImage))  # one bulk statement
        assert both(session) == (0, 0)
        raise RuntimeError("abort")
    with postgres_stack.session() as session:
        assert both(session) == (4, 4)
        session.execute(text("TRUNCATE cls_images CASCADE"))
        assert both(session) == (0, 0)


def test_text_search_on_postgres_can_use_the_trigram_indexes(postgres_stack):
    """ILIKE '%term%' on the name and on the tags text is answered from the pg_trgm GIN indexes (the
    planner prefers a scan on a table this small, so scans are switched off to show the index fits)."""
    from sqlalchemy import text

    from core.library.images import filter_clauses

    _library(postgres_stack)
    with postgres_stack.session() as session:
        clauses = filter_clauses(session, ImageFilters(search="vehic"))
        count = select(func.count()).select_from(ClsImage).where(*clauses)
        compiled = count.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(session.execute(text(f"EXPLAIN {compiled}")).scalars())
        assert session.scalar(count) == 1
    assert "idx_cls_images_name_trgm" in plan and "idx_cls_images_tags_trgm" in plan, plan


def test_filters_round_trip_through_query_params():
    filters = ImageFilters(search="a b", statuses=["pending"], sources=["upload"], folders=["x,y", "z"], tags=["t|"])
    assert ImageFilters.from_params(filters.to_params()).statuses == ["pending"]
    assert ImageFilters.from_params(filters.to_params()).folders == ["x,y", "z"]
    assert ImageFilters.from_params({"status": "bogus,labeled"}).statuses == ["labeled"]


def test_bulk_folder_tags_and_edit(stack):
    ids = _library(stack)
    with stack.session() as session:
        every = list(ids.values())
        assert set_folder(actor=ADMIN, session=session, image_ids=every[:2], folder=" archive/ ") == 2
        assert update_tags(actor=ADMIN, session=session, image_ids=every, add=["new"], remove=["cat"]) == 5
        assert update_tags(actor=ADMIN, session=session, image_ids=[ids["dog.png"]], replace=["only"]) == 1
        update_image(actor=ADMIN, session=session, image_id=ids["car.png"], status="review", tags="a, b ,a", folder="")
        with pytest.raises(InvalidInput):
            update_image(actor=ADMIN, session=session, image_id=ids["car.png"], status="bogus")
    with stack.session() as session:
        assert session.get(ClsImage, ids["cat_1.png"]).tags == ["cute", "new"]
        assert session.get(ClsImage, ids["cat_1.png"]).folder == "archive"
        assert session.get(ClsImage, ids["dog.png"]).tags == ["only"]
        car = session.get(ClsImage, ids["car.png"])
        assert (car.status, car.tags, car.folder) == ("review", ["a", "b"], None)


def test_delete_removes_rows_objects_memberships_and_fixes_counts(stack):
    ids = _library(stack)
    with stack.session() as session:
        dataset = make_dataset(session, "pets")
        cls = make_class(session, "cat")
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=list(ids.values()))
        # through the labels service: counts are kept by every writer (a delete moves them by its
        # difference, it does not recount a hand-inserted row)
        from core.labeling.labels import set_labels

        set_labels(actor=ADMIN, session=session, dataset_id=dataset.id, image_id=ids["cat_1.png"], class_ids=[cls.id])
        detail = image_detail(session=session, image_id=ids["cat_1.png"])
        assert detail["datasets"][0]["name"] == "pets" and detail["labels"][0]["class"] == "cat"
        assert dataset.labeled_image_count == 1
        dataset_id = dataset.id
    with stack.session() as session:
        doomed = matching_image_ids(session=session, filters=ImageFilters(tags=["cat"]))
        assert delete_images(actor=ADMIN, session=session, storage=stack.storage, image_ids=doomed) == 2
    assert assert_consistent(stack) == 3
    with stack.session() as session:
        dataset = session.get(ClsDataset, dataset_id)
        assert (dataset.image_count, dataset.labeled_image_count) == (3, 0)
        assert session.scalar(select(func.count()).select_from(ClsDatasetImage)) == 3


def test_delete_rolled_back_keeps_objects(stack):
    ids = _library(stack)
    with pytest.raises(RuntimeError), stack.session() as session:
        delete_images(actor=ADMIN, session=session, storage=stack.storage, image_ids=list(ids.values()))
        raise RuntimeError("abort")
    assert assert_consistent(stack) == 5


def test_ingest_into_dataset(stack):
    with stack.session() as session:
        dataset_id = make_dataset(session, "target").id
    data = [(f"{i}.png", drawn_image_bytes(200 + i)) for i in range(3)]
    ingest_many(actor=ADMIN, items=data, storage=stack.storage, dataset_id=dataset_id)
    results = ingest_many(actor=ADMIN, items=data[:1], storage=stack.storage, dataset_id=dataset_id)  # duplicate: no double add
    assert results[0].status == "duplicate"
    with stack.session() as session:
        assert session.get(ClsDataset, dataset_id).image_count == 3


def run_cli(capsys, *argv):
    import json

    from core.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


def test_cli_add_list_and_errors(stack, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(drawn_image_bytes(300))
    (folder / "sub" / "b.jpg").write_bytes(drawn_image_bytes(301, fmt="JPEG"))
    (folder / "sub" / "broken.jpg").write_bytes(b"not really")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    code, out = run_cli(capsys, "images", "add", str(folder), str(tmp_path / "missing.png"), "--folder", "cli",
                        "--tags", "x,y")
    assert code == 0 and (out["imported"], out["rejected"]) == (2, 2)
    assert {r["error"] for r in out["results"] if r["status"] == "rejected"} >= {"no such file or folder"}
    code, out = run_cli(capsys, "images", "add", str(folder / "a.png"))
    assert out["duplicate"] == 1
    code, out = run_cli(capsys, "images", "list", "--tag", "y", "--sort", "name_asc", "--limit", "1")
    assert code == 0 and out["total"] == 2 and out["images"][0]["filename"] == "a.png"
    assert len(out["images"][0]["phash"]) == 16
    code, err = run_cli(capsys, "images", "list", "--sort", "sideways")
    assert code == 2 and "unknown sort" in err
    code, err = run_cli(capsys, "images", "import-urls", "http://169.254.169.254/x.png", "ftp://x/y")
    assert code == 1 and "none of the 2 items succeeded" in err  # every URL refused (report on stdout)
    code, err = run_cli(capsys, "images", "import-urls")
    assert code == 2 and "give URLs" in err


def _die() -> None:
    import os

    os._exit(1)


def test_broken_process_pool_falls_back_to_in_process(embedded_stack, monkeypatch):
    """Workers that die at start (as when killed for memory) must not lose the batch."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import core.library.ingest

    monkeypatch.setattr(core.library.ingest, "_process_pool", lambda workers: ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("forkserver"), initializer=_die))
    items = [(f"{i}.png", drawn_image_bytes(700 + i, (32, 32))) for i in range(20)]
    results = ingest_many(actor=ADMIN, items=items, storage=embedded_stack.storage, workers=2)
    assert [r.status for r in results] == ["imported"] * 20
    assert assert_consistent(embedded_stack) == 20
