"""Dataset export as a ZIP, from the current labels or from a version, in three layouts:

- `imagefolder`: `train/<class>/<file>`, `val/…`, `test/…` (or `<class>/<file>` when no image has a
  split); single-label images only, as a file can sit in one class folder.
- `csv`: `<split>/labels.csv` with `filename,label,split` next to the split's images; single-label.
- `multilabel-csv`: `<split>/_classes.csv` with `filename` and one 0/1 column per class (Roboflow's
  layout), next to the split's images.

Each split's files sit in a folder named after it, so the archive import (core.imports.archive) reads
the split back from the folder; images without a split sit at the top level (CSV layouts). Only
labeled images are exported; the classes (CSV columns, `class_names`) are the dataset's label space
in its order, or a version's frozen mapping. CSV cells are formula-safe (core.safe_csv). Original bytes are copied unchanged; entries carry a fixed timestamp, so
the same state exports to the same bytes. A ZIP is written to a local file first and stored as
`exports/<job id>.zip` in one put (never half-written).
"""

from __future__ import annotations

import io
import re
import shutil
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import safe_csv
from core.datasets.label_space import space_class_ids
from core.datasets.split_facts import dataset_image_facts, get_dataset
from core.datasets.versions import get_version, read_manifest
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.jobs.queue import enqueue
from core.models import ClsClass, ClsJob
from core.permissions import require, requires
from core.storage import get_storage
from core.users import User
from core.vocabulary import TRAINING_SPLITS

EXPORT_FORMATS = ("imagefolder", "csv", "multilabel-csv")
EXPORT_KIND = "dataset_export"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: the same state gives the same bytes
UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ExportItem:
    image_id: str
    key: str  # storage key of the original bytes
    filename: str  # original filename
    labels: list[str]  # class names
    split: str  # train / val / test / unassigned
    arcname: str = ""


@dataclass
class ExportPlan:
    dataset_name: str
    fmt: str
    version_number: int | None
    class_names: list[str]
    items: list[ExportItem]
    csv_files: dict[str, str] = field(default_factory=dict)  # arcname → CSV text

    @property
    def download_name(self) -> str:
        stem = UNSAFE_CHARS.sub("_", self.dataset_name).strip("._") or "dataset"
        state = f"v{self.version_number}" if self.version_number else "current"
        return f"{stem}-{state}-{self.fmt}.zip"


