"""The labeling page in a real browser (Playwright + Debian Chromium): keys alone label images,
queue modes, review accept, Esc, ?, the class search box, and two labelers at once.

Each test module starts its own app server and seeds data through core functions in that database.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from core.datasets.classes import create_class
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.db import dispose_engines, session_scope
from core.labeling import labels
from core.labeling.actions import set_pins
from core.models import ClsDatasetImage, ClsLabel
from core.storage import storage_from_url
from tests.factories import ADMIN, add_to_space, make_image_row
from tests.plugins.browser import start_app, stop_app


def seed(server, name: str, *, images: int, classes: list[str], task_type: str = "single_label"):
    """A dataset of `images` drawn images and the given classes, in the app's own database."""
    url = server.env["DATABASE_URL"]
    storage = storage_from_url(server.env["STORAGE_URL"])
    with session_scope(url) as session:
        class_ids = {}
        for class_name in classes:
            class_ids[class_name] = create_class(actor=ADMIN, session=session, name=class_name).id
        dataset = create_dataset(actor=ADMIN, session=session, name=name, task_type=task_type)
        ids = [make_image_row(session, storage, seed=hash((name, i)) % 10_000).id for i in range(images)]
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=ids)
        add_to_space(session, dataset.id, class_ids.values())  # the dataset's classes (Settings tab)
        # and this user's pins, in the same order (keys 1, 2, …)
        set_pins(session=session, dataset_id=dataset.id, actor=local_user(), class_ids=list(class_ids.values()))
    return dataset.id, class_ids


def local_user():
    """The app's local user (no login configured): the pins are theirs."""
    from core.users import local_user as app_local_user

    return app_local_user()


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


def wait_for_app(page, timeout_ms: int = 30000) -> None:
    """The script run finished. (The shared harness's wait also expects app.py's own sidebar
    sections; this page's tests need only the run to be over.)"""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stSpinner\"],"
        " [data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=timeout_ms)
    page.wait_for_timeout(300)


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


def wait_ack(page, timeout_ms: int = 20000):
    page.wait_for_function(
        "() => { const s = window.__labelingKeys; return s && !s.inflight && s.queue.length === 0; }",
        timeout=timeout_ms)


def label_with_keys(page, picks: list[list[str]]) -> list[uuid.UUID]:
    """For each image: press its digits then Enter, waiting for the run each time; returns the ids."""
    shown = []
    for digits in picks:
        shown.append(uuid.UUID(shown_image(page)))
        for digit in digits:
            page.keyboard.press(digit)
        page.keyboard.press("Enter")
        wait_ack(page)
    return shown


def test_single_label_30_images_with_keys_alone(server, browser_page):
    dataset_id, classes = seed(server, "keys-single", images=30, classes=["cat", "dog", "fox"])
    page = browser_page
    open_labeling(page, server, dataset_id)
    names = list(classes)  # pinned in this order: cat=1, dog=2, fox=3
    picks = [[str(i % 3 + 1)] for i in range(30)]
    shown = label_with_keys(page, picks)
    assert len(set(shown)) == 30
    assert rows(server, dataset_id) == {image: {names[i % 3]} for i, image in enumerate(shown)}
    assert "30 / 30 labeled" in page.inner_text("[data-testid='stMain']")
    assert not page.watch.page_errors


def test_multi_label_30_images_with_keys_alone(server, browser_page):
    dataset_id, classes = seed(server, "keys-multi", images=30, task_type="multi_label",
                               classes=["m-red", "m-round", "m-small"])
    page = browser_page
    open_labeling(page, server, dataset_id)
    names = list(classes)
    # toggles: "1 2" → red+round; "1 3 3" → red (3 toggled off again); "2 3" → round+small
    patterns = [(["1", "2"], {0, 1}), (["1", "3", "3"], {0}), (["2", "3"], {1, 2})]
    picks = [patterns[i % 3][0] for i in range(30)]
    shown = label_with_keys(page, picks)
    expected = {image: {names[k] for k in patterns[i % 3][1]} for i, image in enumerate(shown)}
    assert rows(server, dataset_id) == expected


