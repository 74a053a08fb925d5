"""The loop every labeled import shares (archives, products, cutouts, OD images): ingest items in
small transactions, add them to the target dataset with their split, write their labels, count.

Duplicates (same SHA-256) and rows already imported from the same source row are not stored again,
but their existing image is still added to the dataset and labeled there, so re-running an import
adds nothing new and still completes a dataset that was missing some images. Labels are written only
when they differ from the image's current labels, so a re-run reports zero labels written.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.datasets.dataset import add_images_to_dataset
from core.db import session_scope
from core.errors import NotFound, UserError
from core.labeling.bulk_labels import set_label_batch
from core.library.ingest import ingest_many
from core.models import ClsDataset, ClsDatasetImage, ClsLabel
from core.permissions import requires
from core.storage import get_storage
from core.users import User

# One transaction per batch: a crash loses at most this many rows' work (a re-run redoes it), and the
# label service locks and recounts once per label set per batch, so bigger batches label faster.
BATCH_SIZE = 256
CHUNK_SIZE = 1000  # items per ingest_many call (each starts a process pool, so not too small)
Progress = Callable[..., None]


@dataclass
class ImportItem:
    name: str  # shown in per-file errors
    load: Callable[[], bytes]
    labels: list[uuid.UUID] | None = None  # None: leave the image's labels alone
    split: str | None = None
    source_type: str | None = None
    source_id: uuid.UUID | None = None
    existing_image_id: uuid.UUID | None = None  # already imported from this source row
    meta: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None  # set by the ingest: imported, duplicate, already

    @property
    def filename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class ImportSummary:
    images_imported: int = 0
    duplicates_skipped: int = 0
    already_imported: int = 0
    images_added_to_dataset: int = 0
    labels_written: int = 0
    classes_created: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, name: str, message: str) -> None:
        self.errors.append({"file": name, "error": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "images_imported": self.images_imported,
            "duplicates_skipped": self.duplicates_skipped,
            "already_imported": self.already_imported,
            "images_added_to_dataset": self.images_added_to_dataset,
            "labels_written": self.labels_written,
            "classes_created": self.classes_created,
            "error_count": len(self.errors),
            "errors": self.errors[:500],
            **self.extra,
        }


def load_dataset(*, session, dataset_id: uuid.UUID | str | None) -> tuple[uuid.UUID, str] | None:
    if dataset_id in (None, ""):
        return None
    try:
        dataset_uuid = uuid.UUID(str(dataset_id))
    except ValueError:
        raise NotFound(f"no dataset {dataset_id!r}") from None
    dataset = session.get(ClsDataset, dataset_uuid)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset.id, dataset.task_type


def _batches(items: Iterable[ImportItem], size: int) -> Iterator[list[ImportItem]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@requires("admin", "importing")
def run_items(items: Iterable[ImportItem], *, actor: User, total: int, source: str, summary: ImportSummary,
              dataset: tuple[uuid.UUID, str] | None = None, skip_duplicates: bool = True, storage=None, folder: str | None = None,
              progress: Progress | None = None, on_placed: Callable | None = None) -> ImportSummary:
    """Ingest through the image library's `ingest_many` (decoding on every core, storing in threads,
    a commit per batch), one chunk at a time; then add the chunk's images to the dataset and label
    them, one transaction per batch. Items are spooled to temporary files first, so the ingest
    window holds paths, not bytes: memory stays flat whatever the archive or image sizes.
    `on_placed(session, [(item, image_id, added, labels written)])` runs in each batch's transaction
    (a fanned-out import records there what it applied, core/imports/archive_chunks.py)."""
    storage = storage or get_storage()
    done = 0
    with tempfile.TemporaryDirectory(prefix="import-") as spool:
        for chunk in _batches(items, CHUNK_SIZE):
            placed = _ingest_chunk(chunk, actor=actor, spool=Path(spool), storage=storage, source=source,
                                   summary=summary, skip_duplicates=skip_duplicates, folder=folder,
                                   report=lambda n, base=done: _report(progress, base + n, total, summary))
            if dataset is not None:
                for batch in _batches(placed, BATCH_SIZE):
                    with session_scope() as session:
                        applied = _place_in_dataset(session, dataset, batch, actor, summary)
                        if on_placed is not None:
                            on_placed(session, [(item, image_id, *counts)
                                                for (item, image_id), counts in zip(batch, applied, strict=True)])
            done += len(chunk)
            # After the commits, never inside one: the job row update is another transaction, and
            # SQLite has one writer.
            _report(progress, done, total, summary)
    return summary


def _ingest_chunk(chunk: list[ImportItem], *, actor: User, spool: Path, storage, source: str, summary: ImportSummary,
                  skip_duplicates: bool, folder: str | None, report) -> list[tuple[ImportItem, uuid.UUID]]:
    placed = [(item, item.existing_image_id) for item in chunk if item.existing_image_id is not None]
    summary.already_imported += len(placed)
    for item, _ in placed:
        item.outcome = "already"
    loaded: list[ImportItem] = []

    def payloads():
        for index, item in enumerate(chunk):
            if item.existing_image_id is not None:
                continue
            try:
                data = item.load()
            except UserError as exc:
                summary.error(item.name, str(exc))
                continue
            path = spool / f"{index:06d}.bin"  # our own name: entry names never touch the disk
            path.write_bytes(data)
            loaded.append(item)
            yield {"filename": item.filename, "path": str(path), "source_type": item.source_type,
                   "source_id": item.source_id, "meta": item.meta or None}

    try:
        # A short chunk as a list: ingest_many then decodes inline instead of starting a process pool.
        work = list(payloads()) if len(chunk) < 16 else payloads()
        results = ingest_many(items=work, actor=actor, storage=storage, source=source, folder=folder,
                              skip_duplicates=skip_duplicates, progress=lambda n, _total: report(n))
    finally:
        for path in spool.iterdir():
            path.unlink(missing_ok=True)
    for item, result in zip(loaded, results, strict=True):
        if result.status == "rejected":
            summary.error(item.name, result.error or "rejected")
        elif result.status == "duplicate":
            summary.duplicates_skipped += 1
            item.outcome = "duplicate"
            placed.append((item, result.duplicate_of))
        else:
            summary.images_imported += 1
            item.outcome = "imported"
            placed.append((item, result.image_id))
    return placed


def _report(progress: Progress | None, done: int, total: int, summary: ImportSummary) -> None:
    if progress is not None:
        progress(done, total, f"{summary.images_imported} imported, {summary.duplicates_skipped} duplicates, "
                              f"{len(summary.errors)} errors")


def _place_in_dataset(session, dataset: tuple[uuid.UUID, str], placed: list[tuple[ImportItem, uuid.UUID]],
                      actor: User, summary: ImportSummary) -> list[tuple[int, int]]:
    """Add the batch's images to the dataset and label them; per item, (added to the dataset: 0/1,
    labels written)."""
    dataset_id, task_type = dataset
    image_ids = list(dict.fromkeys(image_id for _, image_id in placed))
    present = set(session.scalars(select(ClsDatasetImage.image_id).where(
        ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(image_ids))))
    by_split: dict[str | None, list[uuid.UUID]] = {}
    applied = [[0, 0] for _ in placed]
    for index, (item, image_id) in enumerate(placed):
        if image_id not in present:
            present.add(image_id)
            by_split.setdefault(item.split, []).append(image_id)
            applied[index][0] = 1
    for split, ids in by_split.items():
        summary.images_added_to_dataset += add_images_to_dataset(
            session=session, actor=actor, dataset_id=dataset_id, image_ids=ids, split=split)
    current: dict[uuid.UUID, set[uuid.UUID]] = {}
    for image_id, class_id in session.execute(select(ClsLabel.image_id, ClsLabel.class_id).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.image_id.in_(image_ids))):
        current.setdefault(image_id, set()).add(class_id)
    groups: dict[frozenset, list[uuid.UUID]] = {}
    for index, (item, image_id) in enumerate(placed):
        if not item.labels:
            continue
        if task_type == "single_label" and len(item.labels) > 1:
            summary.error(item.name, f"has {len(item.labels)} labels but the dataset is single-label; "
                                     "added without labels")
            continue
        wanted = frozenset(item.labels)
        if current.get(image_id, set()) != wanted:
            current[image_id] = set(wanted)
            groups.setdefault(wanted, []).append(image_id)
            applied[index][1] = len(wanted)
    # One bulk call per distinct label set (not one set_labels per image): the label service
    # then locks and recounts once per batch. The import's job records it (no audit row per batch).
    for label_set, ids in groups.items():
        first, *others = sorted(label_set, key=str)
        set_label_batch(session=session, actor=actor, dataset_id=dataset_id, image_ids=ids, class_id=first,
                        mode="replace")
        for class_id in others:
            set_label_batch(session=session, actor=actor, dataset_id=dataset_id, image_ids=ids, class_id=class_id,
                            mode="add")
        summary.labels_written += len(ids) * len(label_set)
    return [(added, labels) for added, labels in applied]
