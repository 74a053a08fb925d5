"""Images page in a real browser: upload through the import dialog, filter from the URL, select, bulk-tag."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from core.models import ClsImage
from tests.factories import drawn_image_bytes
from tests.plugins.browser import exception_texts, wait_for_app

pytestmark = pytest.mark.timeout(300)


def rows_in_folder(server, folder: str) -> list[ClsImage]:
    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(ClsImage.original_filename, ClsImage.tags)
                                      .where(ClsImage.folder == folder)).all()
    finally:
        engine.dispose()


def test_upload_filter_select_and_bulk_tag(app_server, browser_page, tmp_path):
    page = browser_page
    files = []
    for seed in range(2):
        path = tmp_path / f"browser_{seed}.png"
        path.write_bytes(drawn_image_bytes(900 + seed, (120, 80)))
        files.append(str(path))
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image at all")
    files.append(str(fake))

    page.goto(f"{app_server.url}/images")
    wait_for_app(page)
    page.get_by_role("button", name="Import").first.click()
    dialog = page.locator("[data-testid='stDialog']")
    dialog.locator("input[type=file]").first.set_input_files(files)
    dialog.get_by_label("Folder (optional)").first.fill("browser-test")
    dialog.get_by_label("Tags (comma-separated, optional)").first.fill("uploaded")
    dialog.get_by_label("Tags (comma-separated, optional)").first.press("Tab")
    wait_for_app(page)
    dialog.get_by_role("button", name="Import", exact=True).click()
    dialog.get_by_text("Rejected").wait_for(timeout=60000)
    wait_for_app(page)
    metrics = dialog.locator("[data-testid='stMetricValue']").all_inner_texts()
    assert metrics[:3] == ["2", "0", "1"], metrics  # Upload is the first tab; others may show metrics too
    assert "not an image" in dialog.inner_text()
    assert sorted(r.original_filename for r in rows_in_folder(app_server, "browser-test")) == [
        "browser_0.png", "browser_1.png"]

    # A shared view: filters come from the URL.
    page.goto(f"{app_server.url}/images?folder=browser-test&q=browser")
    wait_for_app(page)
    page.get_by_text("2 of ").first.wait_for(timeout=20000)
    thumbs = page.locator("img[src*='/app/static/thumbs/']")
    thumbs.first.wait_for()
    assert thumbs.count() == 2
    assert page.evaluate("() => [...document.querySelectorAll(\"img[src*='/app/static/thumbs/']\")]"
                         ".every(img => img.complete && img.naturalWidth > 0)")

    page.get_by_role("button", name="Select page", exact=True).click()
    wait_for_app(page)
    page.get_by_text("2 selected").wait_for()
    page.get_by_role("button", name="Bulk actions (2)").click()
    popover = page.locator("[data-testid='stPopoverBody']")
    popover.get_by_role("tab", name="Tags").click()
    popover.get_by_label("Tags (comma-separated)").fill("bulk-tagged")
    popover.get_by_label("Tags (comma-separated)").press("Tab")
    wait_for_app(page)
    popover.get_by_role("button", name="Add tags").click()
    wait_for_app(page)
    page.wait_for_function("() => document.body.innerText.includes('tags updated')", timeout=20000)
    assert {tuple(r.tags) for r in rows_in_folder(app_server, "browser-test")} == {("uploaded", "bulk-tagged")}
    assert "folder=browser-test" in page.url
    assert exception_texts(page) == []
    assert page.watch.page_errors == []
