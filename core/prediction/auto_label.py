"""AI auto-labeling: predict a dataset, a selection or the whole library with a trained model, and
write the predictions as AI labels (is_ai_generated, confidence, ai_model) and/or export them as a
CSV in storage. Manual and reviewed labels are never overwritten unless `overwrite` is asked; AI
labels feed the labeling page's review and low-confidence queues.

Roles: predicting (AI labels for review, a CSV) is labeling work (labeler); `overwrite`, which
replaces labels people set, needs the admin role. Checked when queued and again at every batch.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from core import safe_csv
from core.db import session_scope
from core.errors import InvalidInput
from core.jobs.queue import enqueue
from core.labeling.labels import labels_for_images, set_labels
from core.library.images import ImageFilters, matching_image_ids
from core.models import ClsClass, ClsDatasetImage, ClsImage
from core.permissions import require, requires
from core.prediction.loading import cached_predictor
from core.prediction.predict import Item, describe, model_thresholds, probabilities, resolve_model
from core.storage import get_storage
from core.users import User

SCOPES = ("dataset", "selection", "library")
BATCH = 32


def csv_key(job_or_run_id) -> str:
    return f"exports/predictions-{job_or_run_id}.csv"


def _ids(values, what: str) -> list[uuid.UUID]:
    try:
        return [value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in values]
    except ValueError:
        raise InvalidInput(f"{what}: not a list of UUIDs") from None


def parse_image_ids(text: str | list[str] | None) -> list[uuid.UUID]:
    """Image ids pasted or listed by a person (separated by spaces, commas or new lines), each once,
    in order; a token that is not a UUID is named."""
    tokens = text if isinstance(text, list) else re.split(r"[\s,;]+", text or "")
    out: dict[uuid.UUID, None] = {}
    for token in (t.strip() for t in tokens):
        if not token:
            continue
        try:
            out[uuid.UUID(token)] = None
        except ValueError:
            raise InvalidInput(f"{token[:60]!r} is not an image id (a UUID)") from None
    return list(out)


def selection_ids(*, session, image_ids=None, folders: list[str] | None = None,
                  tags: list[str] | None = None) -> list[uuid.UUID]:
    """A selection: the given image ids plus the library's images in any of `folders` and with any
    of `tags` (both filters when both are given), each once."""
    chosen = dict.fromkeys(_ids(image_ids or [], "image_ids"))
    if folders or tags:
        filters = ImageFilters(folders=list(folders or []), tags=list(tags or []))
        chosen.update(dict.fromkeys(sorted(matching_image_ids(session=session, filters=filters))))
    return list(chosen)


def check_request(*, scope: str, dataset_id=None, image_ids=None, write_labels: bool = False,
                  export_csv: bool = False) -> None:
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not write_labels and not export_csv:
        raise InvalidInput("choose what to do with the predictions: write labels, export a CSV, or both")
    if scope in ("dataset",) and dataset_id is None:
        raise InvalidInput("a dataset prediction needs a dataset")
    if scope == "selection" and not image_ids:
        raise InvalidInput("the selection is empty: select images first")
    if write_labels and dataset_id is None:
        raise InvalidInput("labels are written to a dataset: choose one (the library has no labels of its own)")


def target_images(*, session, scope: str, dataset_id=None, image_ids=None) -> list[tuple[uuid.UUID, str, str]]:
    """(image id, storage key, file name) of the images to predict, in a stable order. A selection
    with a dataset keeps the selected images that are in that dataset."""
    query = select(ClsImage.id, ClsImage.storage_path, ClsImage.original_filename, ClsImage.created_at)
    if scope == "dataset" or (scope == "selection" and dataset_id is not None):
        query = query.join(ClsDatasetImage, ClsDatasetImage.image_id == ClsImage.id).where(
            ClsDatasetImage.dataset_id == dataset_id)
    if scope != "selection":
        rows = session.execute(query.order_by(ClsImage.created_at, ClsImage.id)).all()
    else:
        wanted = list(dict.fromkeys(_ids(image_ids, "image_ids")))
        rows = []
        for start in range(0, len(wanted), 500):  # bounded IN lists (SQLite's variable limit)
            rows += session.execute(query.where(ClsImage.id.in_(wanted[start:start + 500]))).all()
        rows.sort(key=lambda row: (row[3], row[0]))
    return [(row[0], row[1], row[2] or "") for row in rows]


def _protected(session, dataset_id: uuid.UUID, image_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Images whose labels a person set or confirmed (any manual or reviewed label)."""
    labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=image_ids)
    return {image_id for image_id, rows in labels.items()
            if any(not row.is_ai_generated or row.is_reviewed for row in rows)}


