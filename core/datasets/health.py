"""Dataset health check: what would hurt a model trained on this dataset, each finding with the ids of
the images it is about (the page links them).

Checks: class balance (counts, imbalance ratio), classes under a minimum, classes of the dataset's label
space with no image, unlabeled / skipped /
split-less images, several labels in a single-label dataset, exact and near duplicates that sit in
different splits (leakage) or carry different labels, classes missing from val or test, tiny and
extreme-aspect images.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets.label_space import space_class_ids
from core.datasets.split_facts import (
    ImageFacts,
    dataset_image_facts,
    duplicate_groups,
    get_dataset,
    resolve_threshold,
)
from core.datasets.splits import normalize_ratios
from core.errors import InvalidInput
from core.models import ClsClass
from core.vocabulary import SPLITS, TRAINING_SPLITS

MIN_IMAGES_PER_CLASS = 10
"""A class with fewer labeled images than this is reported as too small to learn."""
TINY_SIDE_PX = 32
"""An image whose shorter side is below this many pixels is reported as tiny."""
MAX_ASPECT_RATIO = 5.0
"""An image whose long side is more than this many times its short side is reported as extreme."""
IMBALANCE_WARNING_RATIO = 10.0
"""Largest / smallest class above this is reported as a warning (below it, for information)."""
MAX_IDS_PER_FINDING = 1000
"""At most this many image ids are listed in one finding (its count is always exact)."""


def _finding(code: str, severity: str, title: str, detail: str, image_ids, **extra) -> dict[str, Any]:
    ids = sorted({str(i) for i in image_ids})
    return {"code": code, "severity": severity, "title": title, "detail": detail, "count": len(ids),
            "image_ids": ids[:MAX_IDS_PER_FINDING], "truncated": len(ids) > MAX_IDS_PER_FINDING, **extra}


def _check_options(min_images_per_class, tiny_side_px, max_aspect_ratio) -> None:
    for name, value in (("min_images_per_class", min_images_per_class), ("tiny_side_px", tiny_side_px)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{name} must be a whole number ≥ 0, not {value!r}")
    if not isinstance(max_aspect_ratio, int | float) or not max_aspect_ratio >= 1:
        raise InvalidInput(f"max_aspect_ratio must be a number ≥ 1, not {max_aspect_ratio!r}")


def health_check(*, session: Session, dataset_id: uuid.UUID, min_images_per_class: int = MIN_IMAGES_PER_CLASS,
                 tiny_side_px: int = TINY_SIDE_PX, max_aspect_ratio: float = MAX_ASPECT_RATIO,
                 near_duplicate_threshold: int | None = None, storage=None) -> dict[str, Any]:
    """near_duplicate_threshold: None = the platform's near-duplicate distance, 0 = exact copies only
    (see splits.resolve_threshold)."""
    _check_options(min_images_per_class, tiny_side_px, max_aspect_ratio)
    threshold = resolve_threshold(near_duplicate_threshold)
    dataset = get_dataset(session, dataset_id)
    facts = dataset_image_facts(session, dataset_id)
    labeled = [f for f in facts if f.class_ids]
    classes = {row.id: row for row in session.scalars(select(ClsClass))}
    name_of = {class_id: (classes[class_id].name if class_id in classes else str(class_id))
               for f in labeled for class_id in f.class_ids}

    per_class = _per_class(labeled, classes, space_class_ids(session, dataset.id))
    findings = _balance_findings(per_class, min_images_per_class)
    findings += _labeling_findings(dataset.task_type, facts)
    findings += _duplicate_findings(labeled, threshold, name_of, session, storage)
    findings += _split_findings(dataset.split_ratios, labeled, per_class)
    findings += _geometry_findings(facts, tiny_side_px, max_aspect_ratio)
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f["severity"]], f["code"], f.get("class") or ""))
    counts = [row["count"] for row in per_class if row["count"]]
    return {
        "dataset_id": str(dataset.id), "dataset": dataset.name, "task_type": dataset.task_type,
        "images": len(facts), "labeled": len(labeled),
        "unlabeled": sum(1 for f in facts if not f.class_ids and f.status != "skipped"),
        "skipped": sum(1 for f in facts if f.status == "skipped"),
        "split_counts": dict(Counter(f.split for f in labeled)),
        "per_class": [{k: v for k, v in row.items() if k != "image_ids"} for row in per_class],
        "imbalance_ratio": (max(counts) / min(counts)) if counts else None,
        "findings": findings,
        "options": {"min_images_per_class": min_images_per_class, "tiny_side_px": tiny_side_px,
                    "max_aspect_ratio": max_aspect_ratio, "near_duplicate_threshold": threshold},
    }


def _per_class(labeled: list[ImageFacts], classes: dict[uuid.UUID, ClsClass],
               space: list[uuid.UUID]) -> list[dict[str, Any]]:
    """One row per class of the dataset's label space (a class no image has yet: count 0)."""
    members: dict[uuid.UUID, list[ImageFacts]] = {class_id: [] for class_id in space}
    for fact in labeled:
        for class_id in fact.class_ids:
            members.setdefault(class_id, []).append(fact)
    rows = []
    for class_id, facts in members.items():
        row = classes.get(class_id)
        splits = Counter(f.split for f in facts)
        rows.append({"class_id": str(class_id), "name": row.name if row else str(class_id),
                     "color": row.color if row else "#999999", "count": len(facts),
                     **{s: splits.get(s, 0) for s in SPLITS},
                     "image_ids": [f.image_id for f in facts]})
    return sorted(rows, key=lambda r: (-r["count"], r["name"]))


