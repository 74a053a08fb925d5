"""Dataset detail in a real browser: select 20 images in the grid, press a class's number key, every
one is labeled (and counted); then create a version from the Versions tab."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from core.models import ClsDataset, ClsDatasetVersion, ClsLabel
from tests.plugins.browser import exception_texts, query_app_database, seeded_app_server, wait_for_app

pytestmark = pytest.mark.timeout(300)

SEED = """
import json
from core.datasets.classes import create_class
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.db import session_scope
from core.library.ingest import ingest_bytes
from core.datasets.label_space_edits import add_classes
from core.storage import get_storage
from tests.factories import ADMIN, drawn_image_bytes

with session_scope() as session:
    dataset = create_dataset(session=session, actor=ADMIN, name="grid test")
    classes = [create_class(session=session, actor=ADMIN, name=name).id for name in ("apple", "banana")]
    add_classes(session=session, actor=ADMIN, dataset_id=dataset.id, class_ids=classes)  # the dataset's classes: apple = 1, banana = 2
    ids = [ingest_bytes(session=session, actor=ADMIN, storage=get_storage(), data=drawn_image_bytes(500 + i, (64, 48)),
                        filename=f"fruit_{i:02d}.png").image_id for i in range(24)]
    add_images_to_dataset(session=session, actor=ADMIN, dataset_id=dataset.id, image_ids=ids)
    print(json.dumps({"dataset": str(dataset.id), "classes": [str(c) for c in classes]}))
"""


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory):
    with seeded_app_server(tmp_path_factory.mktemp("datasets-app"), SEED, timeout=120) as seeded:
        yield seeded



def test_select_twenty_and_label_them_with_a_number_key(seeded_app, browser_page):
    server, seeded = seeded_app
    page = browser_page
    # The root first: on a fresh server a deep link as the very first request runs pages/datasets.py
    # in Streamlit's old pages/ mode, without app.py (reported to the foundation).
    page.goto(server.url)
    wait_for_app(page)
    page.goto(f"{server.url}/datasets?dataset={seeded['dataset']}")
    wait_for_app(page)
    page.get_by_text("0 of 24 images labeled").wait_for(timeout=30000)
    thumbs = page.locator("img[src*='/files/thumbs/']")
    expect(thumbs).to_have_count(24, timeout=20000)

    for index in range(20):  # clicked without waiting: most land during the previous click's grid run
        page.get_by_text(f"fruit_{index:02d}.png", exact=True).click()
    page.get_by_text("20 selected", exact=True).wait_for(timeout=30000)
    wait_for_app(page)
    # no click elsewhere first: focus left the clicked checkbox, so the key reaches the class buttons
    page.keyboard.press("2")
    page.get_by_text("20 of 24 images labeled").wait_for(timeout=30000)
    page.get_by_text("0 selected", exact=True).wait_for()

    labels = query_app_database(server, select(ClsLabel.class_id, func.count()).group_by(ClsLabel.class_id))
    assert [(str(class_id), n) for class_id, n in labels] == [(seeded["classes"][1], 20)]
    counts = query_app_database(server, select(ClsDataset.image_count, ClsDataset.labeled_image_count, ClsDataset.class_count))
    assert counts == [(24, 20, 1)]
    chips = page.locator(".tg-chip.filled")
    expect(chips).to_have_count(20, timeout=20000)  # the grid may still be drawing after the progress text
    assert set(chips.all_inner_texts()) == {"banana"}

    # the freshly labeled images become a version from the Versions tab
    page.get_by_role("tab", name="Versions").click()
    wait_for_app(page)
    page.get_by_role("button", name="Create version").click()
    page.get_by_text("Version 1 created").wait_for(timeout=30000)
    versions = query_app_database(server, select(ClsDatasetVersion.version_number, ClsDatasetVersion.labeled_image_count))
    assert versions == [(1, 20)]
    assert exception_texts(page) == []
    assert page.watch.page_errors == []
