"""Train/val/test splits of a dataset's labeled images: stratified auto-split, manual assignment,
per-class statistics, and the duplicate groups that must never straddle two splits.

Only labeled images are split (a version freezes only labeled images); unlabeled images keep
whatever split they have. Duplicate groups (same SHA-256, or near duplicates as core.library.duplicates
finds and confirms them) move as one unit, so no copy of a training image can sit in val or
test by construction.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from core.datasets.locks import lock_dataset
from core.datasets.split_facts import (
    ImageFacts,
    dataset_image_facts,
    duplicate_groups,
    get_dataset,
    resolve_threshold,
    straddling_report,
)
from core.errors import InvalidInput, NotFound
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsLabel
from core.permissions import requires
from core.users import User
from core.vocabulary import SPLITS, TRAINING_SPLITS

DEFAULT_RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
UPDATE_CHUNK = 1000


def normalize_ratios(ratios: dict[str, Any] | None) -> dict[str, float]:
    """Check split ratios and scale them to sum to 1 (so 70/20/10 works as well as 0.7/0.2/0.1)."""
    if ratios is None:
        ratios = DEFAULT_RATIOS
    if not isinstance(ratios, dict):
        raise InvalidInput("split ratios must be a mapping like {'train': 0.8, 'val': 0.1, 'test': 0.1}")
    unknown = sorted(set(ratios) - set(TRAINING_SPLITS))
    if unknown:
        raise InvalidInput(f"unknown split {', '.join(map(repr, unknown))}; splits are train, val, test")
    values: dict[str, float] = {}
    for name in TRAINING_SPLITS:
        raw = ratios.get(name, 0)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"split ratio {name}={raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"split ratio {name}={raw!r} must be a finite number ≥ 0")
        values[name] = value
    if values["train"] <= 0:
        raise InvalidInput("the train ratio must be above 0: a model needs training images")
    total = sum(values.values())
    return {name: value / total for name, value in values.items()}


@dataclass
class _Unit:
    """A group of images that must share one split (a near-duplicate group, or one image)."""

    image_ids: list[uuid.UUID]
    class_ids: set[uuid.UUID]
    fixed: str | None = None  # the split it must keep, when its images are kept where they are
    split: str | None = None


def _build_units(labeled: list[ImageFacts], groups: list[set[uuid.UUID]], keep: set[str]) -> list[_Unit]:
    """Units of labeled images. An image in a kept split never moves: it is a unit of its own, fixed
    where it is. The other members of a duplicate group move as one unit; when the group has kept
    members they join the split holding most of them (a new copy goes where its duplicates are).
    Groups whose kept members already straddle splits stay so: they are reported, not moved
    (core.datasets.split_checks offers the explicit join)."""
    group_of = {image_id: n for n, group in enumerate(groups) for image_id in group}
    members: dict[Any, list[ImageFacts]] = defaultdict(list)
    for fact in labeled:
        members[group_of.get(fact.image_id, fact.image_id)].append(fact)
    units = []
    for facts in members.values():
        kept = [fact for fact in facts if fact.split in keep]
        free = [fact for fact in facts if fact.split not in keep]
        units += [_Unit(image_ids=[fact.image_id], class_ids=set(fact.class_ids), fixed=fact.split) for fact in kept]
        if free:
            counts = Counter(fact.split for fact in kept)
            join = max(sorted(counts), key=lambda s: counts[s]) if counts else None
            units.append(_Unit(image_ids=[f.image_id for f in free], class_ids={c for f in free for c in f.class_ids},
                               fixed=join))
    units.sort(key=lambda unit: str(min(unit.image_ids, key=str)))
    return units


def _unit_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """n units shared by weight with the largest-remainder method (counts sum to exactly n)."""
    total = sum(weights.values())
    if total <= 0:
        return {"train": n, "val": 0, "test": 0}
    exact = {s: n * weights[s] / total for s in TRAINING_SPLITS}
    counts = {s: int(math.floor(exact[s])) for s in TRAINING_SPLITS}
    for s in sorted(TRAINING_SPLITS, key=lambda s: exact[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def _stratified_allocate(free: list[_Unit], class_index: dict[uuid.UUID, int], counts: dict[str, int],
                         seed: int) -> None:
    """Iterative stratification (iterstrat) in two stages: test off the whole, then val off the rest.
    Used for single-label too: on one-hot rows it is per-class proportional allocation and, unlike
    sklearn's StratifiedShuffleSplit, accepts classes with a single image."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    remaining = list(range(len(free)))
    # At least two columns: iterstrat refuses a single column (it is then "binary", not multi-label).
    labels = np.zeros((len(free), max(2, len(class_index))), dtype=int)
    for row, unit in enumerate(free):
        for class_id in unit.class_ids:
            labels[row, class_index[class_id]] = 1
    for split in ("test", "val"):
        take = counts[split]
        if take <= 0 or not remaining:
            continue
        if take >= len(remaining):
            chosen, remaining = remaining, []
        else:
            splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=take, random_state=seed)
            keep_idx, take_idx = next(splitter.split(np.zeros(len(remaining)), labels[remaining]))
            chosen, remaining = _exact_size([remaining[i] for i in take_idx], [remaining[i] for i in keep_idx],
                                            take, labels, np.random.default_rng(seed))
        for i in chosen:
            free[i].split = split
    for i in remaining:
        free[i].split = "train"


