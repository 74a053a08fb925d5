"""Images page in a real browser: upload through the import dialog, filter from the URL, select, bulk-tag."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, select

from core.models import ClsImage
from tests.apptest_tools import component_data
from tests.factories import ADMIN, drawn_image_bytes
from tests.plugins.browser import ROOT, exception_texts, wait_for_app

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
    # The summary of the Upload tab (the first tab: its metrics come first; other tabs may have some too).
    page.wait_for_function(
        "() => { const d = document.querySelector(\"[data-testid='stDialog']\");"
        " const m = d ? [...d.querySelectorAll(\"[data-testid='stMetricValue']\")].map(e => e.innerText) : [];"
        " return m.length >= 3 && m.slice(0, 3).join() === '2,0,1'; }", timeout=90000)
    wait_for_app(page)
    dialog.get_by_text("not an image", exact=False).first.wait_for(timeout=30000)
    assert sorted(r.original_filename for r in rows_in_folder(app_server, "browser-test")) == [
        "browser_0.png", "browser_1.png"]

    # A shared view: filters come from the URL.
    page.goto(f"{app_server.url}/images?folder=browser-test&q=browser")
    wait_for_app(page)
    page.get_by_text("2 of ").first.wait_for(timeout=20000)
    thumbs = page.locator("img[src*='/files/thumbs/']")
    expect(thumbs).to_have_count(2, timeout=20000)
    page.wait_for_function("() => [...document.querySelectorAll(\"img[src*='/files/thumbs/']\")]"
                           ".every(img => img.complete && img.naturalWidth > 0)", timeout=20000)

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


def test_page_reads_filters_from_url_pages_and_opens_detail(embedded_stack):
    """The page script itself (AppTest, in-process): URL filters, 48 per page, selection, detail view."""
    from streamlit.testing.v1 import AppTest

    from core.library.ingest import ingest_many
    from tests.factories import make_dataset

    results = ingest_many(actor=ADMIN, items=[(f"p_{i:02d}.png", drawn_image_bytes(500 + i, (40, 30))) for i in range(52)],
                          storage=embedded_stack.storage, folder="many", workers=1)
    ingest_many(actor=ADMIN, items=[("other.png", drawn_image_bytes(600))], storage=embedded_stack.storage, folder="else")
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "detail-ds")
        from core.datasets.dataset import add_images_to_dataset

        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=[results[0].image_id])
    app = AppTest.from_file(str(ROOT / "pages" / "images.py"), default_timeout=60)
    app.query_params["folder"] = "many"
    app.run()
    assert not app.exception
    assert any("52 of 53 images" in c.value for c in app.caption)
    [grid] = component_data(app, "thumbnail_grid")
    assert len(grid["tiles"]) == 48 and grid["selected"] == []
    assert {t["caption"] for t in grid["tiles"]} <= {f"p_{i:02d}.png" for i in range(52)}
    app.button(key="img_page_2").click().run()
    [grid] = component_data(app, "thumbnail_grid")
    assert len(grid["tiles"]) == 4
    assert app.query_params["page"] == ["2"] or app.query_params["page"] == "2"
    app.button(key="img_sel_page").click().run()
    [grid] = component_data(app, "thumbnail_grid")
    assert sorted(grid["selected"]) == sorted(t["id"] for t in grid["tiles"])
    assert any("4 selected" in m.value for m in app.markdown)
    app.button(key="img_sel_all").click().run()
    assert any("52 selected" in m.value for m in app.markdown)
    assert len(component_data(app, "thumbnail_grid")[0]["selected"]) == 4  # every tile shown is selected
    app.query_params["image"] = str(results[0].image_id)
    app.run()
    assert not app.exception
    assert any("detail-ds" in str(frame.value) for frame in app.dataframe)


def test_grid_clicks_during_runs_are_kept_shift_selects_a_range_and_details_opens(app_server, browser_page):
    """Selection happens in the browser (one component for the grid): clicks that land while the previous
    click's run is still going all count, shift-click selects the range, Details opens the image."""
    page = browser_page
    page.goto(f"{app_server.url}/images")
    wait_for_app(page)
    tiles = page.locator(".tg-tile")
    expect(tiles.first).to_be_visible(timeout=20000)
    assert tiles.count() >= 8
    boxes = page.locator(".tg-tile input[type=checkbox]")
    for index in (0, 2, 4):  # no waiting between clicks: each lands during the previous click's run
        boxes.nth(index).click()
    expect(page.locator(".tg-tile.selected")).to_have_count(3)
    page.get_by_text("3 selected").wait_for(timeout=20000)
    wait_for_app(page)
    boxes.nth(5).click()
    boxes.nth(7).click(modifiers=["Shift"])  # 5..7 joins the selection
    expect(page.locator(".tg-tile.selected")).to_have_count(6)
    page.get_by_text("6 selected").wait_for(timeout=20000)
    wait_for_app(page)
    page.get_by_role("button", name="Clear", exact=True).click()
    expect(page.locator(".tg-tile.selected")).to_have_count(0)
    page.get_by_text("0 selected").wait_for(timeout=20000)
    wait_for_app(page)
    caption = tiles.nth(1).locator(".tg-name").inner_text()
    tiles.nth(1).get_by_role("button", name="Details").click()
    dialog = page.locator("[data-testid='stDialog']")
    dialog.get_by_text("Datasets").first.wait_for(timeout=20000)
    assert caption in dialog.inner_text()
    assert "image=" in page.url
    assert exception_texts(page) == []
    assert page.watch.problems() == []


