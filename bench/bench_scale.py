"""1,000,000 library images and a 200,000-image dataset on Postgres: every query a page or job makes,
through the real services.

    python bench/bench_scale.py [--rows 1000000] [--dataset 200000] [--repeats 15] [--fresh]
    python bench/bench_scale.py --only page,labeling,grid   # a part (page, labeling, grid, jobs)

Creates its own database (cls_bench_scale) on the local Postgres and keeps it for reruns (--fresh
rebuilds it). The library goes in by COPY with its indexes built afterwards (bench_images_page's
rows, plus pHash bands, 256-bit confirm hashes and planted near/exact copies); the dataset through
the services where they exist (create_dataset, create_class, add_classes, recount_dataset) and COPY
for its 200,000 memberships and labels. Every run first puts the dataset's splits back to the built
state and drops earlier versions, so reruns time the same work.

Prints milliseconds (p50/p90) for page queries against their targets, and seconds and peak RSS for
each job step; every job step runs in a fresh interpreter (its own peak RSS, nothing cached), with
the load average before and after each figure. Export writes a real ZIP of the labeled images, each
a small stored JPEG served from local storage (the archive's and the plan's cost, not S3's).

One run (2026-12-06, 2 shared cores at load 6-9, Postgres 15 with 128 MB shared_buffers), p90 ms:
Images page 8-16 except folder+source 52, tags 51, search 'cat' 128, filter options 1,460; grid
rarest class 262, AI-unreviewed 284, unassigned_labeled_count 288. Jobs, seconds / peak RSS MB:
split_stats 1.0 / 226, auto_split 25.7 / 576, create_version 23.7 / 582, health 16.0 / 593, export
16.9 / 550, near-duplicate grouping 29.4 / 783, exact grouping 2.3 / 228.

After migration 0005 (same day, load 12-18), p90 ms: Images page 12-40, every case under 50: filter
options 40 (was 1,990 at load 9: tags from cls_image_tags, the total from cls_library_counts),
folder+source 24 (one (folder, source) index), tags 32 (counted in cls_image_tags), search 'cat' 36
(a search counts 1,000 ahead, not 10,000); labeling next image 19 unlabeled / 22 all; grid 5-48
except rarest class 53 (its images by id through a covering index on Postgres, its total the class
count; the walk it replaces: 100) and AI-unreviewed 62-77
(counted in cls_labels through partial indexes, 54 ms in EXPLAIN; was 245 at load 9);
unassigned_labeled_count 7 when read again, 369 on the first read after a dataset write (kept per
write, core/datasets/revision_cache.py). Jobs at load 12-14, s / MB: split_stats 1.4 / 226,
auto_split 32.8 / 576, create_version 30.8 / 582, health 18.5 / 593 (main's code back to back: 18.7),
export 24.3 / 551, near-duplicate grouping 42.3 / 605, exact grouping 3.3 / 229. Migration 0005 on
the filled database: 137 s. The plans behind the figures: bench/scale_explain.py.

After migration 0008 (2026-12-07, a fresh build, load 5.0-5.5; main's code on the same database at
load 5.9-6.4 in brackets), p90 ms, every page query under 50: Images page 4-19 (tags 12 [1,021: the
build had not analyzed cls_image_tags; it does now]); labeling 2-14; grid 12-23: rarest class 23 [25]
(its images' ids from idx_cls_labels_class, now with dataset and image), AI-unreviewed 21 [35] (where
each image has one label, counted from a partial index of AI labels not reviewed: 1.3 ms in EXPLAIN,
was 33); unassigned_labeled_count 2.1 [4.4], first read after a split write 2.0 [189 after a
revision bump]: a column kept by triggers (core/models/dataset_aggregates.py). Migration 0008 on the
filled database: 1.1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = os.environ.get("BENCH_SCALE_DB", "cls_bench_scale")  # another name for a small trial run
DATASET = "bench-scale-200k"
STORAGE = Path(tempfile.gettempdir()) / "cls-bench-scale-storage"
CLASSES = [f"class_{i:02d}" for i in range(20)]
OTHER_LABELERS = 5
DATASET_MIDDLE = 100_000
PAGE_TARGET_MS = 50
QUEUE_TARGET_MS = 20
STATUSES = ["pending"] * 6 + ["labeled"] * 3 + ["review", "completed", "skipped"]
SOURCES = ["upload", "url_import", "products_import", "cutouts_import", "od_import"]
IMAGE_COLUMNS = ("id", "filename", "original_filename", "storage_path", "thumbnail_path", "width", "height",
                 "file_size_bytes", "format", "source", "folder", "tags", "status", "file_hash", "phash",
                 "phash_band0", "phash_band1", "phash_band2", "phash256", "metadata", "created_at", "updated_at")


def database_url() -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kilobytes


# ---------------------------------------------------------------- building


def _create_database(fresh: bool) -> None:
    from bench.bench_images_page import create_database

    create_database(DB_NAME, fresh)


def _flip_bits(value: int, bits: int, width: int, rng: random.Random) -> int:
    for bit in rng.sample(range(width), bits):
        value ^= 1 << bit
    return value


def _library_rows(have: int, rows: int, rng: random.Random):
    """bench_images_page's rows, with bands and confirm hashes; 1 % near copies of an earlier image
    (2-4 pHash bits and a few confirm-hash bits flipped) and 0.2 % exact copies (same SHA-256)."""
    from core.library.hamming import band_values

    folders = [f"folder_{i:02d}" for i in range(40)]
    tags = [f"tag_{i:03d}" for i in range(200)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    recent: list[tuple[int, int, str]] = []  # (phash, phash256, file_hash) of images made so far (a window)
    for n in range(have, rows):
        image_id = uuid.uuid4()
        roll = rng.random()
        if recent and roll < 0.012:
            phash, fine, file_hash = rng.choice(recent)
            if roll >= 0.002:  # a near copy: an edit of the same picture
                phash = _flip_bits(phash, rng.randrange(2, 5), 64, rng)
                fine = _flip_bits(fine, rng.randrange(0, 6), 256, rng)
                file_hash = uuid.uuid4().hex * 2
        else:
            phash, fine, file_hash = rng.getrandbits(64), rng.getrandbits(256), uuid.uuid4().hex * 2
        if len(recent) < 50_000:
            recent.append((phash, fine, file_hash))
        else:
            recent[rng.randrange(len(recent))] = (phash, fine, file_hash)
        band0, band1, band2 = band_values(phash)
        yield (image_id, f"{image_id}.jpg", f"IMG_{n:07d}_{rng.choice(['shelf', 'cat', 'box', 'can'])}.jpg",
               f"images/{image_id}.jpg", f"thumbs/{image_id}.jpg", 1024, 768, rng.randrange(20_000, 5_000_000),
               "JPEG", rng.choice(SOURCES), rng.choice(folders + [None]),
               json.dumps(rng.sample(tags, rng.randrange(0, 4))), rng.choice(STATUSES), file_hash,
               f"{phash:016x}", band0, band1, band2, f"{fine:064x}", "{}",
               start + timedelta(seconds=n * 30), start)


def build_library(engine, rows: int) -> None:
    from sqlalchemy import func, select, text

    from core.models import ClsImage

    with engine.begin() as connection:
        have = connection.scalar(select(func.count()).select_from(ClsImage))
    if have >= rows:
        return
    indexes = list(ClsImage.__table__.indexes)
    for index in indexes:  # COPY into a bare table, then build each index once
        index.drop(engine, checkfirst=True)
    rng = random.Random(7 + have)
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY cls_images ({', '.join(IMAGE_COLUMNS)}) FROM STDIN") as copy:
                for row in _library_rows(have, rows, rng):
                    copy.write_row(row)
        raw.driver_connection.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SET maintenance_work_mem = '512MB'"))
        for index in indexes:
            index.create(connection, checkfirst=True)
        connection.execute(text("VACUUM ANALYZE cls_images"))
        # The tag rows the triggers wrote during the COPY: without statistics (autovacuum may be off)
        # the tag filter's plan read the library in date order, 1,000-1,100 ms a page at p90.
        connection.execute(text("VACUUM ANALYZE cls_image_tags"))


SPLIT_RESET = """
UPDATE cls_dataset_images SET split = planned.split FROM (SELECT id, CASE
    WHEN status NOT IN ('labeled', 'review') OR abs(hashtext(image_id::text)) % 10 >= 6 THEN 'unassigned'
    WHEN abs(hashtext(image_id::text || 's')) % 10 < 8 THEN 'train'
    WHEN abs(hashtext(image_id::text || 's')) % 10 < 9 THEN 'val'
    ELSE 'test' END AS split FROM cls_dataset_images WHERE dataset_id = :dataset_id) AS planned
