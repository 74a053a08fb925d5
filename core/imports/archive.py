"""Labeled dataset import from a ZIP: preview (format, classes, splits, problems), the user's class
mapping (existing class, new class with color, or skip), and the import itself, run as a job.

The uploaded archive is kept in storage under `imports/<uuid>.zip` until its job ends, so an RQ
worker on another machine can read it; the job deletes it whatever the outcome.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import func, select

from core.datasets.classes import get_or_create_class
from core.datasets.label_space import _fill_from_import
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.ids import as_uuid
from core.imports.archive_conflicts import check_choice, describe, find_label_conflicts, resolved_labels
from core.imports.batches import ImportItem, ImportSummary, load_dataset, run_items
from core.imports.layouts import FORMAT_LABELS, ArchiveLayout, class_name_problem, detect_layout
from core.imports.safe_zip import SafeZip
from core.jobs.queue import enqueue
from core.models import ClsClass, ClsJob
from core.permissions import requires
from core.storage import get_storage
from core.users import User

NEW_CLASS_COLORS = ("#3B82F6", "#EF4444", "#10B981", "#F59E0B", "#8B5CF6", "#EC4899", "#14B8A6", "#F97316",
                    "#6366F1", "#84CC16")
ARCHIVE_PREFIX = "imports"


class ClassMapping(BaseModel):
    """Where one source class goes: an existing class, a new class, or nowhere (its images are skipped)."""

    source_name: str
    target_class_id: str | None = None
    create_new: bool = False
    color: str | None = Field(default=None, pattern=r"^#[0-9A-Fa-f]{6}$")
    skip: bool = False
    # Beyond the plan: a new class may be named differently from the source folder (e.g. when the
    # source name is refused as HTML or too long).
    new_name: str | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> ClassMapping:
        if sum((self.target_class_id is not None, self.create_new, self.skip)) != 1:
            raise ValueError(f"class {self.source_name!r}: choose exactly one of an existing class, "
                             "a new class, or skip")
        return self


class ImportLabeledDatasetRequest(BaseModel):
    """Import a labeled dataset from a ZIP into a dataset."""

    dataset_id: str
    class_mapping: list[ClassMapping] = Field(default_factory=list)
    skip_duplicates: bool = True
    # The same bytes under different classes (single-label): the first copy's class, or no label.
    conflicts: Literal["first", "skip"] = "first"


def read_layout(archive: SafeZip) -> ArchiveLayout:
    entries = {entry.name: entry for entry in archive.entries}
    return detect_layout(list(entries), lambda name: archive.read(entries[name]))


def preview_archive(source: str | Path | IO[bytes], *, session=None) -> dict[str, Any]:
    """What an import of this archive would do: format, classes with counts, splits, problems, the
    same images under different classes (source class names, before any mapping), and the default
    mapping (same-named existing class, else a new class; refused names are skipped)."""
    with SafeZip(source) as archive:
        layout = read_layout(archive)
        problems = [p.as_dict() for p in archive.problems] + layout.problems
        class_names = {item.entry: item.labels for item in layout.items}
        conflicts = find_label_conflicts(archive, {entry: frozenset(labels) for entry, labels in class_names.items()
                                                   if labels})
    counts = layout.class_counts()
    existing = _existing_classes(session, list(counts)) if session is not None else {}
    classes = []
    for index, (name, count) in enumerate(sorted(counts.items(), key=lambda kv: kv[0].lower())):
        match = existing.get(name.casefold())
        classes.append({
            "name": name, "image_count": count, "problem": class_name_problem(name),
            "existing_class_id": str(match[0]) if match else None,
            "existing_class_name": match[1] if match else None,
            "color": NEW_CLASS_COLORS[index % len(NEW_CLASS_COLORS)],
        })
    return {
        "format": layout.format, "format_label": FORMAT_LABELS[layout.format],
        "image_count": len(layout.items),
        "unlabeled_count": sum(1 for item in layout.items if not item.labels),
        "multi_label": layout.multi_label, "classes": classes, "splits": layout.split_counts(),
        "problems": problems,
        "label_conflict_count": len(conflicts),
        "label_conflicts": [describe(conflict, class_names) for conflict in conflicts[:500]],
        "default_mapping": [m.model_dump() for m in default_mapping(classes)],
    }


def default_mapping(classes: list[dict[str, Any]]) -> list[ClassMapping]:
    mapping = []
    for cls in classes:
        if cls["existing_class_id"]:
            mapping.append(ClassMapping(source_name=cls["name"], target_class_id=cls["existing_class_id"]))
        elif cls["problem"]:
            mapping.append(ClassMapping(source_name=cls["name"], skip=True))
        else:
            mapping.append(ClassMapping(source_name=cls["name"], create_new=True, color=cls["color"]))
    return mapping


def _existing_classes(session, names: list[str]) -> dict[str, tuple[uuid.UUID, str]]:
    folded = {name.casefold() for name in names}
    if not folded:
        return {}
    rows = session.execute(select(ClsClass.id, ClsClass.name).where(func.lower(ClsClass.name).in_(
        [n.lower() for n in names])))
    return {name.casefold(): (class_id, name) for class_id, name in rows if name.casefold() in folded}


@requires("admin", "importing")
def resolve_mapping(*, session, actor: User, mapping: list[ClassMapping], source_names: list[str],
                    summary: ImportSummary) -> dict[str, uuid.UUID | None]:
    """Source class name → class id (None = skip), creating the new classes the mapping asks for."""
    given = {m.source_name: m for m in mapping}
    classes = [{"name": n, "problem": class_name_problem(n), "color": NEW_CLASS_COLORS[i % len(NEW_CLASS_COLORS)],
                "existing_class_id": None} for i, n in enumerate(sorted(source_names, key=str.lower))]
    existing = _existing_classes(session, source_names)
    for cls in classes:
        match = existing.get(cls["name"].casefold())
        cls["existing_class_id"] = str(match[0]) if match else None
    defaults = {m.source_name: m for m in default_mapping(classes)}
    resolved: dict[str, uuid.UUID | None] = {}
    for cls in classes:
        name = cls["name"]
        choice = given.get(name) or defaults[name]
        if choice.skip:
            if name not in given and cls["problem"]:
                summary.error(name, f"{cls['problem']}; its images were skipped")
            resolved[name] = None
        elif choice.target_class_id:
            target = session.get(ClsClass, as_uuid(choice.target_class_id, f"class mapping for {name!r}:"))
            if target is None:
                raise NotFound(f"class mapping for {name!r}: no class {choice.target_class_id}")
            resolved[name] = target.id
        else:
            new_name = (choice.new_name or name).strip()
            problem = class_name_problem(new_name)
            if problem:
                raise InvalidInput(f"class mapping for {name[:80]!r}: {problem}")
            existed = session.scalar(select(ClsClass.id).where(ClsClass.name == new_name))
            row = get_or_create_class(session=session, actor=actor, name=new_name, color=choice.color or cls["color"])
            if existed is None:
                summary.classes_created.append(new_name)
            resolved[name] = row.id
    return resolved



@dataclass
class PlannedItem:
    """One archive member to import: its entry name, mapped labels (None: unlabeled) and split."""

    entry: str
    labels: list[uuid.UUID] | None
    split: str | None


@requires("admin", "importing")
def plan_archive_items(*, actor: User, archive: SafeZip, dataset_id, mapping: list[ClassMapping], conflicts: str,
                       summary: ImportSummary) -> tuple[tuple[uuid.UUID, str], list[PlannedItem]]:
    """Read the archive's layout, create the classes the mapping asks for, resolve conflicting copies:
    the dataset and what to import of each member (the archive's problems go into `summary`)."""
    layout = read_layout(archive)
    summary.errors += [p.as_dict() for p in archive.problems] + layout.problems
    with session_scope() as session:
        dataset = load_dataset(session=session, dataset_id=dataset_id)
        if dataset is None:
            raise InvalidInput("choose the dataset to import into")
        class_ids = resolve_mapping(session=session, actor=actor, mapping=mapping,
                                    source_names=list(layout.class_counts()), summary=summary)
        _fill_from_import(session, dataset[0], [class_ids[name] for name in sorted(class_ids, key=str.lower)
                                               if class_ids[name]], user_id=actor.id)
    mapped = {item.entry: frozenset(class_ids[label] for label in item.labels if class_ids.get(label))
              for item in layout.items}
    mapped = {entry: labels for entry, labels in mapped.items() if labels}
    found = find_label_conflicts(archive, mapped)
    resolved = resolved_labels(found, mapped, choice=conflicts, multi_label=dataset[1] == "multi_label")
    items, skipped = [], 0
    for source_item in layout.items:
        labels = [class_ids[label] for label in source_item.labels if class_ids.get(label)]
        if source_item.labels and not labels:
            skipped += 1
            continue
        if source_item.entry in resolved:
            labels = sorted(resolved[source_item.entry] or (), key=str)
        items.append(PlannedItem(source_item.entry, labels or None, source_item.split))
    summary.extra = {"format": layout.format, "skipped_by_mapping": skipped,
                     **_conflict_summary(found, layout, class_ids, conflicts, dataset[1] == "multi_label")}
    return dataset, items


@requires("admin", "importing")
def run_archive_import(*, actor: User, source: str | Path | IO[bytes], dataset_id: str | uuid.UUID,
                       class_mapping: list[ClassMapping] | list[dict] = (), skip_duplicates: bool = True,
                       conflicts: str = "first", progress=None, storage=None) -> dict[str, Any]:
    """Import every usable image of the archive into the dataset with its mapped labels and split.
    The same bytes under different (mapped) classes are resolved by `conflicts` (core/archive_conflicts.py)
    and listed in the summary's `label_conflicts`. In this process; the import job fans out
    (core/imports/archive_chunks.py)."""
    check_choice(conflicts)
    mapping = [m if isinstance(m, ClassMapping) else ClassMapping(**m) for m in class_mapping]
    summary = ImportSummary()
    with SafeZip(source) as archive:
        dataset, planned = plan_archive_items(actor=actor, archive=archive, dataset_id=dataset_id, mapping=mapping,
                                              conflicts=conflicts, summary=summary)
        entries = {entry.name: entry for entry in archive.entries}
        items = [ImportItem(name=p.entry, load=functools.partial(archive.read, entries[p.entry]), labels=p.labels,
                            split=p.split, meta={"archive_path": p.entry}) for p in planned]
        run_items(items, actor=actor, total=len(items), source="dataset_import", summary=summary, dataset=dataset,
                  skip_duplicates=skip_duplicates, storage=storage, progress=progress)
    return summary.as_dict()


def _conflict_summary(found: list, layout: ArchiveLayout, class_ids: dict, choice: str, multi_label: bool) -> dict:
    """`label_conflicts` (files, their source classes, what they were labeled as) for a single-label
    dataset; a multi-label one merges them, counted in `labels_merged`."""
    if multi_label:
        return {"conflicts": choice, "label_conflict_count": 0, "label_conflicts": [], "labels_merged": len(found)}
    names = {item.entry: tuple(label for label in item.labels if class_ids.get(label)) for item in layout.items}
    listed = [describe(conflict, names, labeled=names[conflict.entries[0]] if choice == "first" else ())
              for conflict in found[:500]]
    return {"conflicts": choice, "label_conflict_count": len(found), "label_conflicts": listed, "labels_merged": 0}


def check_mapping(mapping: list[ClassMapping]) -> None:
    """Refuse a mapping that would create a class under an unusable name (before anything is written)."""
    for choice in mapping:
        problem = choice.create_new and class_name_problem((choice.new_name or choice.source_name).strip())
        if problem:
            raise InvalidInput(f"new class for {choice.source_name[:80]!r}: {problem}")


@requires("admin", "importing")
def start_archive_import(*, actor: User, source: str | Path | IO[bytes], request: ImportLabeledDatasetRequest,
                         storage=None) -> uuid.UUID:
    """Check the archive, keep it in storage for the worker, and queue the import job."""
    with SafeZip(source):  # refuse a non-ZIP, a bomb or an encrypted archive before queueing
        pass
    check_mapping(request.class_mapping)
    with session_scope() as session:
        load_dataset(session=session, dataset_id=request.dataset_id)
    storage = storage or get_storage()
    remove_orphan_archives(actor=actor, storage=storage)
    stored: list[str] = []

    def keep_archive(session, job) -> None:
        # Named after its job, so an archive whose job never ran (cancelled while queued) is found.
        key = f"{ARCHIVE_PREFIX}/{job.id}.zip"
        if isinstance(source, str | Path):
            storage.put_file(key, source, "application/zip")
        else:
            source.seek(0)
            storage.put(key, source.read(), "application/zip")
        stored.append(key)
        job.params = {**job.params, "archive_key": key}

    try:
        return enqueue(actor=actor, kind="dataset_import", params=request.model_dump(), on_created=keep_archive)
    except BaseException:
        for key in stored:
            storage.delete(key)
        raise


@requires("admin", "importing")
def remove_orphan_archives(*, actor: User, storage) -> int:
    """Delete stored archives whose job is over (a job cancelled before it ran never deletes its own).
    An archive without a job row is left alone: its job may not be committed yet."""
    removed = 0
    with session_scope() as session:
        for key in list(storage.list_keys(f"{ARCHIVE_PREFIX}/")):
            try:
                job_id = uuid.UUID(key.rsplit("/", 1)[-1].removesuffix(".zip"))
            except ValueError:
                continue
            job = session.get(ClsJob, job_id)
            if job is not None and job.status not in ("queued", "running"):
                storage.delete(key)
                removed += 1
    return removed


def fetch_archive(storage, key: str, workdir: Path) -> Path:
    """A local file for the stored archive (zipfile needs to seek; S3 bodies cannot)."""
    local = storage.local_path(key)
    if local is not None:
        if not local.is_file():
            raise NotFound(f"the uploaded archive {key} is gone")
        return local
    target = workdir / "archive.zip"
    with storage.open(key) as body, target.open("wb") as out:
        shutil.copyfileobj(body, out, 1024 * 1024)
    return target


@requires("admin", "importing")
def run_stored_archive_import(*, actor: User, archive_key: str, progress=None, **params) -> dict[str, Any]:
    """The job body: import the stored archive as the actor who queued it, then delete the archive
    whatever the outcome. A refused actor never gets here; the job's failure hook deletes it then."""
    storage = get_storage()
    try:
        with tempfile.TemporaryDirectory(prefix="archive-import-") as workdir:
            path = fetch_archive(storage, archive_key, Path(workdir))
            return run_archive_import(actor=actor, source=path, progress=progress, storage=storage, **params)
    finally:
        storage.delete(archive_key)
