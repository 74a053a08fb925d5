"""Products / Cutouts / OD images imports: previews, label strategies, re-runs, bad rows."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from core.errors import InvalidInput, NotFound
from core.imports.sources import (
    CutoutFilters,
    ImportFromCutoutsRequest,
    ImportFromODRequest,
    ImportFromProductsRequest,
    ODImageFilters,
    ProductFilters,
    preview_source_import,
    run_source_import,
    spread,
    start_source_import,
)
from core.models import ClsClass, ClsImage, ClsJob, Cutout, OdImage, Product, ProductImage
from tests.factories import ADMIN, drawn_image_bytes, make_dataset
from tests.test_archive_import import dataset_state

PRODUCTS = [  # name, brand, category, status
    ("Cola 1L", "Acme", "Beverages", "matched"),
    ("Chips", "Globex", "Snacks", "matched"),
    ("Lemonade", "Globex", "Beverages", "pending"),
]


def add_platform_rows(stack, products=PRODUCTS, frames: int = 4) -> dict[str, uuid.UUID]:
    """Products with `frames` synthetic frames, one real and one augmented image each; a matched and
    an unmatched cutout per product; two OD images. Images are drawn and stored like the platform's."""
    ids, seed = {}, 100
    with stack.session() as session:
        for name, brand, category, status in products:
            product = Product(name=name, brand=brand, category=category, status=status)
            session.add(product)
            session.flush()
            ids[name] = product.id
            shots = [("synthetic", f) for f in range(frames)] + [("real", 0), ("augmented", 0)]
            for n, (image_type, frame) in enumerate(shots):
                seed += 1
                key = f"platform/products/{product.id}/{n}.png"
                stack.storage.put(key, drawn_image_bytes(seed, size=(40, 40)))
                session.add(ProductImage(product_id=product.id, image_type=image_type, frame_index=frame,
                                         storage_key=key))
            for matched in (product.id, None):
                seed += 1
                key = f"platform/cutouts/{uuid.uuid4()}.png"
                stack.storage.put(key, drawn_image_bytes(seed, size=(32, 32)))
                session.add(Cutout(storage_key=key, matched_product_id=matched))
        for n, folder in enumerate(("shelves", "other")):
            key = f"platform/od/{n}.png"
            stack.storage.put(key, drawn_image_bytes(900 + n, size=(64, 48)))
            session.add(OdImage(filename=f"shelf_{n}.png", storage_key=key, folder=folder, width=64, height=48))
    return ids


def count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


def test_spread_picks_evenly_spaced_frames():
    assert spread(list(range(36)), 5) == [0, 9, 18, 26, 35]
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2, 3], 1) == [1]


def test_products_preview_counts(embedded_stack):
    add_platform_rows(embedded_stack)
    with embedded_stack.session() as session:
        make_dataset(session, "unused")
        session.add(ClsClass(name="Snacks"))
    request = ImportFromProductsRequest(filters=ProductFilters(status="matched"), max_frames_per_product=3)
    with embedded_stack.session() as session:
        preview = preview_source_import(session=session, kind="products", request=request)
    assert (preview["matching"], preview["images"], preview["images_to_import"]) == (2, 6, 6)
    assert preview["classes"] == ["Beverages", "Snacks"] and preview["new_classes"] == ["Beverages"]
    every = ImportFromProductsRequest(image_types=["synthetic", "real", "augmented"], max_frames_per_product=10,
                                      label_source="brand")
    with embedded_stack.session() as session:
        preview = preview_source_import(session=session, kind="products", request=every)
    assert (preview["matching"], preview["images"], preview["classes"]) == (3, 18, ["Acme", "Globex"])