def _exact_size(chosen: list[int], rest: list[int], take: int, labels: np.ndarray,
                rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Bring iterstrat's pick to exactly `take` rows: its sizes drift on small sets (asked for 1 of 6
    it may return 0). Rows move one at a time, each time the one whose classes the pick most lacks
    (or has most in excess) against its proportional share; ties are broken by the seed."""
    chosen, rest = list(chosen), list(rest)
    share = labels[chosen + rest].sum(axis=0) * take / max(1, len(chosen) + len(rest))
    while len(chosen) != take:
        need = share - (labels[chosen].sum(axis=0) if chosen else 0)
        if len(chosen) < take:
            scores = labels[rest] @ need + rng.random(len(rest)) * 1e-6
            chosen.append(rest.pop(int(np.argmax(scores))))
        else:
            scores = labels[chosen] @ need + rng.random(len(chosen)) * 1e-6
            rest.append(chosen.pop(int(np.argmin(scores))))
    return chosen, rest


def _enforce_minimums(units: list[_Unit], ratios: dict[str, float], min_per_class: int,
                      seed: int) -> list[dict[str, Any]]:
    """Move free train units into val/test until each class has `min_per_class` images there, where
    the class has enough: the minimum in each evaluation split plus one image for train, and as
    many independent units (a near-duplicate group counts once) as evaluation splits plus one.
    Returns the minimums left unmet, each with its reason."""
    eval_splits = [s for s in ("val", "test") if ratios[s] > 0]
    if min_per_class <= 0 or not eval_splits:
        return []
    counts: dict[uuid.UUID, Counter] = defaultdict(Counter)
    for unit in units:
        for class_id in unit.class_ids:
            counts[class_id][unit.split] += len(unit.image_ids)
    unit_counts = Counter(class_id for unit in units for class_id in unit.class_ids)
    rng = random.Random(seed)
    order = {id(unit): rng.random() for unit in units}
    unmet = []
    # Each class's units once (not a pass over every unit per class and split: 40 passes over
    # 100,000 units at 20 classes); _fill checks their current split itself.
    units_of: dict[uuid.UUID, list[_Unit]] = defaultdict(list)
    for unit in units:
        for class_id in unit.class_ids:
            units_of[class_id].append(unit)
    for class_id in sorted(counts, key=str):
        enough = (sum(counts[class_id].values()) >= min_per_class * len(eval_splits) + 1
                  and unit_counts[class_id] >= len(eval_splits) + 1)
        for split in eval_splits:
            if enough:
                _fill(units_of[class_id], counts, class_id, split, min_per_class, order)
            if counts[class_id][split] < min_per_class:
                reason = ("no train image of the class can move there (kept in place, or needed in train)" if enough
                          else "too few independent images (a near-duplicate group counts once) to fill val "
                               "and test and keep one for training")
                unmet.append({"class_id": str(class_id), "split": split, "have": counts[class_id][split],
                              "want": min_per_class, "reason": reason})
    return unmet


def _fill(units: list[_Unit], counts: dict, class_id: uuid.UUID, split: str, minimum: int, order: dict) -> None:
    """Move the class's smallest free train units to `split` until it has `minimum` images there."""
    candidates = sorted((u for u in units if u.fixed is None and u.split == "train" and class_id in u.class_ids),
                        key=lambda u: (len(u.image_ids), len(u.class_ids), order[id(u)]))
    for unit in candidates:
        if counts[class_id][split] >= minimum or counts[class_id]["train"] - len(unit.image_ids) < 1:
            break
        unit.split = split
        for moved_class in unit.class_ids:
            counts[moved_class]["train"] -= len(unit.image_ids)
            counts[moved_class][split] += len(unit.image_ids)