def _check_format(fmt: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")


def folder_name(class_name: str) -> str:
    """A class name as one safe path segment (slashes would nest folders; a leading dot hides it)."""
    name = class_name.replace("/", "_").replace("\\", "_").strip()
    return f"_{name}" if name.startswith(".") or not name else name


def file_name(item: ExportItem) -> str:
    """`<original stem>_<image id>.<ext>`: readable, unique, and a safe entry name whatever the
    original filename was."""
    suffix = PurePosixPath(item.key).suffix.lower()
    stem = UNSAFE_CHARS.sub("_", PurePosixPath(item.filename or "image").stem).strip("._")[:60] or "image"
    return f"{stem}_{item.image_id.replace('-', '')[:12]}{suffix}"


def _items_from_version(session: Session, storage, dataset_id: uuid.UUID, number: int):
    version = get_version(session=session, dataset_id=dataset_id, number=number)
    names = list(version.class_names)
    items = [ExportItem(image_id=line["image_id"], key=line["key"], filename=line["filename"],
                        labels=[names[i] for i in line["labels"]], split=line["split"])
             for line in read_manifest(storage=storage, version=version)]
    return names, items


def _items_from_current(session: Session, dataset_id: uuid.UUID):
    """The current labels; the classes are the dataset's label space in its order (every class a label
    uses is in it), so a class with no image yet still gets its CSV column."""
    names = dict(session.execute(select(ClsClass.id, ClsClass.name)).tuples().all())
    order = space_class_ids(session, dataset_id)
    rank = {class_id: index for index, class_id in enumerate(order)}
    items = [ExportItem(image_id=str(f.image_id), key=f.storage_path, filename=f.original_filename or f.filename,
                        labels=[names[c] for c in sorted(f.class_ids, key=lambda c: (rank.get(c, len(rank)), names[c]))],
                        split=f.split)
             for f in dataset_image_facts(session, dataset_id) if f.class_ids]
    space = [names[c] for c in order]
    return space + sorted({label for item in items for label in item.labels} - set(space)), items


def collect_export(*, session: Session, storage, dataset_id: uuid.UUID, fmt: str,
                   version_number: int | None = None) -> ExportPlan:
    """Decide every entry of the export (and refuse what the layout cannot hold) before any byte is copied."""
    _check_format(fmt)
    dataset = get_dataset(session, dataset_id)
    if version_number is not None:
        class_names, items = _items_from_version(session, storage, dataset_id, version_number)
    else:
        class_names, items = _items_from_current(session, dataset_id)
    if not items:
        raise InvalidInput(f"dataset {dataset.name!r} has no labeled images to export")
    if fmt in ("imagefolder", "csv"):
        several = [item.image_id for item in items if len(item.labels) > 1]
        if several:
            raise InvalidInput(f"{len(several)} image(s) have several labels (e.g. {several[0]}); the {fmt} layout "
                               "holds one label per image: export as multilabel-csv")
    if fmt == "imagefolder":
        unsplit = sum(1 for item in items if item.split not in TRAINING_SPLITS)
        if 0 < unsplit < len(items):
            raise InvalidInput(f"{unsplit} of {len(items)} labeled images have no split; the folder layout needs "
                               "every image in a split or none: run split, or export a version")
        folders = defaultdict(set)
        for name in {label for item in items for label in item.labels}:
            folders[folder_name(name)].add(name)
        clashing = [sorted(names) for names in folders.values() if len(names) > 1]
        if clashing:
            raise InvalidInput(f"classes {clashing[0]} would share one folder; rename one or export as csv")
    plan = ExportPlan(dataset_name=dataset.name, fmt=fmt, version_number=version_number,
                      class_names=class_names, items=items)
    _lay_out(plan)
    return plan


def _lay_out(plan: ExportPlan) -> None:
    by_folder: dict[str, list[ExportItem]] = defaultdict(list)
    for item in sorted(plan.items, key=lambda i: (i.split, i.labels, i.image_id)):
        prefix = f"{item.split}/" if item.split in TRAINING_SPLITS else ""
        if plan.fmt == "imagefolder":
            item.arcname = f"{prefix}{folder_name(item.labels[0])}/{file_name(item)}"
        else:
            item.arcname = f"{prefix}{file_name(item)}"
        by_folder[prefix].append(item)
    if plan.fmt == "imagefolder":
        return
    # The CSVs name each file as its entry does (the arcname after the split folder): file_name once
    # per item, its two PurePosixPaths were a third of planning 100,000 items (bench/bench_scale.py).
    for prefix, items in sorted(by_folder.items()):
        buffer = io.StringIO()
        writer = safe_csv.writer(buffer, lineterminator="\n")
        if plan.fmt == "csv":
            writer.writerow(["filename", "label", "split"])
            writer.writerows([i.arcname[len(prefix):], i.labels[0], i.split] for i in items)
            plan.csv_files[f"{prefix}labels.csv"] = buffer.getvalue()
        else:
            writer.writerow(["filename", *plan.class_names])
            writer.writerows([i.arcname[len(prefix):], *(int(n in i.labels) for n in plan.class_names)] for i in items)
            plan.csv_files[f"{prefix}_classes.csv"] = buffer.getvalue()


def combined_csv(plan: ExportPlan) -> str:
    """One CSV for the whole export (the CLI's `--out FILE.csv`): filenames are paths in the ZIP."""
    buffer = io.StringIO()
    writer = safe_csv.writer(buffer, lineterminator="\n")
    if plan.fmt == "multilabel-csv":
        writer.writerow(["filename", *plan.class_names, "split"])
        writer.writerows([i.arcname, *(int(n in i.labels) for n in plan.class_names), i.split] for i in plan.items)
    else:
        writer.writerow(["filename", "label", "split"])
        writer.writerows([i.arcname, i.labels[0], i.split] for i in plan.items)
    return buffer.getvalue()


def write_zip(plan: ExportPlan, *, storage, target: str | Path, progress=None) -> dict[str, Any]:
    """Copy every image (streamed, stored uncompressed: they are compressed already) and the CSVs."""
    with zipfile.ZipFile(target, "w") as archive:
        for arcname, text in sorted(plan.csv_files.items()):
            info = zipfile.ZipInfo(arcname, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode())
        for done, item in enumerate(plan.items, start=1):
            info = zipfile.ZipInfo(item.arcname, ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            try:
                source = storage.open(item.key)
            except NotFound:
                raise NotFound(f"image {item.image_id} ({item.key}) is no longer in storage; the export "
                               "stopped (a version keeps labels, not the image files)") from None
            with source, archive.open(info, "w", force_zip64=True) as entry:
                shutil.copyfileobj(source, entry, 1024 * 1024)
            if progress is not None:
                progress(done, len(plan.items), f"{done}/{len(plan.items)} images")
    splits = defaultdict(int)
    for item in plan.items:
        splits[item.split] += 1
    return {"format": plan.fmt, "version_number": plan.version_number, "images": len(plan.items),
            "classes": len(plan.class_names), "splits": dict(splits), "filename": plan.download_name,
            "bytes": Path(target).stat().st_size}


@requires("admin", "exporting a dataset")
def start_export(*, actor: User, dataset_id: uuid.UUID, fmt: str, version_number: int | None = None) -> uuid.UUID:
    """Check the export can be made, then queue it (queue "imports"); returns the job id."""
    with session_scope() as session:
        collect_export(session=session, storage=get_storage(), dataset_id=dataset_id, fmt=fmt,
                       version_number=version_number)
    return enqueue(actor=actor, kind=EXPORT_KIND,
                   params={"dataset_id": str(dataset_id), "fmt": fmt, "version_number": version_number})


@requires("admin", "exporting a dataset")
def run_export(*, actor: User, job_id: uuid.UUID, dataset_id: uuid.UUID, fmt: str,
               version_number: int | None = None, progress=None) -> dict[str, Any]:
    """The export job's body: plan the export, write the ZIP locally, store it as exports/<job id>.zip
    in one put (the role is checked again before that put)."""
    import tempfile

    storage = get_storage()
    with session_scope() as session:
        plan = collect_export(session=session, storage=storage, dataset_id=dataset_id, fmt=fmt,
                              version_number=version_number)
    if progress is not None:
        progress(0, len(plan.items), "writing the archive", force=True)
    key = export_key(job_id)
    with tempfile.TemporaryDirectory(prefix="export-") as workdir:
        path = Path(workdir) / "export.zip"
        summary = write_zip(plan, storage=storage, target=path, progress=progress)
        require(actor, "admin", "exporting a dataset")
        storage.put_file(key, path, "application/zip")
    return {**summary, "key": key}


def export_key(job_id: uuid.UUID) -> str:
    return f"exports/{job_id}.zip"


def list_exports(*, session: Session, dataset_id: uuid.UUID, limit: int = 10) -> list[ClsJob]:
    """The dataset's recent export jobs, newest first."""
    jobs = session.scalars(select(ClsJob).where(ClsJob.kind == EXPORT_KIND)
                           .order_by(ClsJob.created_at.desc()).limit(200))
    return [job for job in jobs if (job.params or {}).get("dataset_id") == str(dataset_id)][:limit]
