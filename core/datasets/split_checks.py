"""Checks on a dataset's splits that a person acts on. Splits are the user's (an assigned image stays
where it was put, core.datasets.splits), so what would hurt a model is reported, not silently fixed:

- near-duplicate groups that straddle splits (a copy of a training image in val or test inflates the
  scores): counted, with examples named by file, and joined only on an explicit action
  (`join_straddling`: all into train, or drop the copies outside the group's first split);
- classes without val or test images (their metrics would be missing): warned before a version
  (`version_warnings`, on the splits the version would have) or a training run
  (`version_missing_eval`, on the version's own counts).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.datasets.dataset import remove_images_from_dataset
from core.datasets.locks import lock_dataset
from core.datasets.split_facts import (
    _straddles,
    dataset_image_facts,
    duplicate_groups,
    get_dataset,
    resolve_threshold,
    straddling_report,
)
from core.datasets.splits import normalize_ratios, plan_unassigned
from core.errors import InvalidInput
from core.models import ClsClass, ClsDatasetImage, ClsDatasetVersion
from core.permissions import requires
from core.vocabulary import TRAINING_SPLITS

JOIN_MODES = ("train", "drop")


def _labeled_groups(session: Session, dataset_id: uuid.UUID, storage, threshold: int | None):
    facts = [fact for fact in dataset_image_facts(session, dataset_id) if fact.class_ids]
    return facts, duplicate_groups(facts, resolve_threshold(threshold), session=session, storage=storage)


def straddling_duplicates(*, session: Session, dataset_id: uuid.UUID, storage=None,
                          near_duplicate_threshold: int | None = None) -> dict[str, Any]:
    """The Splits tab's and `datasets duplicates`' report on the dataset's current splits."""
    get_dataset(session, dataset_id)
    labeled, groups = _labeled_groups(session, dataset_id, storage, near_duplicate_threshold)
    return straddling_report(labeled, groups)


def missing_eval_classes(*, ratios: dict, per_class: dict[str, Counter], split_totals: Counter) -> list[dict]:
    """Classes with no image in val or in test, for each evaluation split the dataset uses (a ratio
    above 0 or any image there)."""
    try:
        normalized = normalize_ratios(ratios)
    except InvalidInput:
        normalized = {"train": 1.0, "val": 0.0, "test": 0.0}
    used = [s for s in ("val", "test") if normalized[s] > 0 or split_totals.get(s)]
    found = []
    for name in sorted(per_class):
        missing = [s for s in used if not per_class[name].get(s)]
        if missing:
            found.append({"class": name, "missing": missing, "images": sum(per_class[name].values())})
    return found


def version_warnings(*, session: Session, dataset_id: uuid.UUID, storage=None) -> dict[str, Any]:
    """What a version made now would carry that hurts training, judged on the splits it would have
    (labeled images without a split get theirs first, as create_version does): classes without val or
    test images, and near-duplicate groups across splits."""
    dataset = get_dataset(session, dataset_id)
    summary, planned = plan_unassigned(session=session, dataset_id=dataset_id, storage=storage)
    labeled = [fact for fact in dataset_image_facts(session, dataset_id) if fact.class_ids]
    names = dict(session.execute(select(ClsClass.id, ClsClass.name)).tuples().all())
    per_class: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    for fact in labeled:
        split = planned.get(fact.image_id, fact.split)
        totals[split] += 1
        for class_id in fact.class_ids:
            per_class[names.get(class_id, str(class_id))][split] += 1
    return {"missing_eval": missing_eval_classes(ratios=dataset.split_ratios, per_class=per_class,
                                                 split_totals=totals),
            "straddling_duplicates": summary["straddling_duplicates"],
            "unassigned": sum(1 for fact in labeled if fact.split not in TRAINING_SPLITS)}


def version_missing_eval(version: ClsDatasetVersion | dict) -> list[dict]:
    """missing_eval_classes for a version's frozen counts (a row or its summary): what a training run on
    it would lack, for the evaluation splits the version has images in."""
    per_class_counts = version["per_class_counts"] if isinstance(version, dict) else version.per_class_counts
    split_counts = version["split_counts"] if isinstance(version, dict) else version.split_counts
    per_class = {name: Counter(counts) for name, counts in (per_class_counts or {}).items()}
    return missing_eval_classes(ratios={"train": 1, "val": 0, "test": 0}, per_class=per_class,
                                split_totals=Counter(split_counts or {}))


def warning_lines(warnings: dict[str, Any]) -> list[str]:
    """The warnings as sentences (pages, CLI stderr)."""
    lines = []
    for item in warnings.get("missing_eval", []):
        lines.append(f"class {item['class']!r} has no {' or '.join(item['missing'])} images "
                     f"(its {'/'.join(item['missing'])} metrics will be missing)")
    straddling = warnings.get("straddling_duplicates") or {}
    if straddling.get("count"):
        lines.append(f"{straddling['count']} near-duplicate groups ({straddling['images']} images) sit in more than "
                     "one split: their scores are inflated; join them on the Splits tab or with "
                     "`datasets duplicates NAME --join train|drop`")
    return lines


@requires("admin", "joining duplicates across splits")
def join_straddling(*, session: Session, actor, dataset_id: uuid.UUID, how: str, storage=None,
                    near_duplicate_threshold: int | None = None) -> dict[str, Any]:
    """Join every straddling group: `train` moves all its members to train; `drop` keeps the members
    in the group's first split (train, then val, then test) and takes the others out of the dataset
    (the library keeps them). Returns what changed."""
    if how not in JOIN_MODES:
        raise InvalidInput(f"join mode must be one of {', '.join(JOIN_MODES)}, not {how!r}")
    get_dataset(session, dataset_id)
    labeled, groups = _labeled_groups(session, dataset_id, storage, near_duplicate_threshold)
    splits = {fact.image_id: fact.split for fact in labeled}
    straddling = [g for g in groups if _straddles(g, splits)]
    moved, dropped = [], []
    for group in straddling:
        if how == "train":
            moved += [i for i in group if splits[i] != "train"]
        else:
            first = next(s for s in TRAINING_SPLITS if any(splits[i] == s for i in group))
            dropped += [i for i in group if splits[i] != first]
    lock_dataset(session, dataset_id)
    for start in range(0, len(moved), 1000):
        session.execute(update(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(moved[start:start + 1000]))
            .values(split="train").execution_options(synchronize_session=False))
    if dropped:
        remove_images_from_dataset(session=session, actor=actor, dataset_id=dataset_id, image_ids=dropped)
    return {"groups": len(straddling), "moved_to_train": len(moved), "removed_from_dataset": len(dropped)}
