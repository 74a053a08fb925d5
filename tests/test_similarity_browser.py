"""Similarity in a real browser: more like this from the Images page (the neighbours shown, selected,
bulk-tagged), and a lasso on a dataset's map whose images are then labeled with a number key."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from core.models import ClsImage, ClsLabel
from tests.plugins.browser import exception_texts, query_app_database, seeded_app_server, wait_for_app

pytestmark = pytest.mark.timeout(400)

SEED = """
import io, json
from PIL import Image
from core.datasets.classes import create_class
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.datasets.label_space_edits import add_classes
from core.db import session_scope
from core.library.ingest import ingest_bytes
from core.similarity.embeddings import parse_source, run_embedding
from core.similarity.projection import build_map
from core.storage import get_storage
from tests.factories import ADMIN, drawn_image_bytes

def copy_of(data):
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 9 // 10, image.height * 9 // 10)).save(out, "JPEG", quality=95)
    return out.getvalue()

with session_scope() as session:
    dataset = create_dataset(session=session, actor=ADMIN, name="map test")
    classes = [create_class(session=session, actor=ADMIN, name=name).id for name in ("round", "square")]
    add_classes(session=session, actor=ADMIN, dataset_id=dataset.id, class_ids=classes)
    def add(data, name):
        return ingest_bytes(session=session, actor=ADMIN, storage=get_storage(), data=data, filename=name).image_id
    ids = [add(drawn_image_bytes(700 + i, (96, 96)), f"shape_{i:02d}.png") for i in range(12)]
    copy = add(copy_of(drawn_image_bytes(703, (96, 96))), "copy_of_03.jpg")
    add_images_to_dataset(session=session, actor=ADMIN, dataset_id=dataset.id, image_ids=ids)
run_embedding(actor=ADMIN, source=parse_source("convnext/atto", "none"))
build_map(actor=ADMIN, method="pca")
print(json.dumps({"dataset": str(dataset.id), "ids": [str(i) for i in ids], "copy": str(copy)}))
"""


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory):
    with seeded_app_server(tmp_path_factory.mktemp("similarity-app"), SEED, timeout=300) as seeded:
        yield seeded



def test_more_like_this_from_the_images_page_then_bulk_tag_the_neighbours(seeded_app, browser_page):
    server, seeded = seeded_app
    page = browser_page
    page.goto(server.url)
    wait_for_app(page)
    page.goto(f"{server.url}/images?image={seeded['ids'][3]}")
    wait_for_app(page)
    dialog = page.locator("[data-testid='stDialog']")
    dialog.get_by_role("button", name="More like this").click()
    wait_for_app(page)
    page.get_by_text("More like shape_03.png").wait_for(timeout=30000)
    assert f"like={seeded['ids'][3]}" in page.url
    captions = page.locator(".tg-name")
    expect(captions.first).to_have_text(re.compile(r"^\d\.\d\d · copy_of_03\.jpg$"), timeout=30000)  # best first
    select = page.get_by_role("button", name=re.compile(r"^Select these \d+$"))
    shown = int(select.inner_text().split()[-1])
    assert shown == captions.count() and 2 <= shown <= 12
    select.click()
    wait_for_app(page)
    page.get_by_text(f"{shown} selected", exact=True).wait_for(timeout=20000)
    page.get_by_role("button", name=f"Bulk actions ({shown})").click()
    popover = page.locator("[data-testid='stPopoverBody']")
    popover.get_by_role("tab", name="Tags").click()
    popover.get_by_label("Tags (comma-separated)").fill("looks-alike")
    popover.get_by_label("Tags (comma-separated)").press("Tab")
    wait_for_app(page)
    popover.get_by_role("button", name="Add tags").click()
    wait_for_app(page)
    page.wait_for_function("() => document.body.innerText.includes('tags updated')", timeout=20000)
    tagged = [row for row in query_app_database(server, select_tags()) if "looks-alike" in (row.tags or [])]
    assert len(tagged) == shown and "copy_of_03.jpg" in {row.original_filename for row in tagged}
    assert "shape_03.png" not in {row.original_filename for row in tagged}  # the image itself is not its neighbour
    assert exception_texts(page) == []
    assert page.watch.page_errors == []


def select_tags():
    return select(ClsImage.original_filename, ClsImage.tags)


def test_a_lasso_on_the_map_selects_images_that_a_number_key_labels(seeded_app, browser_page):
    server, seeded = seeded_app
    page = browser_page
    page.goto(server.url)
    wait_for_app(page)
    page.goto(f"{server.url}/datasets?dataset={seeded['dataset']}")
    wait_for_app(page)
    page.get_by_role("tab", name="Map").click()
    wait_for_app(page)
    page.get_by_text("12 images shown", exact=False).wait_for(timeout=30000)
    area = page.locator(".js-plotly-plot .nsewdrag").first
    area.wait_for(timeout=30000)
    box = area.bounding_box()
    left, top, right, bottom = box["x"] + 3, box["y"] + 3, box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
    middle = (left + right) / 2
    # a lasso around the left half of the plot: the PCA's leftmost point is in it, its rightmost is not
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((middle, top), (middle, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    wait_for_app(page)
    selected = page.get_by_text(re.compile(r"^\d+ selected$"))
    selected.wait_for(timeout=30000)
    count = int(selected.inner_text().split()[0])
    assert 0 < count < 12
    expect(page.locator(".tg-name")).to_have_count(count, timeout=20000)  # the selection drawn as grid tiles
    page.keyboard.press("2")
    page.get_by_text(re.compile(rf"^{count} images changed: square")).wait_for(timeout=30000)
    labeled = query_app_database(server, select(func.count()).select_from(ClsLabel))[0][0]
    assert labeled == count
    assert exception_texts(page) == []
    assert page.watch.page_errors == []
