"""A team's second day in a real browser (Playwright + Debian Chromium, Postgres): one dataset's keys are
the same on its grid and on the Labeling page, a workspace class outside the dataset's classes is
offered on neither, and the counts on screen follow each change (add, bulk-label, remove, import,
closing the import dialog, label) without navigating away.
"""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from core.db import session_scope
from tests.factories import ADMIN, drawn_image_bytes
from tests.plugins.browser import wait_for_app

pytestmark = pytest.mark.timeout(420)


def seed(server, url: str) -> dict:
    from core.datasets.classes import create_class
    from core.datasets.dataset import create_dataset
    from core.datasets.label_space_edits import add_classes
    from core.library.ingest import ingest_bytes
    from core.storage import storage_from_url

    storage = storage_from_url(server.env["STORAGE_URL"])
    with session_scope(url) as session:
        create_class(actor=ADMIN, session=session, name="Bakery")  # the workspace's, not this dataset's
        circle, square = (create_class(actor=ADMIN, session=session, name=n).id for n in ("circle", "square"))
        dataset = create_dataset(actor=ADMIN, session=session, name="shapes")
        add_classes(session=session, actor=ADMIN, dataset_id=dataset.id, class_ids=[circle, square])
        for i in range(6):
            image = ingest_bytes(actor=ADMIN, session=session, storage=storage, data=drawn_image_bytes(700 + i, (64, 64)),
                                 filename=f"shape_{i}.png")
            from core.models import ClsImage

            session.get(ClsImage, image.image_id).folder = "shelf"
        return {"dataset": str(dataset.id)}


def grid_text(page, text: str) -> None:
    page.get_by_text(text).first.wait_for(timeout=30000)


def test_keys_agree_and_counts_follow_every_change(postgres_app, browser_page, tmp_path):
    server, url = postgres_app
    seeded = seed(server, url)
    page = browser_page
    page.goto(server.url)
    wait_for_app(page)
    page.goto(f"{server.url}/datasets?dataset={seeded['dataset']}")
    wait_for_app(page)
    grid_text(page, "This dataset has no images yet")

    # add images: the grid below counts them in the same run as the message
    page.get_by_test_id("stExpander").get_by_text("Add images from the library").click()
    page.locator(f".st-key-dsadd_folder_{seeded['dataset']} input").fill("shelf")
    page.locator(f".st-key-dsadd_folder_{seeded['dataset']} input").press("Enter")
    page.locator(f".st-key-dsadd_filters_go_{seeded['dataset']} button").click()
    grid_text(page, "6 images added.")
    grid_text(page, "0 of 6 images labeled")
    expect(page.get_by_text("This dataset has no images yet")).to_have_count(0)

    # the grid's keys: the dataset's classes in order, nothing else
    keys = [page.locator(f".st-key-dskey_{seeded['dataset']}_{key} button").first.inner_text().splitlines()[0]
            for key in "1234567890" if page.locator(f".st-key-dskey_{seeded['dataset']}_{key} button").count()]
    assert keys == ["1 · circle", "2 · square"], keys
    assert "Bakery" not in page.inner_text("[data-testid='stMain']")

    # bulk-label with a key
    page.locator(f".st-key-dsgrid_{seeded['dataset']}_sel_page button").click()
    page.get_by_text("6 selected", exact=True).wait_for(timeout=30000)
    wait_for_app(page)
    page.keyboard.press("1")
    grid_text(page, "6 of 6 images labeled")
    page.get_by_text("0 selected", exact=True).wait_for(timeout=30000)
    wait_for_app(page)

    # remove one image from the dataset
    page.get_by_text("shape_0.png", exact=True).click()
    page.get_by_text("1 selected", exact=True).wait_for(timeout=30000)
    page.get_by_role("button", name="Bulk actions (1)").click()
    page.get_by_role("tab", name="Remove").click()
    page.get_by_role("button", name="Remove 1 from the dataset").click()
    grid_text(page, "5 of 5 images labeled")

    # import into the dataset through the dialog; closing it redraws the page behind
    files = []
    for i in range(2):
        path = tmp_path / f"upload_{i}.png"
        path.write_bytes(drawn_image_bytes(900 + i, (64, 64)))
        files.append(str(path))
    page.get_by_role("button", name="Import").click()
    dialog = page.locator("[data-testid='stDialog']")
    dialog.wait_for(timeout=30000)
    dialog.locator(".st-key-upload_files input[type='file']").set_input_files(files)
    dialog.locator(".st-key-upload_go button").click()
    dialog.get_by_text("Done").wait_for(timeout=60000)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0, timeout=30000)
    grid_text(page, "5 of 7 images labeled")

    # the Labeling page: the same keys, the same classes, and its progress follows a save
    page.get_by_role("button", name="Label").click()
    page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=30000)
    wait_for_app(page)
    rows = [(row.locator(".lk-key").inner_text().strip(), row.locator(".lk-name").inner_text().strip())
            for row in page.locator(".lk-class").all()]
    assert rows == [("1", "circle"), ("2", "square")], rows
    page.get_by_text("5 / 7 labeled").wait_for(timeout=30000)
    shown = uuid.UUID(page.get_attribute(".lk-image", "data-image-id"))
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.get_by_text("6 / 7 labeled").wait_for(timeout=30000)
    from core.labeling.labels import labels_for_images

    with session_scope(url) as session:
        saved = labels_for_images(session=session, dataset_id=seeded["dataset"], image_ids=[shown])[shown]
        from core.models import ClsClass

        assert [session.get(ClsClass, label.class_id).name for label in saved] == ["square"]
    page.keyboard.press("Escape")  # back to the dataset: its grid counts the save
    page.wait_for_url("**/datasets?dataset=*", timeout=30000)
    grid_text(page, "6 of 7 images labeled")
    assert not [p for p in page.watch.page_errors]