WHERE cls_dataset_images.id = planned.id AND cls_dataset_images.split IS DISTINCT FROM planned.split
"""
"""The built splits: 60 % of the labeled images in train/val/test 80/10/10, the rest unassigned."""


def build_dataset(engine, size: int) -> uuid.UUID:
    from sqlalchemy import select, text
    from sqlalchemy.orm import Session

    from core.datasets.classes import create_class
    from core.datasets.dataset import create_dataset, recount_dataset
    from core.datasets.label_space import _recount as recount_space
    from core.datasets.label_space_edits import add_classes
    from core.models import ClsClass, ClsDataset, ClsImage
    from core.users import operator_user

    actor = operator_user()
    with Session(engine) as session:
        found = session.scalar(select(ClsDataset.id).where(ClsDataset.name == DATASET))
        if found is not None:
            return found
        classes = [session.scalar(select(ClsClass).where(ClsClass.name == name))
                   or create_class(session=session, actor=actor, name=name) for name in CLASSES]
        dataset = create_dataset(session=session, actor=actor, name=DATASET)
        add_classes(session=session, actor=actor, dataset_id=dataset.id, class_ids=[c.id for c in classes])
        session.commit()
        dataset_id, class_ids = dataset.id, [c.id for c in classes]
        image_ids = session.scalars(select(ClsImage.id).order_by(ClsImage.created_at)).all()
    rng = random.Random(11)
    chosen = sorted(rng.sample(range(len(image_ids)), size))
    labelers = [uuid.uuid4() for _ in range(8)]
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(class_ids))]  # a long tail, as real data has
    added = datetime(2025, 6, 1, tzinfo=UTC)
    members, labels = [], []
    for k, index in enumerate(chosen):
        image_id = image_ids[index]
        roll = rng.random()
        status = "labeled" if roll < 0.45 else "review" if roll < 0.50 else "skipped" if roll < 0.52 else "pending"
        when = added + timedelta(seconds=k)
        labeler = rng.choice(labelers) if status == "labeled" else None
        members.append((uuid.uuid4(), dataset_id, image_id, status, "unassigned", when, labeler,
                        when if labeler else None, 1 if status in ("labeled", "review") else 0))
        if status in ("labeled", "review"):
            ai = status == "review" or rng.random() < 0.2
            labels.append((uuid.uuid4(), dataset_id, image_id, rng.choices(class_ids, weights)[0], labeler,
                           round(rng.uniform(0.3, 0.99), 3) if ai else None, ai, "bench-model" if ai else None,
                           ai and status == "labeled", when, when))
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy("COPY cls_dataset_images (id, dataset_id, image_id, status, split, added_at, "
                             "labeled_by, labeled_at, label_revision) FROM STDIN") as copy:
                for row in members:
                    copy.write_row(row)
            with cursor.copy("COPY cls_labels (id, dataset_id, image_id, class_id, user_id, confidence, "
                             "is_ai_generated, ai_model, is_reviewed, created_at, updated_at) FROM STDIN") as copy:
                for row in labels:
                    copy.write_row(row)
        raw.driver_connection.commit()
    finally:
        raw.close()
    with Session(engine) as session:
        session.execute(text(SPLIT_RESET), {"dataset_id": dataset_id})
        recount_dataset(session=session, actor=actor, dataset_id=dataset_id)
        recount_space(session, dataset_id)
        session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE cls_dataset_images"))
        connection.execute(text("VACUUM ANALYZE cls_labels"))
    return dataset_id


def build(rows: int, dataset_size: int, fresh: bool) -> uuid.UUID:
    from sqlalchemy import create_engine

    from core.migrate import stamp_head
    from core.models import Base

    _create_database(fresh)
    engine = create_engine(database_url())
    Base.metadata.create_all(engine)
    for table in Base.metadata.sorted_tables:  # a database kept from before an index was added gets it
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    stamp_head(database_url())
    build_library(engine, rows)
    dataset_id = build_dataset(engine, dataset_size)
    engine.dispose()
    return dataset_id


def reset_state(dataset_id: uuid.UUID) -> None:
    """Splits as built, no versions: each run times the same work."""
    from sqlalchemy import delete, text

    from core.db import session_scope
    from core.models import ClsDatasetVersion

    with session_scope() as session:
        session.execute(text(SPLIT_RESET), {"dataset_id": dataset_id})
        session.execute(delete(ClsDatasetVersion).where(ClsDatasetVersion.dataset_id == dataset_id))
    from core.db import get_engine

    # What autovacuum does on a live table (statistics, the visibility map for index-only counts),
    # after the rows a previous run's split moved are put back (and any label writes made between runs).
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE cls_dataset_images"))
        connection.execute(text("VACUUM ANALYZE cls_labels"))


# ---------------------------------------------------------------- page queries


def _timed(action, repeats: int) -> dict:
    from core.db import session_scope

    timings, result = [], None
    for _ in range(repeats):
        with session_scope() as session:
            started = time.perf_counter()
            result = action(session)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 1), "p90_ms": round(timings[int(0.9 * (len(timings) - 1))], 1),
            "result": result}


def page_queries(repeats: int) -> dict:
    from bench.bench_images_page import CASES
    from core.library.images import ImageFilters, count_ahead, image_filter_options, list_images

    out = {}
    for name, (filters, sort) in CASES.items():
        offset = 19 * 48 if "page 20" in name else 0
        ahead = count_ahead(ImageFilters(**filters))  # as pages/images.py counts
        figures = _timed(lambda s, f=filters, o=offset, so=sort, a=ahead: [
            len(x) if isinstance(x, list) else x for x in list_images(
                session=s, filters=ImageFilters(**f), sort=so, offset=o, count_limit=o + a)], repeats)
        out[name] = figures
    out["filter options (folders, tags, sources)"] = _timed(
        lambda s: {k: len(v) if hasattr(v, "__len__") else v for k, v in image_filter_options(session=s).items()},
        repeats)
    return out


def labeling_queries(dataset_id: uuid.UUID, repeats: int) -> dict:
    """The labeling page's calls per image (pages/labeling.py): next image and its window (reserved),
    then progress, position, keys, the cards ahead and the queue counts, while other labelers hold
    their own windows in the unlabeled queue."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.labeling import actions
    from core.labeling import queue as labeling
    from core.models import ClsDatasetImage
    from core.users import operator_user

    actor = operator_user()
    with session_scope() as session:  # other labelers each hold a window of the unlabeled queue
        for _ in range(OTHER_LABELERS):
            actions.next_image_and_upcoming(session=session, actor=actor, dataset_id=dataset_id, mode="unlabeled",
                                             holder=uuid.uuid4())
    with session_scope() as session:  # walks start mid-dataset: position counts half the rows
        middle = session.scalar(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)
                                .order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)
                                .offset(DATASET_MIDDLE).limit(1))
    out = {}
    for mode in ("unlabeled", "all"):
        holder, after, upcoming = uuid.uuid4(), middle, []
        steps = defaultdict(list)
        for _ in range(repeats + 1):
            with session_scope() as session:
                started = time.perf_counter()
                image_id, upcoming = actions.next_image_and_upcoming(
                    session=session, actor=actor, dataset_id=dataset_id, mode=mode, holder=holder, after=after)
                steps["next_image_and_upcoming"].append((time.perf_counter() - started) * 1000)
            with session_scope() as session:
                for name, call in _page_context_calls(session, labeling, actor, dataset_id, mode, holder,
                                                      image_id, upcoming):
                    started = time.perf_counter()
                    call()
                    steps[name].append((time.perf_counter() - started) * 1000)
            after = image_id
        with session_scope() as session:
            actions.release(session=session, actor=actor, dataset_id=dataset_id, holder=holder)
        for name, timings in steps.items():
            timings = sorted(timings[1:])  # the first call warms the connection pool
            out[f"{mode}: {name}"] = {"p50_ms": round(statistics.median(timings), 1),
                                      "p90_ms": round(timings[int(0.9 * (len(timings) - 1))], 1)}
    return out


