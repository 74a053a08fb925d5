"""The import dialog in a real browser: upload a ZIP, read the preview, map classes, import, check the
database; and a Products import from the demo data."""

from __future__ import annotations

import io
import zipfile

from sqlalchemy import create_engine, text

from tests.factories import drawn_image_bytes
from tests.plugins.browser import exception_texts, wait_for_app


def _zip_file(tmp_path) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/cats/a.jpg", drawn_image_bytes(501, size=(48, 48), fmt="JPEG"))
        archive.writestr("export/cats/b.jpg", drawn_image_bytes(502, size=(48, 48), fmt="JPEG"))
        archive.writestr("export/dogs/c.jpg", drawn_image_bytes(503, size=(48, 48), fmt="JPEG"))
        archive.writestr("export/dogs/broken.jpg", b"not an image")
        archive.writestr("export/<b>bold</b>.txt", b"x")
    path = tmp_path / "pets.zip"
    path.write_bytes(buffer.getvalue())
    return str(path)


def _open_tab(page, url: str, tab: str):
    page.goto(f"{url}/images")
    wait_for_app(page)
    page.locator(".st-key-img_import button").click()
    dialog = page.locator("[data-testid='stDialog']")
    dialog.wait_for(timeout=30000)
    dialog.get_by_role("tab", name=tab).click()
    return dialog


def _choose(page, dialog, key: str, option: str) -> None:
    dialog.locator(f".st-key-{key} [role='combobox']").click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_app(page)


def _query(server, sql: str, **params) -> list:
    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_labeled_zip_preview_map_import(app_server, browser_page, tmp_path):
    page = browser_page
    dialog = _open_tab(page, app_server.url, "Labeled Dataset")
    dialog.locator(".st-key-archive_file input[type='file']").set_input_files(_zip_file(tmp_path))
    dialog.get_by_text("Format: Folder per class").wait_for(timeout=30000)
    assert "cats (2)" in dialog.inner_text() and "dogs (2)" in dialog.inner_text()
    _choose(page, dialog, "archive_map_1", "Skip (don't import)")  # dogs
    dialog.locator(".st-key-archive_new_0 input").fill("house cats")
    dialog.locator(".st-key-archive_new_0 input").press("Enter")
    wait_for_app(page)
    _choose(page, dialog, "archive_dataset", "New dataset…")
    dialog.locator(".st-key-archive_new_dataset input").fill("Browser pets")
    dialog.locator(".st-key-archive_new_dataset input").press("Enter")
    wait_for_app(page)
    dialog.locator(".st-key-archive_go button").click()
    dialog.get_by_text("dataset_import · succeeded").wait_for(timeout=60000)
    assert "Classes created" in dialog.inner_text()
    assert exception_texts(page) == []

    labels = _query(app_server, """
        SELECT i.original_filename, c.name FROM cls_labels l
        JOIN cls_datasets d ON d.id = l.dataset_id JOIN cls_images i ON i.id = l.image_id
        JOIN cls_classes c ON c.id = l.class_id WHERE d.name = :name ORDER BY 1""", name="Browser pets")
    assert labels == [("a.jpg", "house cats"), ("b.jpg", "house cats")]
    assert _query(app_server, "SELECT count(*) FROM cls_classes WHERE name IN ('dogs', 'cats')") == [(0,)]


def test_products_tab_preview_and_import(app_server, browser_page):
    page = browser_page
    dialog = _open_tab(page, app_server.url, "Products")
    dialog.get_by_text("Use brand as label").click()
    wait_for_app(page)
    assert "Images to import" in dialog.inner_text()
    _choose(page, dialog, "products_dataset", "New dataset…")
    dialog.locator(".st-key-products_new_dataset input").fill("Browser brands")
    dialog.locator(".st-key-products_new_dataset input").press("Enter")
    wait_for_app(page)
    dialog.locator(".st-key-products_go button").click()
    dialog.get_by_text("products_import · succeeded").wait_for(timeout=90000)
    assert exception_texts(page) == []
    rows = _query(app_server, """
        SELECT count(DISTINCT l.image_id), count(DISTINCT c.name) FROM cls_labels l
        JOIN cls_datasets d ON d.id = l.dataset_id JOIN cls_classes c ON c.id = l.class_id
        WHERE d.name = :name""", name="Browser brands")
    images, brands = rows[0]
    assert images > 0 and brands >= 1
    assert _query(app_server, "SELECT count(*) FROM cls_images WHERE source = 'products_import'")[0][0] > 0
