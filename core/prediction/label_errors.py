"""Label-error finder: rank a dataset's labeled images by how likely their label is wrong.

Out-of-sample probabilities come from either
- k-fold cross-validation on the version's train split with a small fast model (logistic regression
  on 16×16 pixels: seconds on a CPU, no GPU, no pretrained weights), or
- a trained model's predictions on the dataset's images it did not train on;
then cleanlab's `find_label_issues` (confident learning) picks and ranks the suspicious ones. Multi-
label datasets work the same way with one yes/no model per class and cleanlab's multi-label
confident learning (cleanlab.multilabel_classification); their suggestion is a label set.

Guard-rails: finding changes nothing. Each suggestion waits for a click (accept / keep / skip);
accepting a change to a test-split image needs an explicit confirmation (editing the test set from
model output inflates its scores); every accepted change goes through core.labeling.labels.set_labels with
reason "label_error_finder", which records who, when and old → new in cls_label_changes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from core.datasets.dataset import get_dataset
from core.datasets.versions import get_version, read_manifest
from core.db import session_scope
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.jobs.queue import enqueue
from core.labeling.labels import mark_reviewed, set_labels
from core.ml.data import decode_image
from core.models import ClsDatasetImage, ClsDatasetVersion, ClsImage, ClsLabel
from core.permissions import require, requires
from core.prediction.loading import cached_predictor
from core.prediction.predict import Item, probabilities, resolve_model
from core.storage import get_storage
from core.users import User

FEATURE_SIDE = 16
ACTIONS = ("accept", "keep", "skip")


def issues_key(dataset_id) -> str:
    return f"exports/label-issues-{dataset_id}.json"




def pixel_features(data: bytes, *, side: int = FEATURE_SIDE) -> np.ndarray:
    image = decode_image(data, mode="L").resize((side, side))
    return np.asarray(image, dtype=np.float32).reshape(-1) / 255.0


def cross_validated_probs(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-sample class probabilities by stratified k-fold (each image predicted by a model that
    never saw it). Folds shrink to the smallest class's count (at least 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2:
        raise InvalidInput("the label-error finder needs at least two classes with labeled train images")
    folds = int(min(folds, present.min()))
    if folds < 2:
        raise InvalidInput("every class needs at least two labeled train images for cross-validation")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")
    if probs.shape[1] != len(counts):  # classes with no image get probability 0
        full = np.zeros((len(labels), len(counts)))
        full[:, np.flatnonzero(counts)] = probs
        probs = full
    return probs


def cross_validated_multilabel_probs(features: np.ndarray, label_sets: list[list[int]], num_classes: int, *,
                                     folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-sample per-class probabilities for multi-label data: one yes/no logistic regression per
    class, each by stratified k-fold on that class (folds shrink to its rarer side, at least 2). A
    class every image has (or none has) gets probability 1 (or 0): nothing to learn from it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    indicator = np.zeros((len(label_sets), num_classes), dtype=int)
    for row, labels in enumerate(label_sets):
        indicator[row, labels] = 1
    probs = indicator.mean(axis=0, keepdims=True).repeat(len(label_sets), axis=0).astype(np.float64)
    learned = 0
    for column in range(num_classes):
        target = indicator[:, column]
        rarer = int(min(target.sum(), len(target) - target.sum()))
        if rarer < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1))
        splitter = StratifiedKFold(n_splits=min(folds, rarer), shuffle=True, random_state=seed)
        probs[:, column] = cross_val_predict(model, features, target, cv=splitter, method="predict_proba")[:, 1]
        learned += 1
    if not learned:
        raise InvalidInput("the label-error finder needs a class that at least two labeled train images have "
                           "and at least two do not")
    return probs


def rank_multilabel_issues(label_sets: list[list[int]], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: (indices of images whose label set is likely wrong, most likely first; per-image
    label quality) via cleanlab's multi-label confident learning (one class at a time)."""
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    ranked = find_label_issues(labels=label_sets, pred_probs=probs, return_indices_ranked_by="self_confidence",
                               n_jobs=1)  # no forked pool: see rank_issues
    return np.asarray(ranked, dtype=int), get_label_quality_scores(label_sets, probs)


