"""Labeling page latency and key safety, in a real browser on a 50,000-image Postgres dataset.

Prints: key press → next image visible (median, p90 over 100 presses of Enter, each after a class
was picked; the page shows the prefetched next image before the save returns), the save's round
trip (until Python's answer is in the page), 20 class+Enter pairs typed 50 ms apart → saves and
whether each has the typed class in order, and saves from holding Enter down (auto-repeat). Records the machine's load beside them.

    python bench/bench_labeling_latency.py [--images 50000] [--presses 100]

Needs Postgres at TEST_POSTGRES_URL's server (default postgresql://postgres@127.0.0.1:5432) and
Debian's Chromium; creates and drops its own database `bench_labeling`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factories import ADMIN  # noqa: E402  (the repository on the path first)

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLASSES = ["apple", "banana", "cherry", "grape", "lemon"]

MEASURE_ENTER = """async () => {
  const img = document.querySelector('.lk-image');
  const before = img.dataset.imageId;
  const t0 = performance.now();
  window.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true}));
  let shown = null, visible = null;
  while (true) {
    await new Promise(requestAnimationFrame);
    const now = document.querySelector('.lk-image');
    if (shown === null && now.dataset.imageId !== before) shown = performance.now() - t0;
    if (visible === null && shown !== null && now.complete && now.naturalWidth > 0) visible = performance.now() - t0;
    const s = window.__labelingKeys;
    if (visible !== null && !s.inflight && s.queue.length === 0) return [visible, shown, performance.now() - t0];
    if (performance.now() - t0 > 10000) return [-1, -1, -1];
  }
}"""

IDLE = "() => { const s = window.__labelingKeys; return s && !s.inflight && s.queue.length === 0; }"


def load() -> str:
    return open("/proc/loadavg").read().split()[:3].__str__()


def make_database() -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS bench_labeling WITH (FORCE)"))
        connection.execute(text("CREATE DATABASE bench_labeling"))
    admin.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + "/bench_labeling"


def seed(url: str, storage_url: str, images: int, with_files: int) -> uuid.UUID:
    """`images` library rows in one dataset; only the first `with_files` in queue order get bytes."""
    from sqlalchemy import create_engine, insert, text

    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.datasets.label_space_edits import add_classes
    from core.db import session_scope
    from core.models import ClsImage
    from core.storage import storage_from_url
    from tests.factories import drawn_image_bytes

    storage = storage_from_url(storage_url)
    ids = sorted(uuid.uuid4() for _ in range(images))  # one CURRENT_TIMESTAMP: queue order is id order
    with session_scope(url) as session:
        class_ids = [create_class(actor=ADMIN, session=session, name=name).id for name in CLASSES]
        dataset = create_dataset(actor=ADMIN, session=session, name="bench-50k")
        # the dataset's classes: keys 1–5
        add_classes(session=session, actor=ADMIN, dataset_id=dataset.id, class_ids=class_ids)
        rows = []
        for index, image_id in enumerate(ids):
            key = f"images/{image_id}.jpg"
            if index < with_files:
                data = drawn_image_bytes(index, size=(640, 480), fmt="JPEG")
                storage.put(key, data)
            rows.append({"id": image_id, "filename": f"{image_id}.jpg", "original_filename": f"photo_{index}.jpg",
                         "storage_path": key, "width": 640, "height": 480, "file_size_bytes": 30000,
                         "format": "JPEG", "source": "upload", "status": "pending", "tags": [], "meta": {}})
        for start in range(0, len(rows), 5000):
            session.execute(insert(ClsImage), rows[start:start + 5000])
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=ids)
        dataset_id = dataset.id
    # Planner statistics, as autovacuum would have them for a table this size (a fresh bulk load
    # has none, and Postgres then picks the status index and sorts 50,000 rows per query).
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return dataset_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--presses", type=int, default=100)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ClsClass, ClsLabel, ClsLabelChange
    from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, start_app, stop_app
    from tests.test_labeling_browser import wait_for_app

    workdir = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    url = make_database()
    storage_url = f"file://{workdir / 'storage'}"
    server = start_app(workdir, extra_env={"DATABASE_URL": url, "STORAGE_URL": storage_url})
    needed = args.presses + 20 + 40 + 20
    t = time.perf_counter()
    dataset_id = seed(url, storage_url, args.images, needed)
    print(f"seeded {args.images} images in {time.perf_counter() - t:.0f} s; load {load()}")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{server.url}/labeling?dataset={dataset_id}&mode=unlabeled")
            wait_for_app(page)
            page.wait_for_selector(".lk-image[data-image-id]:not([data-image-id=''])", timeout=60000)

            def pick(digit: str) -> None:
                page.keyboard.press(digit)
                page.wait_for_function(IDLE, timeout=20000)

            for i in range(5):  # warm-up: caches, first queries
                pick(str(i % 5 + 1))
                page.evaluate(MEASURE_ENTER)
                page.wait_for_function(IDLE, timeout=20000)
            load_before = load()
            latencies, arrivals, confirmed = [], [], []
            for i in range(args.presses):
                pick(str(i % 5 + 1))
                visible, data_in, answered = page.evaluate(MEASURE_ENTER)
                latencies.append(visible)
                arrivals.append(data_in)
                confirmed.append(answered)
                page.wait_for_function(IDLE, timeout=20000)
            load_after = load()
            failed = sum(1 for value in latencies if value < 0)
            ok = sorted(value for value in latencies if value >= 0)
            median, p90 = statistics.median(ok), ok[int(0.9 * (len(ok) - 1))]
            print(f"key → next image visible over {len(ok)} Enter presses ({args.images} images, Postgres): "
                  f"median {median:.0f} ms, p90 {p90:.0f} ms, max {ok[-1]:.0f} ms, timeouts {failed} "
                  f"(new image id in the page after median {statistics.median(arrivals):.0f} ms: the rest is "
                  f"drawing the prefetched image); "
                  f"load before {load_before} after {load_after}")
            done = sorted(value for value in confirmed if value >= 0)
            print(f"save answered by the server (Python's run over, the page agrees) after median "
                  f"{statistics.median(done):.0f} ms, p90 {done[int(0.9 * (len(done) - 1))]:.0f} ms")

            with session_scope(url) as session:
                since = session.scalar(select(ClsLabelChange.created_at).order_by(ClsLabelChange.created_at.desc())
                                       .limit(1))
            typed = []
            for i in range(20):  # an experienced labeler: class, Enter, class, Enter … 50 ms apart
                digit = str((i * 3) % 5 + 1)
                typed.append(CLASSES[int(digit) - 1])
                page.keyboard.press(digit)
                page.wait_for_timeout(50)
                page.keyboard.press("Enter")
                page.wait_for_timeout(50)
            page.wait_for_function(IDLE, timeout=60000)
            with session_scope(url) as session:
                changes = session.execute(
                    select(ClsLabelChange.image_id, ClsLabelChange.new_class_ids)
                    .where(ClsLabelChange.created_at > since).order_by(ClsLabelChange.created_at)).all()
                names = {str(c.id): c.name for c in session.scalars(select(ClsClass))}
            saved = [names[change.new_class_ids[0]] for change in changes]
            order_ok = [change.image_id for change in changes] == sorted(change.image_id for change in changes)
            print(f"20 class+Enter pairs 50 ms apart: {len(changes)} saves, classes as typed: {saved == typed}, "
                  f"images in queue order: {order_ok}, distinct images: {len({c.image_id for c in changes})}; "
                  f"load {load()}")

            pick("2")
            with session_scope(url) as session:
                count_before = len(session.scalars(select(ClsLabel.id)).all())
            page.keyboard.down("Enter")  # Playwright marks the repeated keydowns repeat=true, like a held key
            for _ in range(30):
                page.wait_for_timeout(33)
                page.keyboard.down("Enter")
            page.keyboard.up("Enter")
            page.wait_for_function(IDLE, timeout=20000)
            with session_scope(url) as session:
                count_after = len(session.scalars(select(ClsLabel.id)).all())
            print(f"holding Enter for 1 s (31 keydowns, 30 auto-repeat): {count_after - count_before} save(s); "
                  f"load {load()}")
            browser.close()
    finally:
        stop_app(server)


if __name__ == "__main__":
    main()
