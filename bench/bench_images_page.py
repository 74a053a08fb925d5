"""Images page at 100,000 images on Postgres: query time of filtered pages (with EXPLAIN), and the page's
cold render with 48 thumbnails in a browser.

    python bench/bench_images_page.py [--rows 100000] [--browser]

Creates its own database (cls_bench_images) on the local Postgres, leaves it for reruns (--fresh
rebuilds it). Prints one JSON document with the figures and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = "cls_bench_images"
STATUSES = ["pending"] * 6 + ["labeled"] * 3 + ["review", "completed", "skipped"]
SOURCES = ["upload", "url_import", "products_import", "cutouts_import", "od_import"]


def database_url() -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}"


def create_database(name: str, fresh: bool) -> None:
    """The bench's own database on the local server; `fresh` drops a kept one first."""
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if exists and fresh:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            exists = False
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def build(rows: int, fresh: bool) -> None:
    from sqlalchemy import create_engine, func, select, text

    from core.models import Base, ClsImage

    create_database(DB_NAME, fresh)
    engine = create_engine(database_url())
    Base.metadata.create_all(engine)
    for index in ClsImage.__table__.indexes:  # a database kept from before an index was added gets it
        index.create(engine, checkfirst=True)
    from core.migrate import stamp_head

    stamp_head(database_url())  # the app migrates at start: tell it this schema is current
    with engine.begin() as connection:
        have = connection.scalar(select(func.count()).select_from(ClsImage))
    if have >= rows:
        engine.dispose()
        return
    rng = random.Random(7)
    folders = [f"folder_{i:02d}" for i in range(40)]
    tags = [f"tag_{i:03d}" for i in range(200)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    table = ClsImage.__table__
    batch = []
    with engine.begin() as connection:
        for n in range(have, rows):
            image_id = uuid.uuid4()
            batch.append({
                "id": image_id, "filename": f"{image_id}.jpg", "original_filename": f"IMG_{n:06d}_{rng.choice(['shelf', 'cat', 'box', 'can'])}.jpg",
                "storage_path": f"images/{image_id}.jpg", "thumbnail_path": f"thumbs/{image_id}.jpg",
                "width": 1024, "height": 768, "file_size_bytes": rng.randrange(20_000, 5_000_000), "format": "JPEG",
                "source": rng.choice(SOURCES), "folder": rng.choice(folders + [None]),
                "tags": rng.sample(tags, rng.randrange(0, 4)), "status": rng.choice(STATUSES),
                "file_hash": uuid.uuid4().hex * 2, "phash": f"{rng.getrandbits(64):016x}",
                "meta": {}, "created_at": start + timedelta(seconds=n * 60), "updated_at": start,
            })
            if len(batch) == 10_000:
                connection.execute(table.insert(), batch)
                batch.clear()
        if batch:
            connection.execute(table.insert(), batch)
    # What autovacuum does on a live table: statistics, and the visibility map for index-only counts.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE cls_images"))
    engine.dispose()


CASES = {
    "no filter, newest first": ({}, "date_desc"),
    "status=labeled, newest": ({"statuses": ["labeled"]}, "date_desc"),
    "folder + source": ({"folders": ["folder_07"], "sources": ["upload"]}, "date_desc"),
    "tag any of 2": ({"tags": ["tag_005", "tag_150"]}, "date_desc"),
    "status, page 20": ({"statuses": ["pending"]}, "date_desc"),
    "search 'cat'": ({"search": "cat"}, "date_desc"),
    "status=review, by name": ({"statuses": ["review"]}, "name_asc"),
    "largest first": ({}, "size_desc"),
}


def time_queries(repeats: int) -> dict:
    """Each case as the Images page runs it (the page of 48 and a count that stops COUNT_AHEAD past it),
    and with an exact count for comparison."""
    from core import limits
    from core.db import session_scope
    from core.library.images import ImageFilters, list_images

    results = {}
    for name, (filters, sort) in CASES.items():
        offset = 19 * 48 if "page 20" in name else 0
        figures = {}
        for label, count_limit in (("page", offset + limits.COUNT_AHEAD), ("exact_count", None)):
            timings = []
            for _ in range(repeats):
                with session_scope() as session:
                    started = time.perf_counter()
                    rows, total = list_images(session=session, filters=ImageFilters(**filters), sort=sort,
                                              offset=offset, count_limit=count_limit)
                    timings.append((time.perf_counter() - started) * 1000)
            figures[label] = {"median_ms": round(statistics.median(timings), 1),
                              "p90_ms": round(sorted(timings)[int(0.9 * (len(timings) - 1))], 1),
                              "rows": len(rows), "total": total}
        results[name] = figures
    return results


def explain(filters: dict, sort: str) -> dict:
    from sqlalchemy import func, select, text

    from core.db import session_scope
    from core.library.images import SORTS, ImageFilters, filter_clauses
    from core.models import ClsImage

    with session_scope() as session:
        clauses = filter_clauses(session, ImageFilters(**filters))
        page = select(ClsImage).where(*clauses).order_by(*SORTS[sort], ClsImage.id).limit(48)
        count = select(func.count()).select_from(ClsImage).where(*clauses)
        out = {}
        for label, query in (("page", page), ("count", count)):
            compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
            plan = session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")).scalars().all()
            out[label] = plan
        return out


THUMBS_LOADED = ("() => { const imgs = [...document.querySelectorAll(\"img[src*='/files/thumbs/']\")];"
                 " return imgs.length >= 48 && imgs.every(i => i.complete && i.naturalWidth > 0); }")


DASHBOARD_DRAWN = ("() => document.body.innerText.includes('Recent jobs')"
                  " && document.querySelectorAll('[data-testid=stMetric]').length >= 7")


def browser_render(repeats: int) -> dict:
    """Seconds until the Images page shows its 48 thumbnails (every one decoded), the thumbnails never
    loaded before (a fresh storage folder, a new browser context each time), on a running server:

    - fresh_profile: a browser that never opened the app (Streamlit's ~2 MB of scripts, fonts, …
      downloaded and compiled first; compare with bench/bench_streamlit_floor.py, a bare page);
    - returning_user: a new tab straight to /images in a browser that opened the app before (Streamlit's
      hashed scripts are served `immutable, max-age=1 year`, so they are cached), a new session;
    - from_sidebar: on the Dashboard, a click on Images in the sidebar (the usual way in);
    - warm: /images again in the returning user's browser (thumbnails cached);
    - dashboard_returning_user: the Dashboard (7 metrics, no images) in a new tab of that browser: the
      app's own shell (sidebar, session start) without the Images page.
    The first request of the server process (imports, caches) is timed apart: first_visit."""
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright
    from sqlalchemy import create_engine, select

    from core.models import ClsImage
    from core.storage import LocalStorage
    from tests.factories import drawn_image_bytes
    from tests.plugins.browser import CHROMIUM, CHROMIUM_ARGS, start_app, stop_app

    workdir = Path(tempfile.mkdtemp(prefix="bench-page-"))
    storage = LocalStorage(workdir / "storage")
    engine = create_engine(database_url())
    with engine.connect() as connection:
        keys = connection.execute(select(ClsImage.thumbnail_path).order_by(ClsImage.created_at.desc())
                                  .limit(48)).scalars().all()
    engine.dispose()
    for seed, key in enumerate(keys):  # a fresh storage folder: nothing of it is in any browser cache
        storage.put(key, drawn_image_bytes(seed, (256, 192), "JPEG"))
    server = start_app(workdir, {"DATABASE_URL": database_url(), "STORAGE_URL": f"file://{workdir / 'storage'}"},
                       migrate=False)
    times: dict[str, list[float]] = {}

    def timed(label: str, page, link=None) -> None:
        """Open /images in `page`, or click `link` (a locator) to get there."""
        started = time.perf_counter()
        link.click() if link is not None else page.goto(f"{server.url}/images")
        page.wait_for_function(THUMBS_LOADED, timeout=120_000)
        times.setdefault(label, []).append(round(time.perf_counter() - started, 2))

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

            def context():
                return browser.new_context(viewport={"width": 1400, "height": 1000})

            for round_number in range(repeats + 1):
                first = round_number == 0
                ctx = context()
                page = ctx.new_page()
                timed("first_visit" if first else "fresh_profile", page)
                ctx.close()
                if first:
                    continue
                # A returning user: the app opened before (the Dashboard), thumbnails of /images never.
                ctx = context()
                page = ctx.new_page()
                page.goto(f"{server.url}/")
                page.get_by_text("Recent jobs").wait_for(timeout=60_000)
                nav = page.locator("[data-testid='stSidebarNav'] a", has_text="Images")
                timed("from_sidebar", page, nav)
                ctx.close()
                ctx = context()
                page = ctx.new_page()
                page.goto(f"{server.url}/")
                page.get_by_text("Recent jobs").wait_for(timeout=60_000)
                page.close()
                page = ctx.new_page()  # the app's shell alone, for comparison: the Dashboard in a new tab
                started = time.perf_counter()
                page.goto(f"{server.url}/")
                page.wait_for_function(DASHBOARD_DRAWN, timeout=120_000)
                times.setdefault("dashboard_returning_user", []).append(round(time.perf_counter() - started, 2))
                page.close()
                page = ctx.new_page()
                timed("returning_user", page)
                page.close()
                page = ctx.new_page()
                timed("warm", page)
                ctx.close()
            browser.close()
    finally:
        stop_app(server)
        shutil.rmtree(workdir, ignore_errors=True)
    return {label: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
                    "runs": values} for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--browser", action="store_true", help="also time the page in Chromium")
    parser.add_argument("--browser-repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    build(args.rows, args.fresh)
    os.environ["DATABASE_URL"] = database_url()
    report = {"rows": args.rows, "build_s": round(time.perf_counter() - started, 1),
              "load_before": os.getloadavg(), "queries": time_queries(args.repeats),
              "explain_status_page": explain({"statuses": ["labeled"]}, "date_desc"),
              "explain_tags": explain({"tags": ["tag_005", "tag_150"]}, "date_desc"),
              "explain_search": explain({"search": "cat"}, "date_desc")}
    if args.browser:
        report["browser"] = browser_render(args.browser_repeats)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