def suggested_set(probs: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Multi-label suggestion: the classes at or above the threshold, else the most likely one."""
    chosen = [int(i) for i in np.flatnonzero(probs >= threshold)]
    return chosen or [int(np.argmax(probs))]


def rank_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of likely label errors, most likely first; per-image label quality) via cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork from a process whose other
    # threads run torch / ONNX Runtime (the in-process job pool) can deadlock the child; one process
    # ranks thousands of images in well under a second.
    ranked = find_label_issues(labels=labels, pred_probs=probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return np.asarray(ranked, dtype=int), get_label_quality_scores(labels, probs)


def _dataset_and_version(session, dataset_id, version_number):
    dataset = get_dataset(session=session, dataset_id=dataset_id)
    try:
        version = get_version(session=session, dataset_id=dataset.id, number=version_number)
    except NotFound:
        raise NotFound(f"dataset {dataset.name!r} has no version: create one first (the finder works on a "
                       "version's frozen train split)") from None
    return dataset, version


def find_issues(*, session, storage, dataset_id, version_number: int | None = None, model_id=None, folds: int = 5,
                progress: Callable[..., None] | None = None, limit: int | None = None) -> dict[str, Any]:
    """The suspected label errors of a dataset, most likely first. Changes nothing.

    Single-label: each image's one label against the class probabilities (suggestion: the most
    likely class). Multi-label: each image's label set against per-class probabilities (suggestion:
    the classes at probability 0.5 or more, else the most likely one)."""
    dataset, version = _dataset_and_version(session, as_uuid(dataset_id, "dataset"), version_number)
    multi = dataset.task_type == "multi_label"
    index_to_class = {int(i): c for c, i in version.class_mapping.items()}
    names = list(version.class_names)
    if model_id is not None:
        lines, probs, method, names = _model_probs(session, storage, dataset, model_id, index_to_class, progress)
    else:
        lines = [line for line in read_manifest(storage=storage, version=version)
                 if line["split"] == "train" and (len(line["labels"]) >= 1 if multi else len(line["labels"]) == 1)]
        if not lines:
            raise InvalidInput(f"version {version.version_number} of {dataset.name!r} has no labeled train images")
        features = []
        for number, line in enumerate(lines, 1):
            features.append(pixel_features(storage.get(line["key"])))
            if progress is not None and number % 50 == 0:
                progress(number, len(lines), f"read {number} of {len(lines)} images")
        if multi:
            probs = cross_validated_multilabel_probs(np.stack(features), [line["labels"] for line in lines],
                                                     len(names), folds=folds)
            method = f"{folds}-fold cross-validation per class (logistic regression on pixels)"
        else:
            labels = np.array([line["labels"][0] for line in lines])
            probs = cross_validated_probs(np.stack(features), labels, folds=folds)
            counts = np.bincount(labels)
            method = f"{min(folds, int(counts[counts > 0].min()))}-fold cross-validation (logistic regression on pixels)"
    if multi:
        label_sets = [sorted(int(i) for i in line["labels"]) for line in lines]
        ranked, quality = rank_multilabel_issues(label_sets, probs)
    else:
        label_sets = [[int(line["labels"][0])] for line in lines]
        ranked, quality = rank_issues(np.array([s[0] for s in label_sets]), probs)
    issues = []
    for rank, i in enumerate(ranked[:limit] if limit else ranked, 1):
        given = label_sets[i]
        suggested = suggested_set(probs[i]) if multi else [int(np.argmax(probs[i]))]
        issues.append({
            "rank": rank, "image_id": lines[i]["image_id"], "key": lines[i]["key"],
            "filename": lines[i].get("filename", ""), "split": lines[i]["split"],
            "given": _names(names, given), "given_class_id": index_to_class.get(given[0]) if not multi else None,
            "given_class_ids": [index_to_class.get(c) for c in given],
            "suggested": _names(names, suggested),
            "suggested_class_id": index_to_class.get(suggested[0]) if not multi else None,
            "suggested_class_ids": [index_to_class.get(c) for c in suggested],
            "given_probability": float(min(probs[i][c] for c in given)),
            "suggested_probability": float(min(probs[i][c] for c in suggested)),
            "label_quality": float(quality[i]),
        })
    return {"dataset_id": str(dataset.id), "dataset": dataset.name, "version": version.version_number,
            "task_type": dataset.task_type, "method": method, "checked": len(lines), "found": len(ranked),
            "issues": issues, "decisions": {}, "created_at": datetime.now(UTC).isoformat()}


def _names(names: list[str], indices: list[int]) -> str:
    return ", ".join(names[i] for i in indices)


def _model_probs(session, storage, dataset, model_id, index_to_class, progress):
    """A trained model's probabilities on the dataset's labeled images outside its training split,
    with the labels the dataset has now (single-label: images with one label; multi-label: each
    image's label set over the model's classes)."""
    row = resolve_model(session=session, model=model_id)
    if row.task_type != dataset.task_type:
        raise InvalidInput(f"model {row.name!r} is {row.task_type.replace('_', '-')} but dataset {dataset.name!r} "
                           f"is {dataset.task_type.replace('_', '-')}")
    trained = session.get(ClsDatasetVersion, row.dataset_version_id) if row.dataset_version_id else None
    seen = set(map(str, trained.train_image_ids)) if trained is not None else set()
    class_to_index = {uuid.UUID(str(c)): int(i) for c, i in (row.class_mapping or {}).items()}
    rows = session.execute(
        select(ClsLabel.image_id, ClsLabel.class_id, ClsDatasetImage.split, ClsImage.storage_path,
               ClsImage.original_filename)
        .join(ClsDatasetImage, (ClsDatasetImage.image_id == ClsLabel.image_id)
              & (ClsDatasetImage.dataset_id == ClsLabel.dataset_id))
        .join(ClsImage, ClsImage.id == ClsLabel.image_id)
        .where(ClsLabel.dataset_id == dataset.id).order_by(ClsLabel.image_id, ClsLabel.class_id)).all()
    by_image: dict[str, dict[str, Any]] = {}
    unknown: set[str] = set()
    for r in rows:
        if str(r[0]) in seen:
            continue
        if r[1] not in class_to_index:
            unknown.add(str(r[0]))  # a label the model cannot predict: its set cannot be judged
            continue
        line = by_image.setdefault(str(r[0]), {"image_id": str(r[0]), "labels": [], "split": r[2] or "unassigned",
                                               "key": r[3], "filename": r[4] or ""})
        line["labels"].append(class_to_index[r[1]])
    lines = [line for image_id, line in by_image.items() if image_id not in unknown
             and (len(line["labels"]) >= 1 if row.task_type == "multi_label" else len(line["labels"]) == 1)]
    if not lines:
        raise InvalidInput(f"model {row.name!r} trained on every labeled image of {dataset.name!r} it knows the "
                           "classes of; use cross-validation instead")
    predictor = cached_predictor(session=session, storage=storage, model_id=row.id)
    probs, errors = probabilities(predictor, [Item(line["key"], storage.get(line["key"])) for line in lines])
    keep = [i for i, error in enumerate(errors) if error is None]
    index_to_class.clear()
    index_to_class.update({i: str(c) for c, i in class_to_index.items()})
    return ([lines[i] for i in keep], probs[keep].astype(np.float64),
            f"predictions of model {row.name!r} on images it did not train on", list(row.class_names))


@requires("admin", "finding label errors")
def find_and_store(*, actor: User, dataset_id, version_number=None, model_id=None, folds: int = 5,
                   progress=None) -> dict[str, Any]:
    """find_issues, saved for the review view (replacing an earlier result); returns a summary."""
    storage = get_storage()
    with session_scope() as session:
        result = find_issues(session=session, storage=storage, dataset_id=dataset_id, version_number=version_number,
                             model_id=model_id, folds=folds, progress=progress)
    require(actor, "admin", "finding label errors")  # again after the search, before the result is stored
    storage.put(issues_key(result["dataset_id"]), json.dumps(result).encode(), "application/json")
    return {"dataset_id": result["dataset_id"], "checked": result["checked"], "found": result["found"],
            "method": result["method"], "key": issues_key(result["dataset_id"])}


@requires("admin", "finding label errors")
def start_find(*, actor: User, dataset_id, version_number=None, model_id=None, folds: int = 5) -> uuid.UUID:
    return enqueue(actor=actor, kind="label_issues",
                   params={"dataset_id": str(as_uuid(dataset_id, "dataset")), "version_number": version_number,
                           "model_id": str(model_id) if model_id else None, "folds": int(folds)})


def stored_issues(*, storage, dataset_id) -> dict[str, Any] | None:
    key = issues_key(as_uuid(dataset_id, "dataset"))
    return json.loads(storage.get(key)) if storage.exists(key) else None


def pending(result: dict[str, Any]) -> list[dict[str, Any]]:
    decided = result.get("decisions", {})
    return [issue for issue in result["issues"] if issue["image_id"] not in decided]


@requires("labeler", "deciding a label-error suggestion")
def decide(*, session, actor: User, storage, dataset_id, image_id, action: str, confirm_test: bool = False,
           result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user's click on one suggestion. accept: relabel to the suggested class (recorded in
    cls_label_changes); keep: the given label is confirmed (marked reviewed); skip: nothing changes.
    A test-split change needs confirm_test; a label someone changed since the search is a Conflict."""
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    dataset_id, image_id = as_uuid(dataset_id, "dataset"), as_uuid(image_id, "image")
    stored = result if result is not None else stored_issues(storage=storage, dataset_id=dataset_id)
    issue = next((i for i in (stored or {}).get("issues", []) if i["image_id"] == str(image_id)), None)
    if issue is None:
        raise NotFound(f"image {image_id} is not among the suspected label errors of this dataset")
    if action == "skip":
        return {"image_id": str(image_id), "action": "skip", "changed": False}
    link = session.scalar(select(ClsDatasetImage).where(ClsDatasetImage.dataset_id == dataset_id,
                                                        ClsDatasetImage.image_id == image_id))
    if link is None:
        raise NotFound(f"image {image_id} is no longer in this dataset")
    current = {str(c) for c in session.scalars(select(ClsLabel.class_id).where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id))}
    given = set(issue.get("given_class_ids") or [issue["given_class_id"]])
    if current != given:
        raise Conflict(f"the label of {issue['filename'] or image_id} changed since the search; search again")
    changed = False
    if action == "accept":
        if link.split == "test" and not confirm_test:
            raise InvalidInput("this image is in the test split: changing test labels from model output inflates "
                               "test scores; confirm to change it anyway")
        suggested = issue.get("suggested_class_ids") or [issue["suggested_class_id"]]
        if any(class_id is None for class_id in suggested):
            raise NotFound("the suggested class no longer exists")
        set_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id, class_ids=suggested,
                   reason="label_error_finder")
        changed = True
    else:
        mark_reviewed(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id)
    if stored is not None:
        stored.setdefault("decisions", {})[str(image_id)] = {
            "action": action, "user_id": str(actor.id), "split": link.split,
            "at": datetime.now(UTC).isoformat()}
        if result is None:
            storage.put(issues_key(dataset_id), json.dumps(stored).encode(), "application/json")
    return {"image_id": str(image_id), "action": action, "changed": changed, "split": link.split,
            "old": issue["given"], "new": issue["suggested"] if changed else issue["given"]}