def test_typing_ahead_is_neither_lost_nor_doubled(server, browser_page):
    dataset_id, classes = seed(server, "keys-fast", images=24, classes=["f-a", "f-b", "f-c"])
    page = browser_page
    open_labeling(page, server, dataset_id)
    first = uuid.UUID(shown_image(page))
    typed = []
    for i in range(20):  # faster than a run: class, Enter, 50 ms apart
        digit = str(i * 2 % 3 + 1)
        typed.append(list(classes)[int(digit) - 1])
        page.keyboard.press(digit)
        page.wait_for_timeout(50)
        page.keyboard.press("Enter")
        page.wait_for_timeout(50)
    wait_ack(page, 60000)
    with session_scope(server.env["DATABASE_URL"]) as session:
        order = list(session.scalars(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)
                                     .order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)))
    saved = rows(server, dataset_id)
    assert len(saved) == 20
    start = order.index(first)
    assert [saved[image] for image in order[start:start + 20]] == [{name} for name in typed]
    # holding Enter (auto-repeat) on the next image saves it once
    page.keyboard.press("2")
    wait_ack(page)
    page.keyboard.down("Enter")
    for _ in range(20):
        page.wait_for_timeout(30)
        page.keyboard.down("Enter")
    page.keyboard.up("Enter")
    wait_ack(page)
    assert len(rows(server, dataset_id)) == 21


def test_help_escape_and_search_box_focus(server, browser_page):
    dataset_id, classes = seed(server, "keys-ui", images=4, classes=["s-alpha", "s-beta", "s-gamma"])
    page = browser_page
    open_labeling(page, server, dataset_id)
    page.keyboard.press("?")
    assert page.is_visible(".lk-help")
    page.keyboard.press("Escape")  # closes the panel, stays on the page
    assert not page.is_visible(".lk-help")
    first = shown_image(page)
    page.keyboard.press("/")  # focus the search; keys typed there are text, not shortcuts
    assert page.evaluate("() => document.activeElement.classList.contains('lk-search')")
    page.keyboard.type("gam 1 2 c r s")
    page.wait_for_timeout(500)
    assert page.input_value(".lk-search") == "gam 1 2 c r s"
    assert rows(server, dataset_id) == {} and shown_image(page) == first
    assert "Clear caches" not in page.inner_text("body")
    page.fill(".lk-search", "gam")
    assert page.inner_text(".lk-classes").count("s-") == 1
    page.keyboard.press("Enter")  # the top match, saved
    wait_ack(page)
    assert rows(server, dataset_id) == {uuid.UUID(first): {"s-gamma"}}
    assert shown_image(page) != first
    page.keyboard.press("Escape")  # back to the Datasets page for this dataset
    page.wait_for_url(f"**/datasets?dataset={dataset_id}*", timeout=20000)
    wait_for_app(page)
    # and back again through the sidebar (no reload): the keys still work, same dataset
    page.locator("[data-testid='stSidebarNav'] a", has_text="Labeling").click()
    page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=30000)
    wait_for_app(page)
    again = shown_image(page)
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    wait_ack(page)
    assert rows(server, dataset_id)[uuid.UUID(again)] == {"s-beta"}