def _balance_findings(per_class: list[dict], minimum: int) -> list[dict]:
    findings = []
    counts = [row for row in per_class if row["count"]]
    if len(counts) >= 2:
        largest, smallest = counts[0], counts[-1]
        ratio = largest["count"] / smallest["count"]
        if ratio > 1.5:
            severity = "warning" if ratio > IMBALANCE_WARNING_RATIO else "info"
            findings.append(_finding(
                "class_imbalance", severity, f"Classes are imbalanced ({ratio:.1f} : 1)",
                f"{largest['name']!r} has {largest['count']} images, {smallest['name']!r} has {smallest['count']}; "
                "consider more images of the small classes, class weights or a balanced sampler.",
                smallest["image_ids"], ratio=ratio, **{"class": smallest["name"]}))
    for row in per_class:
        if row["count"] == 0:
            findings.append(_finding(
                "empty_class", "info", f"Class {row['name']!r} has no labeled images",
                "it is one of this dataset's classes, but no image carries it yet: a version leaves it out. "
                "Label some, or remove it on the Settings tab.", [], **{"class": row["name"]}))
        elif row["count"] < minimum:
            findings.append(_finding(
                "small_class", "warning", f"Class {row['name']!r} has only {row['count']} images",
                f"fewer than {minimum}: too few to learn and to evaluate reliably.", row["image_ids"],
                **{"class": row["name"]}))
    return findings


def _labeling_findings(task_type: str, facts: list[ImageFacts]) -> list[dict]:
    findings = []
    unlabeled = [f.image_id for f in facts if not f.class_ids and f.status != "skipped"]
    if unlabeled:
        findings.append(_finding("unlabeled", "info", f"{len(unlabeled)} images are unlabeled",
                                 "they are left out of versions and training until labeled.", unlabeled))
    skipped = [f.image_id for f in facts if f.status == "skipped"]
    if skipped:
        findings.append(_finding("skipped", "info", f"{len(skipped)} images were skipped",
                                 "skipped while labeling; review them or remove them from the dataset.", skipped))
    if task_type == "single_label":
        several = [f.image_id for f in facts if len(f.class_ids) > 1]
        if several:
            findings.append(_finding(
                "several_labels", "error", f"{len(several)} images have several labels",
                "this dataset is single-label: keep one label per image (a version refuses them).", several))
    unsplit = [f.image_id for f in facts if f.class_ids and f.split not in TRAINING_SPLITS]
    if unsplit:
        findings.append(_finding(
            "no_split", "info", f"{len(unsplit)} labeled images have no split",
            "creating a version assigns them by the dataset's ratios; run split to choose yourself.", unsplit))
    return findings