def _split_units(units: list[_Unit], ratios: dict[str, float], seed: int, min_per_class: int) -> list[dict]:
    for unit in units:
        unit.split = unit.fixed
    free = [unit for unit in units if unit.fixed is None]
    if free:
        total_images = sum(len(unit.image_ids) for unit in units)
        fixed_images = Counter()
        for unit in units:
            if unit.fixed:
                fixed_images[unit.fixed] += len(unit.image_ids)
        # What each split still lacks of its share; the free units fill those gaps in proportion.
        gaps = {s: max(0.0, ratios[s] * total_images - fixed_images[s]) for s in TRAINING_SPLITS}
        if sum(gaps.values()) <= 0:
            gaps = dict(ratios)
        class_ids = sorted({c for unit in free for c in unit.class_ids}, key=str)
        _stratified_allocate(free, {c: i for i, c in enumerate(class_ids)}, _unit_counts(len(free), gaps), seed)
    return _enforce_minimums(units, ratios, min_per_class, seed)


def _write_splits(session: Session, dataset_id: uuid.UUID, current: dict[uuid.UUID, str],
                  planned: dict[uuid.UUID, str]) -> int:
    by_split: dict[str, list[uuid.UUID]] = defaultdict(list)
    for image_id, split in planned.items():
        if current.get(image_id) != split:
            by_split[split].append(image_id)
    for split, image_ids in by_split.items():
        for start in range(0, len(image_ids), UPDATE_CHUNK):
            session.execute(
                update(ClsDatasetImage)
                .where(ClsDatasetImage.dataset_id == dataset_id,
                       ClsDatasetImage.image_id.in_(image_ids[start:start + UPDATE_CHUNK]))
                .values(split=split)
            )
    return sum(len(ids) for ids in by_split.values())


def _plan(session: Session, dataset: ClsDataset, *, ratios: dict[str, float], seed: int, keep: set[str],
          min_per_class: int, threshold: int, storage) -> tuple[dict[str, Any], dict, dict]:
    """Decide every labeled image's split, writing nothing: (summary, {image id: split} planned,
    {image id: split} now). `changed` counts the images whose split the plan moves."""

    facts = dataset_image_facts(session, dataset.id)
    labeled = [fact for fact in facts if fact.class_ids]
    groups = duplicate_groups(labeled, threshold, session=session, storage=storage)
    units = _build_units(labeled, groups, keep)
    unmet = _split_units(units, ratios, seed, min_per_class)
    current = {f.image_id: f.split for f in facts}
    planned = {image_id: unit.split for unit in units for image_id in unit.image_ids}
    assigned = Counter(planned.values())
    names = dict(session.execute(select(ClsClass.id, ClsClass.name)).tuples().all())
    for item in unmet:
        item["class"] = names.get(uuid.UUID(item["class_id"]), item["class_id"])
    return {
        "dataset_id": str(dataset.id), "ratios": ratios, "seed": seed, "labeled": len(labeled),
        "assigned": {s: assigned.get(s, 0) for s in TRAINING_SPLITS},
        "changed": sum(1 for image_id, split in planned.items() if current.get(image_id) != split),
        "kept": sum(len(u.image_ids) for u in units if u.fixed),
        "duplicate_groups": len(groups), "near_duplicate_threshold": threshold,
        "straddling_duplicates": straddling_report(labeled, groups, planned),
        "unlabeled_untouched": len(facts) - len(labeled), "unmet_minimums": unmet,
    }, planned, current


def _apply(session: Session, dataset: ClsDataset, planned: dict, current: dict) -> None:
    """Write a plan (the dataset's write lock and revision only around the writes)."""
    lock_dataset(session, dataset.id)
    _write_splits(session, dataset.id, current, planned)


@requires("admin", "splitting a dataset")
def auto_split(*, session: Session, actor: User, dataset_id: uuid.UUID, ratios: dict[str, Any] | None = None,
               seed: int = 0, keep_existing_val_test: bool = False, min_per_class: int = 1,
               near_duplicate_threshold: int | None = None, storage=None) -> dict[str, Any]:
    """Assign every labeled image to train/val/test, stratified by class, reproducibly for a seed.

    ratios default to the dataset's own; with keep_existing_val_test images already in val or test
    stay there (and their duplicates join them). near_duplicate_threshold: see resolve_threshold.
    Returns a summary (counts, unmet minimums)."""
    dataset = get_dataset(session, dataset_id)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a whole number ≥ 0, not {seed!r}")
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 0:
        raise InvalidInput(f"min_per_class must be a whole number ≥ 0, not {min_per_class!r}")
    threshold = resolve_threshold(near_duplicate_threshold)
    normalized = normalize_ratios(ratios if ratios is not None else dataset.split_ratios)
    keep = {"val", "test"} if keep_existing_val_test else set()
    summary, planned, current = _plan(session, dataset, ratios=normalized, seed=seed, keep=keep,
                                      min_per_class=min_per_class, threshold=threshold, storage=storage)
    _apply(session, dataset, planned, current)
    return summary