def _page_context_calls(session, labeling, actor, dataset_id, mode, holder, image_id, upcoming):
    """What pages/labeling.py reads around the shown image (position only in mode "all", as there)."""
    from core.labeling import actions

    calls = [("progress", lambda: labeling.progress(session=session, dataset_id=dataset_id))]
    if mode == "all":
        calls.append(("position", lambda: labeling.position(session=session, dataset_id=dataset_id,
                                                            image_id=image_id)))
    return calls + [
        ("classes_for_labeling", lambda: actions.classes_for_labeling(session=session, dataset_id=dataset_id,
                                                                       user_id=actor.id)),
        ("image_cards(ahead)", lambda: labeling.image_cards(session=session, dataset_id=dataset_id,
                                                            image_ids=upcoming)),
        ("queue_counts", lambda: labeling.queue_counts(session=session, dataset_id=dataset_id, mode=mode,
                                                       holder=holder)),
    ]


def grid_queries(dataset_id: uuid.UUID, repeats: int) -> dict:
    """The dataset page: the grid (first page, a deep page, filters), its counts and the label space.
    The Splits tab's split_stats runs with the jobs (its peak memory is printed there)."""
    from sqlalchemy import select

    from core.datasets.dataset import set_split
    from core.datasets.grid import GridFilters, dataset_grid
    from core.datasets.label_space import label_space
    from core.datasets.versions import unassigned_labeled_count
    from core.db import session_scope
    from core.labeling.queue import datasets_for_labeling
    from core.models import ClsDatasetClass, ClsDatasetImage
    from core.users import operator_user

    with session_scope() as session:
        rare = session.scalar(select(ClsDatasetClass.class_id).where(ClsDatasetClass.dataset_id == dataset_id)
                              .order_by(ClsDatasetClass.image_count).limit(1))
    cases = {
        "grid: first page": (GridFilters(), 0),
        "grid: page 200": (GridFilters(), 199 * 48),
        "grid: rarest class": (GridFilters(class_id=rare), 0),
        "grid: unlabeled": (GridFilters(unlabeled=True), 0),
        "grid: split=val": (GridFilters(split="val"), 0),
        "grid: AI labels not reviewed": (GridFilters(source="ai", reviewed=False), 0),
    }
    out = {}
    for name, (filters, offset) in cases.items():
        out[name] = _timed(lambda s, f=filters, o=offset: dataset_grid(session=s, dataset_id=dataset_id, filters=f,
                                                                        offset=o)[0], repeats)
    out["label_space"] = _timed(lambda s: len(label_space(session=s, dataset_id=dataset_id)), repeats)
    out["unassigned_labeled_count"] = _timed(
        lambda s: unassigned_labeled_count(session=s, dataset_id=dataset_id), repeats)

    with session_scope() as session:  # a labeled image without a split, moved in and out of train
        moved = session.scalar(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.split == "unassigned",
            ClsDatasetImage.status == "labeled").limit(1))
    timings, result = [], None
    for n in range(repeats):
        with session_scope() as session:  # a split write through the service (its triggers move the count)
            set_split(session=session, actor=operator_user(), dataset_id=dataset_id, image_ids=[moved],
                      split="train" if n % 2 == 0 else "unassigned")
        with session_scope() as session:
            started = time.perf_counter()
            result = unassigned_labeled_count(session=session, dataset_id=dataset_id)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    out["unassigned_labeled_count, first after a write"] = {
        "p50_ms": round(statistics.median(timings), 1), "p90_ms": round(timings[int(0.9 * (len(timings) - 1))], 1),
        "result": result}
    if repeats % 2:  # the image back where it was
        with session_scope() as session:
            set_split(session=session, actor=operator_user(), dataset_id=dataset_id, image_ids=[moved],
                      split="unassigned")
    out["datasets_for_labeling"] = _timed(lambda s: len(datasets_for_labeling(session=s)), repeats)
    return out