def _class_ids(session, row) -> list[uuid.UUID | None]:
    """The class id of each model output, from its class mapping ({class_id: index}); None for a
    class that no longer exists or is deactivated (its predictions are not written)."""
    by_index: dict[int, uuid.UUID] = {}
    for class_id, index in (row.class_mapping or {}).items():
        try:
            by_index[int(index)] = uuid.UUID(str(class_id))
        except ValueError:
            continue
    active = set(session.scalars(select(ClsClass.id).where(ClsClass.id.in_(list(by_index.values())),
                                                           ClsClass.is_active.is_(True))))
    return [by_index.get(i) if by_index.get(i) in active else None for i in range(len(row.class_names))]


def _require_roles(actor: User, overwrite: bool) -> None:
    require(actor, "labeler", "predicting in batch")
    if overwrite:
        require(actor, "admin", "overwriting labels people set")


@dataclass
class _Tally:
    """What a batch prediction did so far (counts, the first 50 failures) and its CSV."""

    class_names: list[str]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("predicted", "labeled", "kept", "abstained", "failed"), 0))
    failures: list[dict[str, str]] = field(default_factory=list)
    buffer: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.writer = safe_csv.writer(self.buffer)  # class and file names are the user's: formula-safe
        self.writer.writerow(["image_id", "filename", "predicted", "confidence", *self.class_names])

    def fail(self, image_id: uuid.UUID, name: str, error: str) -> None:
        self.counts["failed"] += 1
        if len(self.failures) < 50:
            self.failures.append({"image_id": str(image_id), "filename": name, "error": error})


@dataclass
class _LabelTarget:
    """Where AI labels go: the dataset, the model's class index → class id, the images to leave alone."""

    dataset_id: uuid.UUID
    class_ids: list[uuid.UUID | None]
    ai_model: str
    protected: set[uuid.UUID]


def _read_items(storage, chunk: list[tuple]) -> list[Item]:
    items = []
    for image_id, key, name in chunk:
        try:
            items.append(Item(name or str(image_id), storage.get(key)))
        except Exception as exc:  # a missing object fails its image, not the job
            items.append(Item(name or str(image_id), error=f"cannot read {key} ({type(exc).__name__})"))
    return items


def _write_label(session, *, actor: User, tally: _Tally, target: _LabelTarget, image_id, name: str,
                 chosen: list[int], confidence: float) -> None:
    if image_id in target.protected:
        tally.counts["kept"] += 1
        return
    new_ids = [target.class_ids[i] for i in chosen if target.class_ids[i] is not None]
    if not new_ids:
        tally.fail(image_id, name, "its predicted class no longer exists or is deactivated")
        return
    set_labels(session=session, actor=actor, dataset_id=target.dataset_id, image_id=image_id, class_ids=new_ids,
               confidence=min(max(confidence, 0.0), 1.0), is_ai_generated=True, ai_model=target.ai_model,
               reason="ai_label")
    tally.counts["labeled"] += 1


def _record_batch(session, *, actor: User, tally: _Tally, chunk: list[tuple], probs, errors, results,
                  target: _LabelTarget | None) -> None:
    """One batch's predictions into the CSV, the counts and (with a target) the dataset's labels."""
    for (image_id, _key, name), p, error, result in zip(chunk, probs, errors, results, strict=True):
        if error is not None:
            tally.fail(image_id, name, error)
            continue
        tally.counts["predicted"] += 1
        chosen = [tally.class_names.index(c) for c in result["predicted"]]
        confidence = float(min(p[i] for i in chosen)) if chosen else None
        tally.writer.writerow([image_id, name, "|".join(result["predicted"]),
                               "" if confidence is None else f"{confidence:.6f}", *(f"{v:.6f}" for v in p)])
        if not chosen:
            tally.counts["abstained"] += 1
        elif target is not None:
            _write_label(session, actor=actor, tally=tally, target=target, image_id=image_id, name=name,
                         chosen=chosen, confidence=confidence)


