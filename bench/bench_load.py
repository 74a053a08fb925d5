"""Load: concurrent labelers on one dataset, then bulk operations on many images under a labeler.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/<scratch db> \
        python bench/bench_load.py [--labelers 10] [--images 10000] [--seconds 300] [--bulk-images 100000] \
        [--index-label-changes]

Empties the cls_* tables of that database first (never point it at real data).

Part 1: `--labelers` threads, each a labeling page: take the next unlabeled image
(core.labeling.actions.next_image, reserved for that page), show its card, save a class with
core.labeling.actions.save at the shown revision, one transaction per save, as the page's save path does.
Prints saves/s and p50/p95/max save latency, then verifies every save is in the database exactly once
(one label row per saved image with the saved class, one label change per save, no image saved twice)
and that every count is exact (core.labeling.counts.count_mismatches).

Part 2: `--bulk-images` library images; tag them, add them to a dataset, set a label, delete by a
filter, each through core.library.bulk (what the Images and Datasets pages and the CLI call: batches
sized to about 0.25 s, one transaction per batch), while labelers keep saving: one on a dataset of its
own with the class the bulk label sets (they share that class's count row), one on the bulk dataset
itself (it shares the dataset row with every batch). Records their worst and p95 save latency (the
target: no lock holds a labeler > 1 s). Prints the time of each operation, the latencies, the load.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter

from sqlalchemy import delete, func, insert, select, text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.datasets.classes import create_class  # noqa: E402
from core.datasets.dataset import add_images_to_dataset, create_dataset  # noqa: E402
from core.db import get_engine, session_scope  # noqa: E402
from core.labeling import actions
from core.labeling import queue as labeling  # noqa: E402
from core.labeling.counts import count_mismatches  # noqa: E402
from core.library import bulk as bulk_actions  # noqa: E402
from core.library.images import ImageFilters, matching_image_ids  # noqa: E402
from core.models import Base, ClsDataset, ClsImage, ClsLabel, ClsLabelChange  # noqa: E402
from core.storage import get_storage  # noqa: E402
from tests.factories import ADMIN

BATCH = 5000


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def empty_tables() -> None:
    Base.metadata.create_all(get_engine())
    tables = [table.name for table in Base.metadata.sorted_tables if table.name.startswith("cls_")]
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":  # a row-by-row DELETE runs every cascade
            session.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in tables:
                    session.execute(delete(table))


def make_images(n: int, folder: str) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    for start in range(0, n, BATCH):
        with session_scope() as session:
            session.execute(insert(ClsImage), [{"id": i, "filename": f"{i}.jpg", "storage_path": f"images/{i}.jpg",
                                                "folder": folder} for i in ids[start:start + BATCH]])
    return ids


def build_dataset(n: int, name: str = "load") -> tuple[uuid.UUID, list[uuid.UUID]]:
    ids = make_images(n, name)
    with session_scope() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name=name)
        classes = [create_class(actor=ADMIN, session=session, name=f"{name} class {i}").id for i in range(10)]
        dataset_id = dataset.id
    for start in range(0, n, BATCH):
        with session_scope() as session:
            add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids[start:start + BATCH])
    return dataset_id, classes


class Labeler(threading.Thread):
    """One labeling page: next image, its card, save a class; records each save and its latency."""

    def __init__(self, dataset_id, classes, stop: threading.Event, seed: int):
        super().__init__(daemon=True)
        self.dataset_id, self.classes, self.stop = dataset_id, classes, stop
        self.holder, self.rng = uuid.uuid4(), random.Random(seed)
        self.saved: list[tuple[uuid.UUID, uuid.UUID]] = []
        self.latencies: list[float] = []
        self.conflicts = self.errors = 0

    def run(self) -> None:
        after = None
        while not self.stop.is_set():
            try:
                with session_scope() as session:
                    image_id = actions.next_image(actor=ADMIN, session=session, dataset_id=self.dataset_id, mode="unlabeled",
                                                   holder=self.holder, after=after)
                    if image_id is None:
                        return
                    card = labeling.image_card(session=session, dataset_id=self.dataset_id, image_id=image_id)
                class_id = self.rng.choice(self.classes)
                started = time.perf_counter()
                with session_scope() as session:
                    result = actions.save(session=session, dataset_id=self.dataset_id, image_id=image_id,
                                           class_ids=[class_id], shown_revision=card.label_revision,
                                           actor=ADMIN, shown=card)
                self.latencies.append(time.perf_counter() - started)
                if result.outcome == "saved":
                    self.saved.append((image_id, class_id))
                else:
                    self.conflicts += 1
                after = image_id
            except Exception as exc:  # counted and shown: the run must not hide failures
                self.errors += 1
                print(f"labeler error: {type(exc).__name__}: {exc}", file=sys.stderr)
                time.sleep(0.1)


def verify(dataset_id, labelers: list[Labeler]) -> dict:
    saved = [pair for labeler in labelers for pair in labeler.saved]
    per_image = Counter(image_id for image_id, _ in saved)
    twice = [image_id for image_id, n in per_image.items() if n > 1]
    with session_scope() as session:
        rows = dict(session.execute(select(ClsLabel.image_id, ClsLabel.class_id)
                                    .where(ClsLabel.dataset_id == dataset_id)).all())
        label_count = session.scalar(select(func.count()).select_from(ClsLabel).where(ClsLabel.dataset_id == dataset_id))
        changes = session.scalar(select(func.count()).select_from(ClsLabelChange)
                                 .where(ClsLabelChange.dataset_id == dataset_id))
        mismatches = count_mismatches(session=session)
        dataset = session.get(ClsDataset, dataset_id)
        labeled = dataset.labeled_image_count
    missing = [image_id for image_id, class_id in saved if rows.get(image_id) != class_id]
    return {"saves": len(saved), "images_saved_twice": len(twice), "saves_missing_or_wrong": len(missing),
            "label_rows": label_count, "label_changes": changes, "dataset_labeled_count": labeled,
            "count_mismatches": len(mismatches),
            "ok": not twice and not missing and label_count == len(saved) == changes == labeled and not mismatches}


def part_one(args) -> uuid.UUID:
    t0 = time.perf_counter()
    dataset_id, classes = build_dataset(args.images)
    print(f"built a {args.images:,}-image dataset in {time.perf_counter() - t0:.1f} s")
    stop = threading.Event()
    labelers = [Labeler(dataset_id, classes, stop, seed) for seed in range(args.labelers)]
    started = time.perf_counter()
    for labeler in labelers:
        labeler.start()
    while time.perf_counter() - started < args.seconds and any(t.is_alive() for t in labelers):
        time.sleep(0.5)
    stop.set()
    for labeler in labelers:
        labeler.join()
    elapsed = time.perf_counter() - started
    latencies = [x for labeler in labelers for x in labeler.latencies]
    saves = sum(len(labeler.saved) for labeler in labelers)
    print(f"{args.labelers} labelers for {elapsed:.0f} s: {saves:,} saves, {saves / elapsed:.1f} saves/s, "
          f"save latency p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms, "
          f"max {max(latencies, default=0) * 1000:.0f} ms; conflicts {sum(t.conflicts for t in labelers)}, "
          f"errors {sum(t.errors for t in labelers)}")
    print("verification:", verify(dataset_id, labelers))
    return dataset_id


def label_change_image_index(create: bool) -> str:
    """Deleting an image cascades to its cls_label_changes rows; without an index on their image_id
    Postgres scans the whole table once per deleted image (100k deletes after 100k label changes: ~30
    minutes). Says whether the schema has one; `create` adds it to this scratch database."""
    with get_engine().begin() as connection:
        found = connection.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'cls_label_changes' "
            "AND indexdef LIKE '%(image_id)%'")).scalar()
        if found:
            return f"schema has {found}"
        if not create:
            return "schema has NO index on cls_label_changes(image_id): deletes scan the table per image"
        connection.execute(text("CREATE INDEX bench_label_changes_image ON cls_label_changes (image_id)"))
        return "schema had no index on cls_label_changes(image_id): created bench_label_changes_image for this run"


def part_two(args) -> None:
    print(label_change_image_index(args.index_label_changes))
    t0 = time.perf_counter()
    ids = make_images(args.bulk_images, "bulk")
    print(f"inserted {args.bulk_images:,} library images in {time.perf_counter() - t0:.1f} s")
    watch_dataset, classes = build_dataset(min(args.images, 5000), name="watched")
    with session_scope() as session:
        bulk_dataset = create_dataset(actor=ADMIN, session=session, name="bulk").id
    # the bulk dataset gets a few thousand images of its own first, for a labeler working inside it
    inside = make_images(min(args.images, 5000), "inside")
    bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=bulk_dataset, image_ids=inside)
    stop = threading.Event()
    watchers = [Labeler(watch_dataset, classes, stop, seed=99), Labeler(bulk_dataset, classes, stop, seed=98)]
    for watcher in watchers:
        watcher.start()
    storage = get_storage()

    def timed(name: str, fn) -> None:
        started, before = time.perf_counter(), [len(w.latencies) for w in watchers]
        batches: list[tuple[int, float]] = []
        rows = fn(lambda done, total, message: batches.append((done, time.perf_counter())))
        # the first call (0 done) comes after the up-front checks, then one per batch; a batch's
        # wall time bounds how long it held the locks a labeler could wait on
        sizes = [b[0] - a[0] for a, b in zip(batches, batches[1:], strict=False)]
        slowest = max((b[1] - a[1] for a, b in zip(batches, batches[1:], strict=False)), default=0)
        during = [w.latencies[n:] for w, n in zip(watchers, before, strict=True)]
        print(f"{name}: {len(ids):,} images, {rows:,} changed, in {time.perf_counter() - started:.1f} s "
              f"({len(sizes)} batches, {min(sizes, default=0)}-{max(sizes, default=0)} images, slowest "
              f"{slowest * 1000:.0f} ms); labelers "
              + "; ".join(f"{w.dataset_id == bulk_dataset and 'same dataset' or 'same class'}: {len(d)} saves, "
                          f"worst {max(d, default=0) * 1000:.0f} ms, p95 {percentile(d, 0.95) * 1000:.0f} ms"
                          for w, d in zip(watchers, during, strict=True)))

    timed("tag", lambda p: bulk_actions.tag_images(actor=ADMIN, image_ids=ids, add=["bulk-tag"], progress=p))
    timed("add to dataset", lambda p: bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=bulk_dataset, image_ids=ids, progress=p))
    timed("set label", lambda p: bulk_actions.set_label(actor=ADMIN, dataset_id=bulk_dataset, image_ids=ids, class_id=classes[0],
                                                        progress=p))
    with session_scope() as session:
        doomed = matching_image_ids(session=session, filters=ImageFilters(tags=["bulk-tag"]))
    assert len(doomed) == len(ids), (len(doomed), len(ids))
    timed("delete by filter (tag)", lambda p: bulk_actions.delete_images(actor=ADMIN, image_ids=doomed, storage=storage,
                                                                         progress=p))
    stop.set()
    for watcher in watchers:
        watcher.join()
    everything = [x for w in watchers for x in w.latencies]
    print(f"labelers during all bulk operations: {len(everything)} saves, worst "
          f"{max(everything, default=0) * 1000:.0f} ms (target <= 1000 ms), p95 "
          f"{percentile(everything, 0.95) * 1000:.0f} ms, errors {sum(w.errors for w in watchers)}")
    with session_scope() as session:
        mismatches = count_mismatches(session=session)
        print("counts exact after bulk:", mismatches == [], mismatches[:5],
              "| images left:", session.scalar(select(func.count()).select_from(ClsImage)))


def main() -> None:
    parser = argparse.ArgumentParser(description="concurrent labelers and bulk operations")
    parser.add_argument("--labelers", type=int, default=10)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--bulk-images", type=int, default=100_000)
    parser.add_argument("--index-label-changes", action="store_true",
                        help="create the index on cls_label_changes(image_id) if the schema lacks it")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgresql"):
        sys.exit("set DATABASE_URL to a scratch Postgres database")
    print("load before:", os.popen("uptime").read().strip())
    empty_tables()
    part_one(args)
    if args.bulk_images:
        part_two(args)
    print("load after:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
