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


def test_keep_alive_requests_are_not_held_by_nagle(app_server, browser_page):
    """Streamlit's server leaves Nagle's algorithm on (it binds with proto 0, so asyncio skips
    TCP_NODELAY): each request after a connection's first then waits ~40 ms for the client's delayed
    ACK. The app turns it off on its first run (ui.shared.disable_nagle); a thumbnail page makes 48."""
    import http.client
    import statistics
    import time
    from urllib.parse import urlparse

    browser_page.goto(f"{app_server.url}/images")
    wait_for_app(browser_page)  # app.py has run in this server process
    address = urlparse(app_server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    timings = []
    for _ in range(8):
        started = time.perf_counter()
        connection.request("GET", "/_stcore/health")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        timings.append(time.perf_counter() - started)
    connection.close()
    assert statistics.median(timings[1:]) < 0.03, timings  # with Nagle on: ≥ 0.04 s each