def _duplicate_findings(labeled: list[ImageFacts], threshold: int, name_of: dict, session: Session,
                        storage) -> list[dict]:
    by_id = {f.image_id: f for f in labeled}
    by_hash: dict[str, set[uuid.UUID]] = defaultdict(set)
    for fact in labeled:
        if fact.file_hash:
            by_hash[fact.file_hash].add(fact.image_id)
    exact = [group for group in by_hash.values() if len(group) > 1]
    near = [group for group in duplicate_groups(labeled, threshold, session=session, storage=storage)
            if len({by_id[i].file_hash for i in group}) > 1]

    def leaking(groups):
        return [g for g in groups if len({by_id[i].split for i in g if by_id[i].split in TRAINING_SPLITS}) > 1]

    def conflicting(groups):
        return [g for g in groups if len({tuple(by_id[i].class_ids) for i in g}) > 1]

    findings = []
    for code, groups, severity, title, detail in (
        ("exact_duplicate_leakage", leaking(exact), "error", "identical images sit in different splits",
         "a copy of a training image in val or test inflates the scores; join them on the Splits tab or run split."),
        ("near_duplicate_leakage", leaking(near), "warning", "near-duplicate images sit in different splits",
         "near copies across splits inflate the scores; join them on the Splits tab (into train, or drop the "
         "copies), run split, or move them by hand."),
        ("duplicate_label_conflict", conflicting(exact + near), "warning", "duplicates carry different labels",
         "the same picture labeled two ways: at least one label is wrong."),
    ):
        if groups:
            members = [i for g in groups for i in g]
            examples = [sorted({name_of[c] for i in g for c in by_id[i].class_ids}) for g in groups[:5]]
            findings.append(_finding(code, severity, f"{len(groups)} groups of {title}", detail, members,
                                     groups=[sorted(map(str, g)) for g in groups[:200]], example_classes=examples))
    return findings


def _split_findings(ratios: dict, labeled: list[ImageFacts], per_class: list[dict]) -> list[dict]:
    try:
        normalized = normalize_ratios(ratios)
    except InvalidInput:
        normalized = {"train": 1.0, "val": 0.0, "test": 0.0}
    present = {f.split for f in labeled}
    findings = []
    for split in ("val", "test"):
        if normalized[split] <= 0 and split not in present:
            continue  # the dataset does not use this split
        for row in per_class:
            if row["count"] and row[split] == 0:
                findings.append(_finding(
                    f"missing_from_{split}", "warning", f"Class {row['name']!r} has no {split} images",
                    f"its {split} metrics will be missing; run split (it keeps a minimum per class) or move "
                    "some of its images.", row["image_ids"], **{"class": row["name"]}))
    return findings


def _geometry_findings(facts: list[ImageFacts], tiny: int, max_aspect: float) -> list[dict]:
    sized = [f for f in facts if f.width and f.height]
    small = [f.image_id for f in sized if min(f.width, f.height) < tiny]
    extreme = [f.image_id for f in sized if max(f.width, f.height) / min(f.width, f.height) > max_aspect]
    findings = []
    if small:
        findings.append(_finding("tiny_images", "warning", f"{len(small)} images are tiny",
                                 f"shorter side under {tiny} px: upscaling them to the model's size blurs them.",
                                 small))
    if extreme:
        findings.append(_finding("extreme_aspect", "warning", f"{len(extreme)} images have an extreme aspect ratio",
                                 f"longer side over {max_aspect:g}× the shorter: resizing distorts or crops them.",
                                 extreme))
    return findings
