"""Batch prediction fanned out over the predictions queue (core/jobs/fanout.py): the job plans chunks
of `prediction_chunk_images` images, each chunk predicts its images and applies each image's outcome
once (a cls_job_items row per image, written in the transaction that writes its AI label), and the
finisher counts the summary from those rows and joins the chunks' CSV parts into one CSV.

Same predictions, labels, counts and CSV as core.prediction.auto_label.run_batch_prediction (the CLI's
in-process path); only the work is spread.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

from sqlalchemy import select

from core import safe_csv
from core.config import get_settings
from core.db import session_scope
from core.errors import InvalidInput
from core.jobs.fanout import item_counts, record_items
from core.labeling.labels import set_labels
from core.models import ClsImage
from core.permissions import requires
from core.prediction.auto_label import (
    BATCH,
    _class_ids,
    _ids,
    _LabelTarget,
    _protected,
    _read_items,
    _require_roles,
    check_request,
    csv_key,
    target_images,
)
from core.prediction.loading import cached_predictor
from core.prediction.predict import describe, model_thresholds, probabilities, resolve_model
from core.storage import get_storage
from core.users import User

FAILURES_KEPT = 50


def part_key(job_id, index: int) -> str:
    return f"exports/predictions-{job_id}.parts/{index:06d}.csv"


@requires("labeler", "predicting in batch")
def plan_batch_prediction(*, actor: User, model, scope: str, dataset_id=None, image_ids=None,
                          write_labels: bool = False, overwrite: bool = False,
                          export_csv: bool = False) -> tuple[dict[str, Any], list[list[str]]]:
    """The plan (what the finisher needs) and the image ids of each chunk, in the stable order."""
    dataset_id = _ids([dataset_id], "dataset_id")[0] if dataset_id is not None else None
    _require_roles(actor, overwrite)
    check_request(scope=scope, dataset_id=dataset_id, image_ids=image_ids, write_labels=write_labels,
                  export_csv=export_csv)
    with session_scope() as session:
        row = resolve_model(session=session, model=model, user_id=actor.id)
        targets = target_images(session=session, scope=scope, dataset_id=dataset_id, image_ids=image_ids)
        plan = {"model_id": str(row.id), "scope": scope, "total": len(targets), "export_csv": bool(export_csv),
                "class_names": list(row.class_names)}
    if not targets:
        raise InvalidInput("there are no images to predict in this scope")
    if scope == "selection":  # selected ids that are not in the library (or not in the chosen dataset)
        plan["not_found"] = len(set(_ids(image_ids, "image_ids"))) - len(targets)
    size = get_settings().prediction_chunk_images
    ids = [str(image_id) for image_id, _key, _name in targets]
    return plan, [ids[start:start + size] for start in range(0, len(ids), size)]


def _targets(session, image_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, str, str]]:
    found = {}
    for start in range(0, len(image_ids), 500):  # bounded IN lists (SQLite's variable limit)
        for image_id, key, name in session.execute(select(ClsImage.id, ClsImage.storage_path, ClsImage.original_filename)
                                                   .where(ClsImage.id.in_(image_ids[start:start + 500]))):
            found[image_id] = (image_id, key, name or "")
    return [found[image_id] for image_id in image_ids if image_id in found]  # an image deleted meanwhile is left out


def _outcome(result: dict | None, error: str | None, image_id, target: _LabelTarget | None, chosen) -> str:
    if error is not None:
        return "failed"
    if not chosen:
        return "abstained"
    if target is None:
        return "predicted"
    if image_id in target.protected:
        return "kept"
    if not [target.class_ids[i] for i in chosen if target.class_ids[i] is not None]:
        return "unwritable"
    return "labeled"


@requires("labeler", "predicting in batch")
def predict_chunk(*, actor: User, job_id, index: int, image_ids: list[str], model_id: str, dataset_id=None,
                  write_labels: bool = False, overwrite: bool = False, export_csv: bool = False,
                  progress=None) -> dict[str, Any]:
    """Predict one chunk of a batch prediction job `job_id`. Run again (its worker died), it predicts
    the same images again but writes no label and counts no image twice; its CSV part is rewritten."""
    job_id, dataset_id = uuid.UUID(str(job_id)), uuid.UUID(str(dataset_id)) if dataset_id else None
    storage = get_storage()
    with session_scope() as session:
        row = resolve_model(session=session, model=model_id, user_id=actor.id)
        thresholds, class_names = model_thresholds(row), list(row.class_names)
        class_ids, ai_model = _class_ids(session, row), f"{row.name} ({row.id})"
        predictor = cached_predictor(session=session, storage=storage, model_id=row.id)
        targets = _targets(session, _ids(image_ids, "image_ids"))
    part = safe_csv.writer(buffer := io.StringIO())
    failures: list[dict[str, str]] = []
    for start in range(0, len(targets), BATCH):
        chunk = targets[start:start + BATCH]
        _require_roles(actor, overwrite)  # again per batch: a role removed meanwhile stops the job
        probs, errors = probabilities(predictor, _read_items(storage, chunk))
        with session_scope() as session:
            target = _LabelTarget(dataset_id, class_ids, ai_model, set() if overwrite else _protected(
                session, dataset_id, [c[0] for c in chunk])) if write_labels else None
            rows, labels = [], {}
            for (image_id, _key, name), p, error in zip(chunk, probs, errors, strict=True):
                result = None if error else describe(p, class_names=class_names, multi_label=predictor.multi_label,
                                                     thresholds=thresholds, top_k=1)
                chosen = [class_names.index(c) for c in result["predicted"]] if result else []
                outcome = _outcome(result, error, image_id, target, chosen)
                if error is not None or outcome == "unwritable":
                    if len(failures) < FAILURES_KEPT:
                        failures.append({"image_id": str(image_id), "filename": name, "error": error or
                                         "its predicted class no longer exists or is deactivated"})
                if error is None:
                    confidence = float(min(p[i] for i in chosen)) if chosen else None
                    part.writerow([image_id, name, "|".join(result["predicted"]),
                                   "" if confidence is None else f"{confidence:.6f}", *(f"{v:.6f}" for v in p)])
                if outcome == "labeled":
                    labels[str(image_id)] = ([target.class_ids[i] for i in chosen if target.class_ids[i]], confidence)
                rows.append({"item_key": str(image_id), "image_id": image_id, "outcome": outcome,
                             "labels": int(outcome == "labeled")})
            for key in sorted(record_items(session, job_id, rows) & set(labels)):  # each image's label once
                class_list, confidence = labels[key]
                set_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=uuid.UUID(key),
                           class_ids=class_list, confidence=min(max(confidence, 0.0), 1.0), is_ai_generated=True,
                           ai_model=ai_model, reason="ai_label")
        if progress is not None:
            done = min(start + BATCH, len(targets))
            progress(done, len(image_ids), f"predicted {done} images")
    key = None
    if export_csv:
        key = part_key(job_id, index)
        storage.put(key, buffer.getvalue().encode())
    return {"failures": failures, "part": key, "images": len(targets)}


@requires("labeler", "predicting in batch")
def finish_batch_prediction(*, actor: User, job_id, plan: dict[str, Any],
                            chunk_results: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's one summary, counted from its cls_job_items rows, and its CSV joined from the parts."""
    job_id = uuid.UUID(str(job_id))
    with session_scope() as session:
        counts = {outcome: entry["items"] for outcome, entry in item_counts(session, job_id).items()}
    failed = counts.get("failed", 0) + counts.get("unwritable", 0)
    result: dict[str, Any] = {
        "model_id": plan["model_id"], "scope": plan["scope"], "total": plan["total"],
        "predicted": sum(counts.values()) - counts.get("failed", 0), "labeled": counts.get("labeled", 0),
        "kept": counts.get("kept", 0), "abstained": counts.get("abstained", 0), "failed": failed,
        "failures": [f for chunk in chunk_results for f in chunk.get("failures", [])][:FAILURES_KEPT],
        "parts": len(chunk_results),
    }
    if "not_found" in plan:
        result["not_found"] = plan["not_found"]
    if plan.get("export_csv"):
        _require_roles(actor, False)
        storage, buffer = get_storage(), io.StringIO()
        safe_csv.writer(buffer).writerow(["image_id", "filename", "predicted", "confidence", *plan["class_names"]])
        parts = [chunk["part"] for chunk in chunk_results if chunk.get("part")]
        body = buffer.getvalue().encode() + b"".join(storage.get(key) for key in parts)
        result["csv_key"] = key = csv_key(job_id)
        storage.put(key, body)
        for part in parts:
            storage.delete(part)
    return result