# ---------------------------------------------------------------- jobs, each in a fresh interpreter


def bench_storage():
    """Local storage holding one small JPEG for every image key (written once, hard links after)."""
    from core.storage import LocalStorage

    return ImageServingStorage(LocalStorage(STORAGE))


class ImageServingStorage:
    """Local storage where every images/ key reads as one small JPEG (1M real files would be 1M
    writes for nothing the queries look at); everything else is the local store."""

    def __init__(self, inner):
        self.inner = inner
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 80, 40)).save(buffer, "JPEG")
        self.jpeg = buffer.getvalue()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get(self, key: str) -> bytes:
        return self.jpeg if key.startswith(("images/", "thumbs/")) else self.inner.get(key)

    def open(self, key: str):
        return io.BytesIO(self.jpeg) if key.startswith(("images/", "thumbs/")) else self.inner.open(key)


def run_job(step: str, dataset_id: uuid.UUID) -> dict:
    from core.db import session_scope
    from core.users import operator_user

    actor = operator_user()
    storage = bench_storage()
    import iterstrat.ml_stratifiers  # noqa: F401  (imports timed apart: seconds once per process)
    import scipy.sparse.csgraph  # noqa: F401

    base_rss = peak_rss_mb()
    started = time.perf_counter()
    detail: dict = {}
    if step == "auto_split":
        from core.datasets.splits import auto_split

        with session_scope() as session:
            result = auto_split(session=session, actor=actor, dataset_id=dataset_id, storage=storage)
            detail = {k: v for k, v in result.items() if isinstance(v, int | float | str)} if isinstance(result, dict) else {}
    elif step == "split_stats":
        from core.datasets.splits import split_stats

        with session_scope() as session:
            detail = {"images": split_stats(session=session, dataset_id=dataset_id)["images"]}
    elif step == "create_version":
        from core.datasets.versions import create_version

        with session_scope() as session:
            version = create_version(session=session, actor=actor, storage=storage, dataset_id=dataset_id)
            detail = {"labeled": version.labeled_image_count, "splits": version.split_counts}
    elif step == "health_check":
        from core.datasets.health import health_check

        with session_scope() as session:
            report = health_check(session=session, dataset_id=dataset_id, storage=storage)
            detail = {"labeled": report["labeled"], "findings": [f["code"] for f in report["findings"]]}
    elif step == "export":
        from core.datasets.export import collect_export, write_zip

        with session_scope() as session:
            plan = collect_export(session=session, storage=storage, dataset_id=dataset_id, fmt="imagefolder")
        detail["plan_s"] = round(time.perf_counter() - started, 2)
        with tempfile.TemporaryDirectory(prefix="bench-scale-export-") as workdir:
            summary = write_zip(plan, storage=storage, target=Path(workdir) / "export.zip")
        detail.update(images=summary["images"], mb=round(summary["bytes"] / 1e6, 1))
    elif step == "near_duplicate_groups":
        from core.library.duplicates import near_duplicate_groups

        with session_scope() as session:
            groups = near_duplicate_groups(session=session, storage=storage)
        detail = {"groups": len(groups), "images_in_groups": sum(map(len, groups))}
    elif step == "exact_duplicate_groups":
        from core.library.duplicates import exact_duplicate_groups

        with session_scope() as session:
            groups = exact_duplicate_groups(session=session)
        detail = {"groups": len(groups)}
    else:
        raise SystemExit(f"unknown step {step!r}")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": base_rss, **detail}