def test_queue_modes_and_review_accept(server, browser_page):
    dataset_id, classes = seed(server, "keys-review", images=6, classes=["r-one", "r-two"])
    url = server.env["DATABASE_URL"]
    with session_scope(url) as session:
        order = list(session.scalars(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)
                                     .order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)))
        for image_id, conf in ((order[1], 0.3), (order[3], 0.9)):
            labels.set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id,
                              class_ids=[classes["r-one"]], confidence=conf, is_ai_generated=True, ai_model="m")
    page = browser_page
    open_labeling(page, server, dataset_id, mode="review")
    assert shown_image(page) == str(order[1])
    assert "AI" in page.inner_text(".lk-labels") and "30%" in page.inner_text(".lk-labels")
    page.keyboard.press("Enter")  # accept as it is
    wait_ack(page)
    assert shown_image(page) == str(order[3])
    page.keyboard.press("2")  # change it: a manual label
    page.keyboard.press("Enter")
    wait_ack(page)
    with session_scope(url) as session:
        got = {row.image_id: row for row in session.scalars(select(ClsLabel).where(ClsLabel.dataset_id == dataset_id))}
        assert got[order[1]].is_reviewed and got[order[1]].reviewed_by is not None and got[order[1]].is_ai_generated
        assert got[order[3]].class_id == classes["r-two"] and not got[order[3]].is_ai_generated
    page.keyboard.press("r")  # leave review mode: back to the unlabeled queue
    wait_ack(page)
    assert shown_image(page) == str(order[0])
    page.goto(f"{server.url}/labeling?dataset={dataset_id}&mode=low_confidence")
    wait_for_app(page)
    assert page.locator(".lk-image").get_attribute("data-image-id") in ("", None)  # nothing left below 0.5
    open_labeling(page, server, dataset_id, mode="all")
    assert shown_image(page) == str(order[0])
    page.keyboard.press("ArrowRight")
    wait_ack(page)
    page.keyboard.press("d")
    wait_ack(page)
    assert shown_image(page) == str(order[2])
    page.keyboard.press("a")
    wait_ack(page)
    assert shown_image(page) == str(order[1])
    assert "2 / 6" in page.inner_text("[data-testid='stMain']")


def test_two_labelers_get_different_images_and_never_overwrite(server, chromium_browser):
    dataset_id, classes = seed(server, "keys-two", images=6, classes=["t-one", "t-two"])
    pages = []
    for _ in range(2):
        page = chromium_browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        open_labeling(page, server, dataset_id)
        pages.append(page)
    a, b = pages
    assert shown_image(a) != shown_image(b)
    label_with_keys(a, [["1"]] * 2)
    label_with_keys(b, [["2"]] * 2)
    saved = rows(server, dataset_id)
    assert len(saved) == 4 and sorted(len(v) for v in saved.values()) == [1, 1, 1, 1]
    # b goes back to a's first image, whose label a changes meanwhile: b is told, not silently applied
    target = next(image for image, names in saved.items() if names == {"t-one"})
    b.goto(f"{server.url}/labeling?dataset={dataset_id}&image={target}&mode=all")
    wait_for_app(b)
    b.wait_for_selector(f".lk-image[data-image-id='{target}']")
    with session_scope(server.env["DATABASE_URL"]) as session:
        revision = session.scalar(select(ClsDatasetImage.label_revision).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == target))
        labels.set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=target, class_ids=[classes["t-two"]],
                          expected_revision=revision)
    b.keyboard.press("1")
    b.keyboard.press("Enter")
    wait_ack(b)
    assert "Someone else changed" in b.inner_text("[data-testid='stMain']")
    assert shown_image(b) == str(target) and "t-two" in b.inner_text(".lk-labels")
    assert rows(server, dataset_id)[target] == {"t-two"}
    for page in pages:
        page.context.close()


PRESS = """(keys) => {
  for (const key of keys) {
    window.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true, cancelable: true}));
  }
  const s = window.__labelingKeys;
  return [document.querySelector('.lk-image').dataset.imageId, s.inflight !== null];
}"""