@requires("admin", "splitting a dataset")
def assign_unassigned(*, session: Session, actor: User, dataset_id: uuid.UUID, seed: int = 0,
                      storage=None) -> dict[str, Any]:
    """Give the labeled images that have no split one, by the dataset's ratios and stratified,
    leaving every assigned image where it is, whoever assigned it (a person, an archive's folders, an
    earlier split): a new image joins the split of its duplicates."""
    dataset = get_dataset(session, dataset_id)
    summary, planned, current = _unassigned(session, dataset, seed, storage)
    _apply(session, dataset, planned, current)
    return summary


def plan_unassigned(*, session: Session, dataset_id: uuid.UUID, storage=None) -> tuple[dict[str, Any], dict]:
    """What assign_unassigned would do, written nowhere: (summary, {image id: split} of every labeled
    image), for the warnings shown before a version is made."""
    summary, planned, _current = _unassigned(session, get_dataset(session, dataset_id), 0, storage)
    return summary, planned


def _unassigned(session: Session, dataset: ClsDataset, seed: int, storage):
    return _plan(session, dataset, ratios=normalize_ratios(dataset.split_ratios), seed=seed, keep=set(TRAINING_SPLITS),
                 min_per_class=0, threshold=resolve_threshold(None), storage=storage)


@requires("admin", "setting splits")
def assign_split(*, session: Session, actor: User, dataset_id: uuid.UUID, image_ids: list[uuid.UUID],
                 split: str) -> int:
    """Put the given images of the dataset in one split (or 'unassigned'); returns how many."""
    get_dataset(session, dataset_id)
    if split not in SPLITS:
        raise InvalidInput(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    lock_dataset(session, dataset_id)
    wanted = set(image_ids)
    if not wanted:
        raise InvalidInput("no images given")
    present: set[uuid.UUID] = set()
    ids = list(wanted)
    for start in range(0, len(ids), UPDATE_CHUNK):
        chunk = ids[start:start + UPDATE_CHUNK]
        present.update(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(chunk))))
    missing = wanted - present
    if missing:
        shown = ", ".join(sorted(map(str, missing))[:5])
        raise NotFound(f"{len(missing)} image(s) are not in this dataset: {shown}")
    for start in range(0, len(ids), UPDATE_CHUNK):
        session.execute(update(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(ids[start:start + UPDATE_CHUNK])
        ).values(split=split))
    return len(ids)


def split_stats(*, session: Session, dataset_id: uuid.UUID) -> dict[str, Any]:
    """Image counts per split (all images and labeled ones) and per class and split.

    Three GROUP BYs in the database: loading every image's facts for these counts took 18 s and
    600 MB at 200,000 images (bench/bench_scale.py)."""
    dataset = get_dataset(session, dataset_id)
    split = func.coalesce(ClsDatasetImage.split, "unassigned")
    in_dataset = ClsDatasetImage.dataset_id == dataset_id
    all_images = Counter(dict(session.execute(
        select(split, func.count()).where(in_dataset).group_by(split)).tuples().all()))
    has_label = exists().where(ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == ClsDatasetImage.image_id)
    labeled = Counter(dict(session.execute(
        select(split, func.count()).where(in_dataset, has_label).group_by(split)).tuples().all()))
    per_class: dict[uuid.UUID, Counter] = defaultdict(Counter)
    for class_id, split_name, count in session.execute(
        select(ClsLabel.class_id, split, func.count())
        .join(ClsDatasetImage, and_(ClsDatasetImage.dataset_id == ClsLabel.dataset_id,
                                    ClsDatasetImage.image_id == ClsLabel.image_id))
        .where(ClsLabel.dataset_id == dataset_id).group_by(ClsLabel.class_id, split)
    ).tuples():
        per_class[class_id][split_name] += count
    classes = {row.id: row for row in session.scalars(select(ClsClass).where(ClsClass.id.in_(list(per_class))))}
    order = SPLITS
    rows = []
    for class_id, counts in per_class.items():
        row = classes.get(class_id)
        rows.append({"class_id": str(class_id), "name": row.name if row else str(class_id),
                     "color": row.color if row else "#999999", **{s: counts.get(s, 0) for s in order},
                     "total": sum(counts.values())})
    rows.sort(key=lambda r: r["name"])
    labeled_assigned = sum(labeled[s] for s in TRAINING_SPLITS)
    return {
        "dataset_id": str(dataset.id), "ratios": normalize_ratios(dataset.split_ratios),
        "images": {s: all_images.get(s, 0) for s in order},
        "labeled": {s: labeled.get(s, 0) for s in order},
        "actual_ratios": {s: (labeled[s] / labeled_assigned if labeled_assigned else 0.0) for s in TRAINING_SPLITS},
        "per_class": rows,
    }