JOB_STEPS = ("split_stats", "auto_split", "create_version", "health_check", "export", "near_duplicate_groups",
             "exact_duplicate_groups")


def job_figures(dataset_id: uuid.UUID, steps) -> dict:
    out = {}
    for step in steps:
        before = load()
        done = subprocess.run([sys.executable, __file__, "--step", step, "--dataset-id", str(dataset_id)],
                              capture_output=True, text=True, env=os.environ)
        if done.returncode:
            out[step] = {"error": done.stderr.strip().splitlines()[-1:] or ["?"]}
            print(done.stderr, file=sys.stderr)
        else:
            out[step] = json.loads(done.stdout.strip().splitlines()[-1])
        out[step]["load"] = [before, load()]
        print(f"  {step}: {out[step]}", file=sys.stderr)
    return out


# ---------------------------------------------------------------- output


def table(report: dict) -> str:
    lines = []
    for section, target in (("page", PAGE_TARGET_MS), ("grid", PAGE_TARGET_MS), ("labeling", None)):
        for name, figures in report.get(section, {}).items():
            limit = target or (QUEUE_TARGET_MS if "next_image" in name else PAGE_TARGET_MS)
            mark = "ok" if figures["p90_ms"] <= limit else "MISS"
            lines.append(f"{section:8} {name:48} p50 {figures['p50_ms']:8.1f} ms  p90 {figures['p90_ms']:8.1f} ms"
                         f"  (<= {limit}) {mark}")
    for name, figures in report.get("jobs", {}).items():
        lines.append(f"job      {name:48} {figures.get('seconds', '-')!s:>8} s  peak RSS "
                     f"{figures.get('peak_rss_mb', '-')} MB  load {figures['load'][0]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dataset", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--only", default="page,labeling,grid,jobs")
    parser.add_argument("--jobs", default=",".join(JOB_STEPS))
    parser.add_argument("--step", help=argparse.SUPPRESS)  # one job step, run by the parent
    parser.add_argument("--dataset-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = database_url()
    os.environ.pop("REDIS_URL", None)
    if args.step:
        print(json.dumps(run_job(args.step, uuid.UUID(args.dataset_id))))
        return
    started = time.perf_counter()
    dataset_id = build(args.rows, args.dataset, args.fresh)
    report: dict = {"rows": args.rows, "dataset_images": args.dataset, "build_s": round(time.perf_counter() - started, 1),
                    "load_start": load()}
    reset_state(dataset_id)
    parts = args.only.split(",")
    if "page" in parts:
        report["page"] = page_queries(args.repeats)
        report["load_after_page"] = load()
    if "labeling" in parts:
        report["labeling"] = labeling_queries(dataset_id, args.repeats)
        report["load_after_labeling"] = load()
    if "grid" in parts:
        report["grid"] = grid_queries(dataset_id, args.repeats)
        report["load_after_grid"] = load()
    if "jobs" in parts:
        report["jobs"] = job_figures(dataset_id, args.jobs.split(","))
    report["load_end"] = load()
    print(json.dumps(report, indent=1, default=str))
    print(table(report))


if __name__ == "__main__":
    main()
