"""Reconcile storage with the database: objects no row points at (orphans, e.g. left by a crash
between upload and insert) and rows whose object is missing (e.g. an S3 error after the insert).

`python -m core storage check [--fix]` reports both; `--fix` deletes orphan objects older than a grace
period (a running import may have put an object whose row is not committed yet). Rows with missing
objects are reported, never deleted silently: they name images a person must re-import or remove.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ClsDatasetVersion, ClsImage, ClsTrainedModel, ClsTrainingRun
from core.permissions import requires
from core.users import User

# Prefixes whose every object must belong to a row; others (platform/, exports/, cache) are not ours
# to judge.
OWNED_PREFIXES = ("images/", "thumbs/", "versions/", "models/")
ORPHAN_GRACE = timedelta(hours=1)


def _referenced_keys(session: Session) -> tuple[set[str], dict[str, str]]:
    """Keys rows point at, and for each required key the row that needs it."""
    referenced: set[str] = set()
    required: dict[str, str] = {}
    for image_id, original, thumb in session.execute(
        select(ClsImage.id, ClsImage.storage_path, ClsImage.thumbnail_path)
    ):
        referenced.add(original)
        required[original] = f"image {image_id}"
        if thumb:
            referenced.add(thumb)
            required[thumb] = f"image {image_id} (thumbnail)"
    for version_id, manifest in session.execute(
        select(ClsDatasetVersion.id, ClsDatasetVersion.manifest_key)
    ):
        if manifest:
            referenced.add(manifest)
            required[manifest] = f"dataset version {version_id}"
    return referenced, required


def _model_prefixes(session: Session) -> set[str]:
    """A model owns everything under models/<id>/ (weights, ONNX data, predictions)."""
    return {f"models/{model_id}/" for model_id in session.scalars(select(ClsTrainedModel.id))}


def _object_age(storage, key: str) -> timedelta | None:
    path = storage.local_path(key)
    if path is not None and path.exists():
        return datetime.now(timezone.utc) - datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    head = getattr(getattr(storage, "client", None), "head_object", None)
    if head is not None:
        modified = head(Bucket=storage.bucket, Key=storage._key(key))["LastModified"]
        return datetime.now(timezone.utc) - modified
    return None


def check_storage(*, session: Session, storage) -> dict:
    """Orphan objects and missing objects (reads only; fix_storage deletes the orphans)."""
    referenced, required = _referenced_keys(session)
    model_prefixes = _model_prefixes(session)
    # Training runs write checkpoints under models/<run>/ before their model row exists.

    model_prefixes |= {f"models/{run_id}/" for run_id in session.scalars(select(ClsTrainingRun.id))}
    present: set[str] = set()
    orphans: list[str] = []
    for prefix in OWNED_PREFIXES:
        for key in storage.list_keys(prefix):
            present.add(key)
            if key in referenced or any(key.startswith(p) for p in model_prefixes):
                continue
            orphans.append(key)
    missing = sorted(key for key in required if key not in present)
    return {
        "objects_checked": len(present),
        "orphan_objects": orphans,
        "missing_objects": [{"key": key, "needed_by": required[key]} for key in missing],
        "deleted": [],
        "kept_too_new": [],
        "ok": not orphans and not missing,
    }


@requires("admin", "deleting orphan storage objects")
def fix_storage(*, session: Session, actor: User, storage, grace: timedelta = ORPHAN_GRACE) -> dict:
    """check_storage, then delete the orphan objects older than `grace`; returns the report."""
    report = check_storage(session=session, storage=storage)
    for key in report["orphan_objects"]:
        age = _object_age(storage, key)
        if age is not None and age < grace:
            report["kept_too_new"].append(key)
            continue
        storage.delete(key)
        report["deleted"].append(key)
    return report