def test_list_view_shows_the_page_as_a_table_with_the_selection(embedded_stack):
    from streamlit.testing.v1 import AppTest

    from core.library.ingest import ingest_many

    results = ingest_many(actor=ADMIN, items=[(f"l_{i}.png", drawn_image_bytes(700 + i, (40, 30))) for i in range(3)],
                          storage=embedded_stack.storage, folder="listed", workers=1)
    app = AppTest.from_file(str(ROOT / "pages" / "images.py"), default_timeout=60)
    app.query_params["view"] = "List"
    app.query_params["folder"] = "listed"
    app.run()
    assert not app.exception
    assert component_data(app, "thumbnail_grid") == []
    app.button(key="img_sel_page").click().run()
    [table] = app.dataframe
    frame = table.value
    assert sorted(frame["file"]) == ["l_0.png", "l_1.png", "l_2.png"]
    assert list(frame["selected"]) == [True, True, True]
    assert sorted(frame["id"]) == sorted(str(r.image_id) for r in results)
    assert any("3 selected" in m.value for m in app.markdown)


def test_counts_stop_ahead_of_the_page_and_say_so(embedded_stack, monkeypatch):
    """A broad filter is counted exactly only up to COUNT_AHEAD past the page shown ("N+"); paging on
    counts further."""
    from streamlit.testing.v1 import AppTest

    from core import limits
    from core.library.ingest import ingest_many

    monkeypatch.setattr(limits, "COUNT_AHEAD", 10)
    ingest_many(actor=ADMIN, items=[(f"c_{i:02d}.png", drawn_image_bytes(800 + i, (40, 30))) for i in range(52)],
                storage=embedded_stack.storage, folder="counted", workers=1)
    app = AppTest.from_file(str(ROOT / "pages" / "images.py"), default_timeout=60)
    app.query_params["folder"] = "counted"
    app.run()
    assert not app.exception
    assert any(c.value == "10+ of 52 images" for c in app.caption), [c.value for c in app.caption]
    assert any(c.value == "Page 1 of 2+" for c in app.caption)
    assert app.button(key="img_sel_all").label == "Select all 10+ matching"
    app.button(key="img_page_2").click().run()
    assert any(c.value == "52 of 52 images" for c in app.caption)  # page 2 counts up to 48 + 10: exact
    assert len(component_data(app, "thumbnail_grid")[0]["tiles"]) == 4
    # a text search tests each row for its matches: it counts COUNT_AHEAD_SEARCH ahead
    monkeypatch.setattr(limits, "COUNT_AHEAD_SEARCH", 5)
    search = AppTest.from_file(str(ROOT / "pages" / "images.py"), default_timeout=60)
    search.query_params["q"] = "c_"
    search.run()
    assert any(c.value == "5+ of 52 images" for c in search.caption), [c.value for c in search.caption]