def test_next_image_is_shown_before_the_save_returns_and_python_decides(server, browser_page):
    """Enter shows the next image from the prefetched queue in the same event (the save is still in
    flight); when another labeler took that image meanwhile, Python's answer wins and the keys typed
    on the guessed image are dropped, not applied to another one."""
    dataset_id, classes = seed(server, "keys-ahead", images=6, classes=["h-one", "h-two"])
    url = server.env["DATABASE_URL"]
    with session_scope(url) as session:
        order = list(session.scalars(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)
                                     .order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)))
    page = browser_page
    open_labeling(page, server, dataset_id)
    assert shown_image(page) == str(order[0])
    shown, in_flight = page.evaluate(PRESS, ["1", "Enter"])
    assert shown == str(order[1]) and in_flight  # drawn before Python answered
    assert "h-one" not in page.inner_text(".lk-labels")  # the next image's own (empty) label
    wait_ack(page)
    assert shown_image(page) == str(order[1])
    assert rows(server, dataset_id) == {order[0]: {"h-one"}}

    # This page's lease on the image after next ran out and another labeler took it: the guess
    # (order[2]) is wrong. (While the lease holds, no other page can get it: test_labeling_team_browser.)
    from datetime import timedelta

    from sqlalchemy import update

    from core.labeling.actions import reserve
    from core.models import utcnow

    with session_scope(url) as session:
        session.execute(update(ClsDatasetImage).where(ClsDatasetImage.image_id == order[2])
                        .values(reserved_until=utcnow() - timedelta(seconds=1)))
        assert reserve(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=order[2], holder=uuid.uuid4())
    shown, _ = page.evaluate(PRESS, ["2", "Enter", "1", "Enter"])
    assert shown == str(order[3])  # guessed two ahead
    wait_idle(page)
    assert shown_image(page) == str(order[3])  # Python skipped the reserved image
    assert rows(server, dataset_id) == {order[0]: {"h-one"}, order[1]: {"h-two"}}  # nothing on order[2]/[3]
    assert "typed for another image" in page.inner_text("[data-testid='stMain']")
    assert not page.watch.page_errors


FITS = """() => {
  // A control is cut off when its label overflows its own box, or when an ancestor that clips
  // (overflow other than visible) does not contain it whole.
  const cut = [];
  const main = document.querySelector("[data-testid='stMain']");
  const clipped = (el) => {
    const box = el.getBoundingClientRect();
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== "visible") {
        const r = a.getBoundingClientRect();
        if (box.left < r.left - 1 || box.right > r.right + 1) return true;
      }
    }
    return false;
  };
  for (const el of main.querySelectorAll("button, [data-testid='stProgress'], .lk-hint")) {
    if (!el.getBoundingClientRect().width) continue;
    const overflowing = [el, ...el.querySelectorAll("p, span, div")].some(
      (node) => node.scrollWidth > node.clientWidth + 1 && getComputedStyle(node).overflowX !== "visible");
    if (overflowing || clipped(el)) cut.push(el.innerText.trim().slice(0, 40));
  }
  return cut;
}"""


@pytest.mark.parametrize("width", [1280, 1440, 1920])
def test_controls_fit_and_small_images_fill_the_frame(server, chromium_browser, width):
    """At 1280–1920 px no control's label is cut off; a 96 px image is scaled up to fill the frame,
    drawn pixel-sharp (it is scaled more than 3×)."""
    dataset_id, _ = seed(server, f"fit-{width}", images=3, classes=[f"fit-{width}-a", f"fit-{width}-b"])
    page = chromium_browser.new_context(viewport={"width": width, "height": 1000}).new_page()
    try:
        open_labeling(page, server, dataset_id)
        page.wait_for_selector("text=Save & Next (Enter)")
        page.wait_for_function("() => { const i = document.querySelector('.lk-image'); "
                               "return i.complete && i.naturalWidth > 0; }", timeout=20000)
        assert page.evaluate(FITS) == []
        frame = page.locator(".lk-frame").bounding_box()
        image = page.locator(".lk-image").bounding_box()
        natural = page.evaluate("() => [document.querySelector('.lk-image').naturalWidth,"
                                " getComputedStyle(document.querySelector('.lk-image')).imageRendering]")
        assert natural[0] == 96 and natural[1] == "pixelated"
        shown = page.evaluate("""() => { const i = document.querySelector('.lk-image');
            const scale = Math.min(i.clientWidth / i.naturalWidth, i.clientHeight / i.naturalHeight);
            return [i.naturalWidth * scale, i.naturalHeight * scale]; }""")
        assert max(shown[0] / frame["width"], shown[1] / frame["height"]) > 0.98  # fills one side of the frame
        assert image["width"] <= frame["width"] + 1
    finally:
        page.context.close()
