"""Two labelers at once on one 2,000-image dataset, on Postgres, in two browser contexts (Playwright +
Debian Chromium): each page holds the image it shows and the ones it prefetched, so typing fast on
both never collides; a closed tab's images come back to the other labeler within a minute.

Keys are dispatched by timers inside each page (two pages typing at the same time; Playwright's sync
API drives one page at a time), the way tests/test_labeling_browser.py's PRESS does.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import create_engine, insert, select, text

from core.db import session_scope
from core.models import ClsDatasetImage, ClsImage, ClsLabel, ClsLabelChange, utcnow
from tests.factories import ADMIN, drawn_image_bytes
from tests.test_labeling_browser import wait_for_app

IMAGES = 2000
PAIRS = 30
CLASSES = ["team-a1", "team-a2", "team-b1", "team-b2"]  # keys 1–4: a types 1,2,1,2…; b types 3,4,3,4…

# Type digit+Enter pairs `gap` ms apart; before each pair, note the image the page shows then (the
# projection's; null once it stopped projecting). Returns at once: the timers run in the page.
TYPE_PAIRS = """([pairs, gap, digits]) => {
  window.__typed = [];
  let i = 0;
  const press = (key) => window.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true, cancelable: true}));
  const tick = () => {
    if (i >= pairs) { window.__typingDone = true; return; }
    const s = window.__labelingKeys;
    const view = s.view;
    const digit = digits[i % digits.length];
    window.__typed.push([view && !view.stopped && view.image ? view.image.id : null, digit]);
    press(digit); press('Enter');
    i += 1;
    setTimeout(tick, gap);
  };
  window.__typingDone = false;
  tick();
}"""
IDLE = "() => { const s = window.__labelingKeys; return window.__typingDone && s && !s.inflight && s.queue.length === 0; }"


def seed(server, url: str) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.datasets.label_space_edits import add_classes
    from core.storage import storage_from_url

    storage = storage_from_url(server.env["STORAGE_URL"])
    ids = sorted(uuid.uuid4() for _ in range(IMAGES))
    with session_scope(url) as session:
        classes = {name: create_class(actor=ADMIN, session=session, name=name).id for name in CLASSES}
        dataset = create_dataset(actor=ADMIN, session=session, name="team-2000")
        add_classes(session=session, actor=ADMIN, dataset_id=dataset.id, class_ids=list(classes.values()))
        rows = []
        for index, image_id in enumerate(ids):
            key = f"images/{image_id}.png"
            storage.put(key, drawn_image_bytes(index % 50, size=(64, 64)))
            rows.append({"id": image_id, "filename": f"{image_id}.png", "original_filename": f"team_{index}.png",
                         "storage_path": key, "width": 64, "height": 64, "file_size_bytes": 2000, "format": "PNG",
                         "source": "upload", "status": "pending", "tags": [], "meta": {}})
        session.execute(insert(ClsImage), rows)
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=ids)
        dataset_id = dataset.id
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return dataset_id, classes


def open_page(browser, server, dataset_id):
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.goto(f"{server.url}/labeling?dataset={dataset_id}&mode=unlabeled")
    wait_for_app(page)
    page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=60000)
    page.wait_for_timeout(500)  # the key listener is installed with the view
    return page


def queue_count(page) -> int:
    main = page.inner_text("[data-testid='stMain']")
    marker = " for you"
    head = main[:main.index(marker)]
    return int(head.split()[-1].replace(",", "").replace("*", ""))


def test_two_labelers_typing_at_once_never_collide_and_a_closed_tab_gives_its_images_back(postgres_app,
                                                                                        chromium_browser):
    server, url = postgres_app
    dataset_id, classes = seed(server, url)
    a, b = open_page(chromium_browser, server, dataset_id), open_page(chromium_browser, server, dataset_id)
    started = utcnow()
    a.evaluate(TYPE_PAIRS, [PAIRS, 150, ["1", "2"]])
    b.evaluate(TYPE_PAIRS, [PAIRS, 150, ["3", "4"]])
    for page in (a, b):
        page.wait_for_function(IDLE, timeout=120000)
    typed = {name: page.evaluate("() => window.__typed") for name, page in (("a", a), ("b", b))}

    with session_scope(url) as session:
        saves = session.execute(select(ClsLabelChange.image_id, ClsLabelChange.new_class_ids).where(
            ClsLabelChange.dataset_id == dataset_id, ClsLabelChange.created_at >= started)
            .order_by(ClsLabelChange.created_at, ClsLabelChange.id)).all()
        labels = {image_id: class_id for image_id, class_id in session.execute(
            select(ClsLabel.image_id, ClsLabel.class_id).where(ClsLabel.dataset_id == dataset_id))}
    assert len(saves) == 2 * PAIRS, f"{len(saves)} saves of {2 * PAIRS} typed"  # 0 dropped
    assert len({image_id for image_id, _ in saves}) == 2 * PAIRS  # 0 images labeled twice
    name_of = {str(class_id): name for name, class_id in classes.items()}
    per_page = {page: [name_of[new[0]] for _, new in saves if name_of[new[0]].startswith(f"team-{page}")]
                for page in ("a", "b")}
    for page, names in per_page.items():  # each page's saves: all of them, in the order typed
        assert names == [f"team-{page}{i % 2 + 1}" for i in range(PAIRS)], (page, names)
    by_digit = {str(i + 1): classes[name] for i, name in enumerate(CLASSES)}
    for page_typed in typed.values():
        for image_id, digit in page_typed:
            if image_id:  # where the page showed the image it typed on, that image got that label
                assert labels[uuid.UUID(image_id)] == by_digit[digit]
    shown_a = {i for i, _ in typed["a"] if i}
    shown_b = {i for i, _ in typed["b"] if i}
    assert not shown_a & shown_b  # never the same image on both pages

    # a closes mid-queue (its shown and prefetched images reserved); b reaches every unlabeled image
    # The page reserves its next prefetch window right after its last save's run: give that a few
    # seconds to land (seen: 3 of 4 held at the instant the typing ended, under load).
    settle = time.monotonic() + 10
    while True:
        with session_scope(url) as session:
            a_holder = session.scalar(select(ClsDatasetImage.reserved_by).where(
                ClsDatasetImage.image_id == uuid.UUID(a.get_attribute(".lk-image", "data-image-id"))))
            b_holder = session.scalar(select(ClsDatasetImage.reserved_by).where(
                ClsDatasetImage.image_id == uuid.UUID(b.get_attribute(".lk-image", "data-image-id"))))
            held_by_a = set(session.scalars(select(ClsDatasetImage.image_id).where(
                ClsDatasetImage.reserved_by == a_holder, ClsDatasetImage.reserved_until > utcnow())))
        if len(held_by_a) == 4 or time.monotonic() > settle:
            break
        a.wait_for_timeout(250)
    assert a_holder and b_holder and a_holder != b_holder and len(held_by_a) == 4
    a.context.close()
    closed = time.monotonic()
    unlabeled = IMAGES - 2 * PAIRS
    deadline = closed + 60
    while time.monotonic() < deadline:
        b.wait_for_timeout(2000)
        if queue_count(b) == unlabeled:
            break
    reached_after = time.monotonic() - closed
    assert queue_count(b) == unlabeled, f"b sees {queue_count(b)} of {unlabeled} unlabeled images after 60 s"
    from core.labeling.queue import queue_ids

    with session_scope(url) as session:
        pending = set(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.status == "pending")))
        reachable = set(queue_ids(session=session, dataset_id=dataset_id, mode="unlabeled", holder=b_holder,
                                  limit=IMAGES))
    assert len(pending) == unlabeled and reachable == pending and held_by_a <= reachable
    print(f"a's {len(held_by_a)} images back for b {reached_after:.1f} s after a closed")
    b.context.close()
