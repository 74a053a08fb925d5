"""A stored archive's import fanned out over the imports queue (core/jobs/fanout.py): the job reads the
archive's layout, creates the mapped classes and resolves conflicting copies once (the plan), then
each chunk imports a range of members. Each member's result (its image, added to the dataset, labels
written) is applied in the transaction that writes its cls_job_items row, so a chunk run again (its
worker died) skips the members already done and writes no label twice; the finisher counts the one
summary from those rows and deletes the archive.
"""

from __future__ import annotations

import functools
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.config import get_settings
from core.db import session_scope
from core.imports.archive import ClassMapping, fetch_archive, plan_archive_items
from core.imports.archive_conflicts import check_choice
from core.imports.batches import ImportItem, ImportSummary, load_dataset, run_items
from core.imports.safe_zip import SafeZip
from core.jobs.fanout import done_items, item_counts, record_items
from core.models import ClsImage
from core.permissions import requires
from core.storage import get_storage
from core.users import User

ERRORS_KEPT = 500


@requires("admin", "importing")
def plan_archive_import(*, actor: User, archive_key: str, dataset_id: str, class_mapping: list[dict],
                        skip_duplicates: bool = True, conflicts: str = "first") -> tuple[dict[str, Any], list[dict]]:
    """The plan (the summary so far: classes created, the archive's problems, conflicts) and the
    chunks' keyword arguments: `import_chunk_members` members each, with their labels and split."""
    check_choice(conflicts)
    mapping = [ClassMapping(**m) for m in class_mapping]
    summary = ImportSummary()
    with tempfile.TemporaryDirectory(prefix="archive-plan-") as workdir:
        path = fetch_archive(get_storage(), archive_key, Path(workdir))
        with SafeZip(path) as archive:
            dataset, planned = plan_archive_items(actor=actor, archive=archive, dataset_id=dataset_id,
                                                  mapping=mapping, conflicts=conflicts, summary=summary)
            same_bytes_key = {entry.name: (entry.info.CRC, entry.size) for entry in archive.entries}
    common = {"archive_key": archive_key, "dataset_id": str(dataset[0]), "skip_duplicates": skip_duplicates}
    chunks = [{**common, "members": members} for members in _split(planned, same_bytes_key,
                                                                     get_settings().import_chunk_members)]
    return {"summary": summary.as_dict(), "archive_key": archive_key, "members": len(planned)}, chunks


def _split(planned: list, same_bytes_key: dict[str, tuple], size: int) -> list[list[list]]:
    """Members in archive order, `size` a chunk, except that a member whose CRC-32 and size (the ZIP
    directory's, no byte read) match an earlier member's joins that member's chunk: copies of the same
    bytes are then deduplicated by one worker, never raced by two (each would store its own copy)."""
    chunks: list[list[list]] = []
    home: dict[tuple, int] = {}
    for item in planned:
        member = [item.entry, [str(c) for c in item.labels] if item.labels else None, item.split]
        key = same_bytes_key[item.entry]
        if key not in home:
            if not chunks or len(chunks[-1]) >= size:
                chunks.append([])
            home[key] = len(chunks) - 1
        chunks[home[key]].append(member)
    return chunks


def _recorder(job_id: uuid.UUID):
    """The on_placed hook: one cls_job_items row per member, in the batch's transaction. A member the
    job's dead attempt stored (its image names this job and this member) counts as imported, not as
    a duplicate of itself."""
    def record(session, applied) -> None:
        duplicates = [image_id for item, image_id, _added, _labels in applied if item.outcome == "duplicate"]
        metas = dict(session.execute(select(ClsImage.id, ClsImage.meta).where(ClsImage.id.in_(duplicates))).all()) \
            if duplicates else {}
        rows = []
        for item, image_id, added, labels in applied:
            meta = metas.get(image_id) or {}
            mine = meta.get("import_job") == str(job_id) and meta.get("archive_path") == item.name
            rows.append({"item_key": item.name, "image_id": image_id, "outcome": "imported" if mine else item.outcome,
                         "added": added, "labels": labels})
        record_items(session, job_id, rows)
    return record


@requires("admin", "importing")
def import_archive_chunk(*, actor: User, job_id, archive_key: str, dataset_id: str, members: list[list],
                         skip_duplicates: bool = True, progress=None) -> dict[str, Any]:
    """Import one range of the stored archive's members for the job `job_id`; members already done
    (an earlier run of this chunk) are skipped. Returns this run's per-file errors."""
    job_id = uuid.UUID(str(job_id))
    storage = get_storage()
    with session_scope() as session:
        dataset = load_dataset(session=session, dataset_id=dataset_id)
        done = done_items(session, job_id, [m[0] for m in members])
    todo = [m for m in members if m[0] not in done]
    summary = ImportSummary()
    with tempfile.TemporaryDirectory(prefix="archive-chunk-") as workdir:
        path = fetch_archive(storage, archive_key, Path(workdir))
        with SafeZip(path) as archive:
            entries = {entry.name: entry for entry in archive.entries}
            items = [ImportItem(name=entry, load=functools.partial(archive.read, entries[entry]),
                                labels=[uuid.UUID(c) for c in labels] if labels else None, split=split,
                                meta={"archive_path": entry, "import_job": str(job_id)})
                     for entry, labels, split in todo]
            report = None if progress is None else (
                lambda n, _total, message=None: progress(len(done) + n, len(members), message))
            run_items(items, actor=actor, total=len(items), source="dataset_import", summary=summary, dataset=dataset,
                      skip_duplicates=skip_duplicates, storage=storage, progress=report, on_placed=_recorder(job_id))
    return {"errors": summary.errors[:ERRORS_KEPT], "error_count": len(summary.errors), "members": len(members),
            "skipped_as_done": len(done)}


@requires("admin", "importing")
def finish_archive_import(*, actor: User, job_id, plan: dict[str, Any], chunk_results: list[dict]) -> dict[str, Any]:
    """The import's one summary: counts from the cls_job_items rows, the plan's classes and problems,
    every chunk's errors. The stored archive is deleted."""
    job_id = uuid.UUID(str(job_id))
    with session_scope() as session:
        counts = item_counts(session, job_id)
    summary = dict(plan["summary"])
    errors = list(summary.get("errors", [])) + [e for chunk in chunk_results for e in chunk.get("errors", [])]
    total = lambda field: sum(entry[field] for entry in counts.values())  # noqa: E731
    summary.update({
        "images_imported": counts.get("imported", {}).get("items", 0),
        "duplicates_skipped": counts.get("duplicate", {}).get("items", 0),
        "already_imported": counts.get("already", {}).get("items", 0),
        "images_added_to_dataset": total("added"), "labels_written": total("labels"),
        "error_count": summary.get("error_count", 0) + sum(chunk.get("error_count", 0) for chunk in chunk_results),
        "errors": errors[:ERRORS_KEPT], "parts": len(chunk_results),
    })
    get_storage().delete(plan["archive_key"])
    return summary