@requires("labeler", "predicting in batch")
def run_batch_prediction(*, actor: User, model, scope: str, dataset_id=None, image_ids=None,
                         write_labels: bool = False, overwrite: bool = False, export_csv: bool = False,
                         csv_name: str | None = None, progress: Callable[[int, int, str], None] | None = None,
                         threads: int | None = None) -> dict[str, Any]:
    """Predict every target image in batches (each batch's labels committed on its own) and return
    counts: predicted, labeled, kept (protected labels left alone), abstained, failed (per-item
    reasons, the first 50), and the CSV key when one was written."""
    dataset_id = _ids([dataset_id], "dataset_id")[0] if dataset_id is not None else None
    _require_roles(actor, overwrite)
    check_request(scope=scope, dataset_id=dataset_id, image_ids=image_ids, write_labels=write_labels,
                  export_csv=export_csv)
    storage = get_storage()
    with session_scope() as session:
        row = resolve_model(session=session, model=model, user_id=actor.id)
        model_id, thresholds = row.id, model_thresholds(row)
        tally, class_ids, ai_model = _Tally(list(row.class_names)), _class_ids(session, row), f"{row.name} ({row.id})"
        predictor = cached_predictor(session=session, storage=storage, model_id=row.id, threads=threads)
        targets = target_images(session=session, scope=scope, dataset_id=dataset_id, image_ids=image_ids)
    if not targets:
        raise InvalidInput("there are no images to predict in this scope")
    for start in range(0, len(targets), BATCH):
        chunk = targets[start:start + BATCH]
        _require_roles(actor, overwrite)  # again per batch: a role removed meanwhile stops the job
        probs, errors = probabilities(predictor, _read_items(storage, chunk))
        results = [None if error else describe(p, class_names=tally.class_names, multi_label=predictor.multi_label,
                                                thresholds=thresholds, top_k=1)
                   for p, error in zip(probs, errors, strict=True)]
        with session_scope() as session:
            target = _LabelTarget(dataset_id, class_ids, ai_model, set() if overwrite else _protected(
                session, dataset_id, [c[0] for c in chunk])) if write_labels else None
            _record_batch(session, actor=actor, tally=tally, chunk=chunk, probs=probs, errors=errors, results=results,
                          target=target)
        if progress is not None:
            done = min(start + BATCH, len(targets))
            progress(done, len(targets), f"predicted {done} images")
    result: dict[str, Any] = {"model_id": str(model_id), "scope": scope, "total": len(targets), **tally.counts,
                              "failures": tally.failures}
    if scope == "selection":  # selected ids that are not in the library (or not in the chosen dataset)
        result["not_found"] = len(set(_ids(image_ids, "image_ids"))) - len(targets)
    if export_csv:
        _require_roles(actor, overwrite)
        key = csv_key(csv_name or uuid.uuid4())
        storage.put(key, tally.buffer.getvalue().encode())
        result["csv_key"] = key
    return result


@requires("labeler", "predicting in batch")
def start_batch_prediction(*, actor: User, model_id, scope: str, dataset_id=None, image_ids=None,
                           write_labels: bool = False, overwrite: bool = False,
                           export_csv: bool = False) -> uuid.UUID:
    """Check the request and queue it on the predictions queue; returns the job id."""
    _require_roles(actor, overwrite)
    check_request(scope=scope, dataset_id=dataset_id, image_ids=image_ids, write_labels=write_labels,
                  export_csv=export_csv)
    params = {"model": str(model_id), "scope": scope, "dataset_id": str(dataset_id) if dataset_id else None,
              "image_ids": [str(i) for i in image_ids] if image_ids else None, "write_labels": bool(write_labels),
              "overwrite": bool(overwrite), "export_csv": bool(export_csv)}
    return enqueue(actor=actor, kind="batch_prediction", params=params)


def read_csv(storage, key: str) -> list[dict[str, str]]:
    """A predictions CSV as written, read back with names unescaped (core.safe_csv)."""
    rows = csv.reader(io.StringIO(storage.get(key).decode(), newline=""))
    header = [safe_csv.unescape_cell(cell) for cell in next(rows, [])]
    return [dict(zip(header, (safe_csv.unescape_cell(cell) for cell in row), strict=False)) for row in rows]
