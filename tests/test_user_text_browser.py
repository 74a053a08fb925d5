"""User text is never rendered as HTML: a class and a dataset named with HTML (and an image file,
tag and folder named so in that dataset) show as text on the pages that list them and in the image
grids' tiles (a real browser; an executed onerror would add a marker)."""

from __future__ import annotations

import pytest

from tests.factories import ADMIN
from tests.plugins.browser import start_app, stop_app

XSS_CLASS = "<img src=x onerror=alert(1)>"
XSS_FILE = "<b>bold</b><img src=y onerror=alert(2)>.png"
PROBE = "<img src=z onerror=\"document.title='XSS'\">"


@pytest.fixture
def hostile_app(tmp_path, monkeypatch):
    from core.config import reset_settings_cache
    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.db import dispose_engines, session_scope
    from core.labeling.labels import set_labels
    from core.library.ingest import ingest_bytes
    from core.storage import get_storage, reset_storage_cache
    from tests.factories import drawn_image_bytes

    server = start_app(tmp_path)
    for name in ("DATABASE_URL", "STORAGE_URL"):
        monkeypatch.setenv(name, server.env[name])
    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings_cache()
    dispose_engines()
    reset_storage_cache()
    with session_scope() as session:
        cls = create_class(actor=ADMIN, session=session, name=XSS_CLASS, description=PROBE, display_name=PROBE)
        dataset = create_dataset(actor=ADMIN, session=session, name=PROBE, description=PROBE)
        image = ingest_bytes(actor=ADMIN, session=session, storage=get_storage(), data=drawn_image_bytes(3), filename=XSS_FILE,
                             tags=["<i>tag</i>"], folder="<u>folder</u>")
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=[image.image_id])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset.id, image_id=image.image_id, class_ids=[cls.id])
        server.dataset_id = str(dataset.id)
    dispose_engines()
    yield server
    stop_app(server)
    reset_settings_cache()
    reset_storage_cache()


def test_html_in_user_text_shows_as_text(hostile_app, browser_page):
    dialogs = []
    browser_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    # the list pages, the image library's tiles (file name: the part after the last "/", as ingest keeps
    # it) and the dataset grid's tiles (class chip: the class's display name, as on the Labeling page)
    body = "text => document.body.innerText.includes(text)"
    chip = "text => [...document.querySelectorAll('.tg-chip')].some(c => c.textContent.includes(text))"
    for path, shown, where in (("classes", XSS_CLASS, body), ("datasets", PROBE, body),
                               ("images", XSS_FILE.rsplit("/", 1)[-1], body),
                               (f"datasets?dataset={hostile_app.dataset_id}", PROBE, chip)):
        browser_page.goto(f"{hostile_app.url}/{path}")
        # Wait for the user text itself (wait_for_app's idle check can outlast a busy shared machine).
        browser_page.wait_for_function(where, arg=shown, timeout=120_000)
        browser_page.wait_for_timeout(1000)
        injected = browser_page.evaluate(
            "() => document.querySelectorAll(\"img[src='x'], img[src='y'], img[src='z']\").length"
            " + [...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length")
        assert injected == 0, path
        assert dialogs == [] and browser_page.title() != "XSS", path