def test_products_import_by_category_job_then_rerun_adds_nothing(stack):
    ids = add_platform_rows(stack)
    with stack.session() as session:
        dataset_id = make_dataset(session, "products").id
    request = ImportFromProductsRequest(filters=ProductFilters(status="matched"), max_frames_per_product=2,
                                        image_types=["synthetic"], dataset_id=str(dataset_id))
    results = []
    for _ in range(2):
        job_id = start_source_import(actor=ADMIN, kind="products", request=request)
        stack.drain_jobs()
        with stack.session() as session:
            job = session.get(ClsJob, job_id)
            assert job.status == "succeeded", job.error
            results.append(job.result)
    first, second = results
    assert (first["images_imported"], first["labels_written"], first["images_added_to_dataset"]) == (4, 4, 4)
    assert sorted(first["classes_created"]) == ["Beverages", "Snacks"] and first["errors"] == []
    assert (second["images_imported"], second["already_imported"], second["labels_written"],
            second["images_added_to_dataset"], second["classes_created"]) == (0, 4, 0, 0, [])
    with stack.session() as session:
        images = session.scalars(select(ClsImage)).all()
        assert len(images) == 4 and {i.source for i in images} == {"products_import"}
        assert {i.source_type for i in images} == {"product_image"}
        frames = {f.id: f for f in session.scalars(select(ProductImage))}
        assert {frames[i.source_id].product_id for i in images} == {ids["Cola 1L"], ids["Chips"]}
        assert {frames[i.source_id].frame_index for i in images} == {0, 3}  # first and last of 4 frames
        state = dataset_state(session, dataset_id)
        assert sorted(labels for _, labels in state.values()) == [("Beverages",)] * 2 + [("Snacks",)] * 2
        with pytest.raises(ValidationError):
            ImportFromProductsRequest(image_types=[])


@pytest.mark.parametrize("label_source, classes", [("brand", {"Acme", "Globex"}),
                                                    ("product_name", {"Cola 1L", "Chips", "Lemonade"}),
                                                    ("manual", set())])
def test_products_label_strategies(embedded_stack, label_source, classes):
    add_platform_rows(embedded_stack)
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "strategies").id
    summary = run_source_import(actor=ADMIN, kind="products", request={
        "label_source": label_source, "image_types": ["real", "augmented"], "dataset_id": str(dataset_id)})
    assert summary["images_imported"] == 6 and set(summary["classes_created"]) == classes
    with embedded_stack.session() as session:
        labels = {name for _, names in dataset_state(session, dataset_id).values() for name in names}
        assert labels == classes
        assert count(session, ClsImage, ClsImage.source_type == "product_image") == 6


def test_products_without_dataset_import_unlabeled_and_missing_object_is_reported(embedded_stack):
    ids = add_platform_rows(embedded_stack)
    with embedded_stack.session() as session:
        frame = session.scalars(select(ProductImage).where(ProductImage.product_id == ids["Chips"],
                                                           ProductImage.image_type == "real")).one()
        embedded_stack.storage.delete(frame.storage_key)
    summary = run_source_import(actor=ADMIN, kind="products", request=ImportFromProductsRequest(
        product_ids=[str(ids["Chips"]), str(ids["Cola 1L"])], image_types=["real"]))
    assert summary["images_imported"] == 1 and summary["classes_created"] == []
    assert summary["errors"] == [{"file": "Chips_real_0.png", "error": summary["errors"][0]["error"]}]
    assert "no object" in summary["errors"][0]["error"]
    with embedded_stack.session() as session:
        image = session.scalars(select(ClsImage)).one()
        assert image.meta["source_label"] == "Beverages" and count(session, ClsClass) == 0


def test_duplicate_bytes_are_skipped_but_labeled_and_html_category_refused(embedded_stack):
    ids = add_platform_rows(embedded_stack, products=[("Odd", "Acme", "<script>alert(1)</script>", "matched"),
                                                       ("Twin", "Acme", "Snacks", "matched")], frames=1)
    with embedded_stack.session() as session:
        odd, twin = (session.scalars(select(ProductImage).where(ProductImage.product_id == ids[n],
                                                                ProductImage.image_type == "real")).one()
                     for n in ("Odd", "Twin"))
        embedded_stack.storage.put(twin.storage_key, embedded_stack.storage.get(odd.storage_key))
        dataset_id = make_dataset(session, "dups").id
    summary = run_source_import(actor=ADMIN, kind="products", request=ImportFromProductsRequest(
        image_types=["real"], dataset_id=str(dataset_id)))
    assert (summary["images_imported"], summary["duplicates_skipped"], summary["labels_written"]) == (1, 1, 1)
    assert "HTML" in summary["errors"][0]["error"] and summary["classes_created"] == ["Snacks"]
    with embedded_stack.session() as session:
        assert list(dataset_state(session, dataset_id).values()) == [("unassigned", ("Snacks",))]


