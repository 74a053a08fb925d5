"""The Labeling page's "Most useful next" queue mode and "Label by cluster" view in a real browser
(Playwright + Debian Chromium), on a dataset whose images have known embedding vectors
(tests/clustered_index.py: a real index, float16 shards in the app's storage)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import dispose_engines, session_scope
from core.labeling.actions import set_pins
from core.labeling.useful_queue import compute_order
from core.models import ClsDatasetImage, ClsLabel
from core.storage import storage_from_url
from tests.clustered_index import clustered_dataset
from tests.plugins.browser import start_app, stop_app
from tests.test_labeling_browser import local_user, shown_image, wait_ack, wait_for_app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start_app(Path(tmp_path_factory.mktemp("active-labeling")))
    yield app
    stop_app(app)
    dispose_engines()


def seed(server, name: str, **shape):
    storage = storage_from_url(server.env["STORAGE_URL"])
    with session_scope(server.env["DATABASE_URL"]) as session:
        dataset_id, ids, group_of, class_ids = clustered_dataset(session, storage, name=name, **shape)
        set_pins(session=session, dataset_id=dataset_id, actor=local_user(), class_ids=class_ids)
    with session_scope(server.env["DATABASE_URL"]) as session:
        order = compute_order(session, dataset_id, storage=storage)
    return dataset_id, ids, group_of, class_ids, order


def manual_labels(server, dataset_id) -> dict[uuid.UUID, uuid.UUID]:
    with session_scope(server.env["DATABASE_URL"]) as session:
        return dict(session.execute(select(ClsLabel.image_id, ClsLabel.class_id)
                                    .where(ClsLabel.dataset_id == dataset_id)).all())


def test_most_useful_next_mode_shows_the_useful_order_and_labels_by_key(server, browser_page):
    dataset_id, ids, group_of, class_ids, order = seed(server, "useful-mode", groups=4, per_group=20)
    page = browser_page
    page.goto(f"{server.url}/labeling?dataset={dataset_id}")
    wait_for_app(page)
    page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=30000)
    assert uuid.UUID(shown_image(page)) == ids[0]  # the default queue (unlabeled) is the dataset's order
    page.get_by_text("Most useful next", exact=True).click()
    page.wait_for_function(f"() => document.querySelector('.lk-image')?.dataset.imageId === '{order[0]}'",
                           timeout=30000)
    wait_ack(page)
    shown = []
    for _ in range(4):  # the first four: one image of each cluster
        shown.append(uuid.UUID(shown_image(page)))
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        wait_ack(page)
        page.wait_for_function(f"() => document.querySelector('.lk-image')?.dataset.imageId !== '{shown[-1]}'",
                               timeout=30000)
    assert shown == order[:4]
    assert sorted(group_of[ids.index(i)] for i in shown) == [0, 1, 2, 3]
    assert manual_labels(server, dataset_id) == {i: class_ids[0] for i in shown}
    assert "mode=useful" in page.url
    assert not page.watch.page_errors


def test_one_key_labels_a_cluster_in_the_browser(server, browser_page):
    dataset_id, ids, group_of, class_ids, _order = seed(server, "by-cluster", groups=3, per_group=10)
    page = browser_page
    page.goto(f"{server.url}/labeling?dataset={dataset_id}")
    wait_for_app(page)
    page.get_by_text("Label by cluster").click()
    wait_for_app(page)
    page.get_by_label("Clusters (0: about 30 images each)").fill("3")
    page.get_by_label("Clusters (0: about 30 images each)").press("Tab")
    wait_for_app(page)
    page.get_by_role("button", name="Find clusters").click()
    page.get_by_text("Cluster 1 of 3").wait_for(timeout=30000)
    wait_for_app(page)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # keys go to the page
    page.keyboard.press("2")
    page.get_by_text("Cluster 2 of 3").wait_for(timeout=30000)
    assert "labeled" in page.inner_text("[data-testid='stMain']")
    written = manual_labels(server, dataset_id)
    assert len(written) >= 5 and set(written.values()) == {class_ids[1]}
    groups = {group_of[ids.index(i)] for i in written}
    assert len(groups) == 1 and -1 not in groups  # one cluster's near images; its outlier held back
    with session_scope(server.env["DATABASE_URL"]) as session:
        pending = set(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.status == "pending")))
    assert pending == set(ids) - set(written)
    page.get_by_text("Held back for one-by-one review").wait_for(timeout=10000)
    assert not page.watch.page_errors
