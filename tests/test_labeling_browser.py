"""The labeling page in a real browser (Playwright + Debian Chromium): keys alone label images,
queue modes, review accept, Esc, ?, the class search box, and two labelers at once.

Each test module starts its own app server and seeds data through core functions in that database.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from core.classes import create_class
from core.datasets import add_images_to_dataset, create_dataset
from core.db import dispose_engines, session_scope
from core.models import ClsLabel
from core.storage import storage_from_url
from tests.factories import make_image_row
from tests.plugins.browser import start_app, stop_app, wait_for_app


def seed(server, name: str, *, images: int, classes: list[str], task_type: str = "single_label"):
    """A dataset of `images` drawn images and the given classes, in the app's own database."""
    url = server.env["DATABASE_URL"]
    storage = storage_from_url(server.env["STORAGE_URL"])
    with session_scope(url) as session:
        class_ids = {}
        for class_name in classes:
            class_ids[class_name] = create_class(session=session, name=class_name).id
        dataset = create_dataset(session=session, name=name, task_type=task_type)
        ids = [make_image_row(session, storage, seed=hash((name, i)) % 10_000).id for i in range(images)]
        add_images_to_dataset(session=session, dataset_id=dataset.id, image_ids=ids)
    return dataset.id, class_ids


def rows(server, dataset_id):
    """{image_id: set(class names)} and statuses, read from the app's database."""
    from core.models import ClsClass

    with session_scope(server.env["DATABASE_URL"]) as session:
        found = {}
        for image_id, name in session.execute(
                select(ClsLabel.image_id, ClsClass.name).join(ClsClass, ClsClass.id == ClsLabel.class_id)
                .where(ClsLabel.dataset_id == dataset_id)):
            found.setdefault(image_id, set()).add(name)
        return found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start_app(Path(tmp_path_factory.mktemp("labeling")))
    yield app
    stop_app(app)
    dispose_engines()


def open_labeling(page, server, dataset_id, mode: str | None = None):
    query = f"dataset={dataset_id}" + (f"&mode={mode}" if mode else "")
    page.goto(f"{server.url}/labeling?{query}")
    wait_for_app(page)
    page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=30000)


def shown_image(page) -> str:
    return page.get_attribute(".lk-image", "data-image-id")


def wait_idle(page, timeout_ms: int = 20000):
    """Every queued key sent and its run finished."""
    page.wait_for_function(
        "() => { const s = window.__labelingKeys; return s && !s.inflight && s.queue.length === 0; }",
        timeout=timeout_ms)
    wait_for_app(page)


def test_single_label_30_images_with_keys_alone(server, browser_page):
    dataset_id, classes = seed(server, "keys-single", images=30, classes=["cat", "dog", "fox"])
    page = browser_page
    open_labeling(page, server, dataset_id)
    typed = {}
    names = sorted(classes)  # keys follow the class order: cat=1, dog=2, fox=3
    for i in range(30):
        image_id = shown_image(page)
        choice = i % 3
        typed[uuid.UUID(image_id)] = names[choice]
        page.keyboard.press(str(choice + 1))
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelector('.lk-image').dataset.imageId !== '{image_id}'"
                               " || document.querySelector('.lk-image').hidden", timeout=20000)
    wait_idle(page)
    saved = rows(server, dataset_id)
    assert {k: {v} for k, v in typed.items()} == saved
    assert not page.watch.page_errors