def test_cutouts_only_matched_by_category_then_all_by_brand(stack):
    add_platform_rows(stack)
    with stack.session() as session:
        dataset_id = make_dataset(session, "cutouts").id
        preview = preview_source_import(session=session, kind="cutouts", request=ImportFromCutoutsRequest())
    assert (preview["matching"], preview["classes"]) == (3, ["Beverages", "Snacks"])
    first = run_source_import(actor=ADMIN, kind="cutouts", request=ImportFromCutoutsRequest(
        dataset_id=str(dataset_id), filters=CutoutFilters(categories=["Beverages"])))
    assert (first["images_imported"], first["labels_written"]) == (2, 2)
    second = run_source_import(actor=ADMIN, kind="cutouts", request=ImportFromCutoutsRequest(
        only_matched=False, label_source="matched_product_brand", dataset_id=str(dataset_id)))
    assert (second["images_imported"], second["already_imported"], second["labels_written"]) == (4, 2, 3)
    with stack.session() as session:
        state = dataset_state(session, dataset_id)
        assert sorted(labels for _, labels in state.values()) == [(), (), (), ("Acme",), ("Globex",), ("Globex",)]
        assert count(session, ClsImage, ClsImage.source_type == "cutout", ClsImage.source == "cutouts_import") == 6


def test_od_images_unlabeled_with_folder_filter_and_rerun(stack):
    add_platform_rows(stack)
    with stack.session() as session:
        dataset_id = make_dataset(session, "od").id
        preview = preview_source_import(session=session, kind="od", request=ImportFromODRequest(
            filters=ODImageFilters(folder="shelves")))
    assert (preview["images_to_import"], preview["classes"]) == (1, [])
    first = run_source_import(actor=ADMIN, kind="od", request=ImportFromODRequest(dataset_id=str(dataset_id)))
    again = run_source_import(actor=ADMIN, kind="od", request=ImportFromODRequest(dataset_id=str(dataset_id)))
    assert (first["images_imported"], first["images_added_to_dataset"]) == (2, 2)
    assert (again["images_imported"], again["already_imported"], again["images_added_to_dataset"]) == (0, 2, 0)
    with stack.session() as session:
        assert dataset_state(session, dataset_id) == {"shelf_0.png": ("unassigned", ()),
                                                      "shelf_1.png": ("unassigned", ())}
        assert {i.source_type for i in session.scalars(select(ClsImage))} == {"od_image"}


def test_bad_requests(embedded_stack):
    with embedded_stack.session() as session:
        with pytest.raises(InvalidInput, match="UUIDs"):
            preview_source_import(session=session, kind="products",
                                  request=ImportFromProductsRequest(product_ids=["nope"]))
    with pytest.raises(NotFound, match="no dataset"):
        start_source_import(actor=ADMIN, kind="od", request=ImportFromODRequest(dataset_id=str(uuid.uuid4())))
    with pytest.raises(ValidationError):
        ImportFromProductsRequest(label_source="colour")
    with pytest.raises(ValidationError):
        ImportFromProductsRequest(max_frames_per_product=0)


def test_cli_source_imports(embedded_stack, capsys):
    import json

    from core.cli import main

    add_platform_rows(embedded_stack)
    with embedded_stack.session() as session:
        dataset_id = make_dataset(session, "cli products").id

    def cli(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, json.loads(out) if out.strip() else None, err

    code, preview, _ = cli("import", "products", "--preview", "--status", "matched", "--types", "real")
    assert code == 0 and (preview["matching"], preview["images_to_import"]) == (2, 2)
    code, summary, _ = cli("import", "products", "--types", "real", "--label", "brand", "--dataset", "cli products")
    assert code == 0 and (summary["images_imported"], summary["labels_written"]) == (3, 3)
    code, summary, _ = cli("import", "cutouts", "--include-unmatched", "--dataset", "cli products")
    assert code == 0 and (summary["images_imported"], summary["labels_written"]) == (6, 3)
    code, summary, _ = cli("import", "od", "--folder", "shelves")
    assert code == 0 and summary["images_imported"] == 1
    with embedded_stack.session() as session:
        assert len(dataset_state(session, dataset_id)) == 9
    code, _, err = cli("import", "products", "--types", "holographic")
    assert code == 2 and "image_types" in err
