"""Every page in a real browser (Debian Chromium via Playwright): no exception, no console error."""

import pytest

from tests.plugins.browser import exception_texts, wait_for_app

PAGES = ["", "images", "classes", "datasets", "labeling", "training", "models", "predict"]


@pytest.mark.parametrize("path", PAGES)
def test_page_opens_cleanly(app_server, browser_page, path):
    page = browser_page
    page.goto(f"{app_server.url}/{path}")
    wait_for_app(page)
    page.wait_for_selector("h1", timeout=30000)
    assert exception_texts(page) == []
    assert page.watch.problems() == []


def test_sidebar_lists_every_section(app_server, browser_page):
    page = browser_page
    page.goto(app_server.url)
    wait_for_app(page)
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    for title in ("Dashboard", "Images", "Classes", "Datasets", "Labeling", "Training", "Models", "Predict"):
        assert title in nav
    assert "Local user" in page.locator("[data-testid='stSidebar']").inner_text()


def test_deep_link_on_a_fresh_server_goes_through_app_py(chromium_browser, tmp_path):
    """Streamlit's old folder mode would run pages/datasets.py alone (no login, no schema check)."""
    from tests.plugins.browser import start_app, stop_app

    server = start_app(tmp_path)
    try:
        page = chromium_browser.new_page()
        page.goto(f"{server.url}/datasets")
        wait_for_app(page)
        sidebar = page.locator("[data-testid='stSidebar']").inner_text()
        assert "Local user" in sidebar and "Classification" in sidebar
        assert "dataset sections" not in sidebar.lower()
        assert page.locator("h1").first.inner_text() == "Datasets"
        page.close()
    finally:
        stop_app(server)
