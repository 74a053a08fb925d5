"""The labeling queue: which image comes next in each queue mode, navigation, short reservations so
several labelers get different images, progress, the classes a dataset shows (pinned first, keys
1–0), and the page's actions (save, skip, clear, accept review) made safe to repeat.

Label writes go through core/labeling/labels.py (row lock, revision check, counts); this module decides what
to write and turns a repeated or stale action into a no-op instead of a second write. Actions and
reservations need the labeler role (declared); reading the queue and the cards does not, so a viewer
can look through the images (core.labeling.keyboard_session reads instead of reserving for them).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import exists, func, literal, select, tuple_

from core.errors import InvalidInput, NotFound
from core.labeling.dataset_vectors import awaiting_person
from core.labeling.reservations import LEASE_S, held_by_others, unreserved
from core.labeling.useful_queue import useful_order_ids
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsImage, ClsLabel, utcnow

QUEUE_MODES = ("all", "unlabeled", "review", "random", "low_confidence", "useful")
QueueMode = Literal["all", "unlabeled", "review", "random", "low_confidence", "useful"]
# useful: "most useful next" (core.labeling.useful_queue): images no person has labeled, typical and
# diverse first, the model's uncertain ones first once it has predicted (AI labels)

RESERVATION_S = LEASE_S
"""How long an image shown to one labeler is kept from the others without renewal (core.labeling.reservations)."""

LOW_CONFIDENCE = 0.5
"""Default threshold of the low-confidence queue: AI labels below it, lowest first."""

_RANDOM_SCAN = 256
"""Ids checked per query when walking the seeded random order."""


@dataclass(frozen=True)
class LabelView:
    class_id: uuid.UUID
    class_name: str
    color: str
    confidence: float | None
    is_ai_generated: bool
    ai_model: str | None
    is_reviewed: bool


@dataclass(frozen=True)
class ImageCard:
    """What the page shows for one dataset image (plain values, never ORM objects)."""

    dataset_id: uuid.UUID
    image_id: uuid.UUID
    filename: str
    width: int | None
    height: int | None
    file_size_bytes: int | None
    storage_path: str
    thumbnail_path: str | None
    status: str
    label_revision: int
    labeled_by: uuid.UUID | None
    labels: tuple[LabelView, ...] = field(default_factory=tuple)

    @property
    def class_ids(self) -> list[uuid.UUID]:
        return [label.class_id for label in self.labels]

    @property
    def awaiting_review(self) -> bool:
        return any(label.is_ai_generated and not label.is_reviewed for label in self.labels)


@dataclass(frozen=True)
class Progress:
    labeled: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.labeled / self.total if self.total else 0.0


@dataclass(frozen=True)
class ActionResult:
    """outcome: saved, unchanged (a repeat: nothing written), reviewed, skipped, cleared, conflict."""

    outcome: str
    card: ImageCard
    message: str = ""

    @property
    def moves_on(self) -> bool:
        return self.outcome in ("saved", "unchanged", "reviewed", "skipped")


# ---------------------------------------------------------------- reading


def labeling_dataset(session, dataset_id: uuid.UUID) -> ClsDataset:
    dataset = session.get(ClsDataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def check_mode(mode: str) -> str:
    if mode not in QUEUE_MODES:
        raise InvalidInput(f"unknown queue mode {mode!r}; use one of {', '.join(QUEUE_MODES)}")
    return mode


def image_card(*, session, dataset_id: uuid.UUID, image_id: uuid.UUID) -> ImageCard:
    cards = image_cards(session=session, dataset_id=dataset_id, image_ids=[image_id])
    if not cards:
        raise NotFound(f"image {image_id} is not in this dataset")
    return cards[0]


def image_cards(*, session, dataset_id: uuid.UUID, image_ids: list[uuid.UUID]) -> list[ImageCard]:
    """Cards of several images in two queries, in the order asked (unknown ids left out): the page
    sends the next images' cards ahead so the browser can show the next one before the save returns."""
    if not image_ids:
        return []
    rows = session.execute(
        select(ClsDatasetImage, ClsImage)
        .join(ClsImage, ClsImage.id == ClsDatasetImage.image_id)
        .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(image_ids))
    ).all()
    labels: dict[uuid.UUID, list[LabelView]] = {}
    for label, cls in session.execute(
        select(ClsLabel, ClsClass)
        .join(ClsClass, ClsClass.id == ClsLabel.class_id)
        .where(ClsLabel.dataset_id == dataset_id, ClsLabel.image_id.in_(image_ids))
        .order_by(ClsLabel.confidence.desc().nulls_last(), ClsClass.name)
    ).all():
        labels.setdefault(label.image_id, []).append(
            LabelView(class_id=label.class_id, class_name=cls.display_name or cls.name, color=cls.color,
                      confidence=label.confidence, is_ai_generated=label.is_ai_generated,
                      ai_model=label.ai_model, is_reviewed=label.is_reviewed))
    cards = {
        image.id: ImageCard(
            dataset_id=dataset_id, image_id=image.id, filename=image.original_filename or image.filename,
            width=image.width, height=image.height, file_size_bytes=image.file_size_bytes,
            storage_path=image.storage_path, thumbnail_path=image.thumbnail_path, status=item.status,
            label_revision=item.label_revision, labeled_by=item.labeled_by,
            labels=tuple(labels.get(image.id, ())))
        for item, image in rows
    }
    return [cards[image_id] for image_id in image_ids if image_id in cards]


def progress(*, session, dataset_id: uuid.UUID) -> Progress:
    """Labeled / total from the dataset's counts (kept in step by every label write)."""
    dataset = labeling_dataset(session, dataset_id)
    return Progress(labeled=dataset.labeled_image_count, total=dataset.image_count)


def _awaiting_review(dataset_id):
    return exists().where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == ClsDatasetImage.image_id,
        ClsLabel.is_ai_generated.is_(True), ClsLabel.is_reviewed.is_(False),
    )


def _mode_filter(mode: str, dataset_id: uuid.UUID):
    """The rows a mode walks (before reservations): the queue's definition in one place."""
    if mode == "all":
        return []
    if mode in ("unlabeled", "random"):
        # core.labeling.labels keeps status in step with the labels (pending = no label, not skipped), and
        # the (dataset, status, added_at, image_id) index makes this a range scan, not a sort.
        return [ClsDatasetImage.status == "pending"]
    if mode == "useful":
        return [awaiting_person()]
    return [_awaiting_review(dataset_id)]  # review and low_confidence


def _low_confidence_rows(dataset_id: uuid.UUID, threshold: float):
    """(image_id, lowest unreviewed AI confidence) for images below the threshold."""
    return (
        select(ClsLabel.image_id.label("image_id"), func.min(ClsLabel.confidence).label("conf"))
        .where(ClsLabel.dataset_id == dataset_id, ClsLabel.is_ai_generated.is_(True),
               ClsLabel.is_reviewed.is_(False), ClsLabel.confidence.is_not(None))
        .group_by(ClsLabel.image_id)
        .having(func.min(ClsLabel.confidence) < threshold)
        .subquery()
    )


_random_orders: dict[tuple, list[uuid.UUID]] = {}


def _random_order(session, dataset_id: uuid.UUID, seed: int) -> list[uuid.UUID]:
    """All of the dataset's image ids in a seeded shuffle; cached until the dataset's size changes.
    SQL has no portable seeded ORDER BY (SQLite lacks md5/setseed), so the shuffle is done here."""
    count = labeling_dataset(session, dataset_id).image_count
    key = (dataset_id, seed, count)
    order = _random_orders.get(key)
    if order is None:
        ids = sorted(session.scalars(select(ClsDatasetImage.image_id).where(ClsDatasetImage.dataset_id == dataset_id)))
        random.Random(seed).shuffle(ids)
        for stale in [k for k in _random_orders if k[0] == dataset_id]:
            del _random_orders[stale]
        order = _random_orders[key] = ids
    return order


def _cursor(dataset_id, image_id):
    """(added_at, image_id) of an image as SQL (NULL, so nothing compares, when it is not in the
    dataset). added_at stays in the database: read back and re-bound, SQLite's second-precision
    CURRENT_TIMESTAMP text would no longer compare equal to itself."""
    added = (select(ClsDatasetImage.added_at)
             .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id)
             .scalar_subquery())
    return added, literal(image_id, ClsDatasetImage.image_id.type)


def queue_ids(*, session, dataset_id: uuid.UUID, mode: str = "all", after: uuid.UUID | None = None,
              holder: uuid.UUID | None = None, limit: int = 8, seed: int = 0,
              threshold: float = LOW_CONFIDENCE, exclude: tuple[uuid.UUID, ...] = (),
              now: datetime | None = None) -> list[uuid.UUID]:
    """The next images of a queue after `after` (wrapping round to the start), skipping images
    another labeler holds (except in mode "all") and those in `exclude`."""
    check_mode(mode)
    now = now or utcnow()
    skip = set(exclude) | ({after} if after else set())
    if mode in ("random", "useful"):
        if mode == "useful":
            order = useful_order_ids(session, dataset_id)
        else:
            order = _random_order(session, dataset_id, seed)
        return _ordered_ids(session, dataset_id, mode, order, after, holder, limit, skip, now)
    conditions = [ClsDatasetImage.dataset_id == dataset_id, *_mode_filter(mode, dataset_id)]
    if mode != "all":
        conditions.append(unreserved(holder, now))
    if mode == "low_confidence":
        low = _low_confidence_rows(dataset_id, threshold)
        order = (low.c.conf, ClsDatasetImage.image_id)
        base = select(ClsDatasetImage.image_id).join(low, low.c.image_id == ClsDatasetImage.image_id)
        position = session.execute(select(low.c.conf).where(low.c.image_id == after)).scalar() if after else None
        cursor = (position, after) if position is not None else None
    else:
        order = (ClsDatasetImage.added_at, ClsDatasetImage.image_id)
        base = select(ClsDatasetImage.image_id)
        row = _cursor(dataset_id, after) if after else None
        cursor = tuple(row) if row else None
    query = base.where(*conditions).order_by(*order)
    if skip:
        query = query.where(ClsDatasetImage.image_id.not_in(skip))
    found: list[uuid.UUID] = []
    if cursor:
        found = list(session.scalars(query.where(tuple_(*order) > tuple_(*cursor)).limit(limit)))
    if len(found) < limit:  # wrap round: images left behind earlier in the order
        more = session.scalars(query.limit(limit)).all()
        found += [image_id for image_id in more if image_id not in found][: limit - len(found)]
    return found


def _ordered_ids(session, dataset_id, mode, order, after, holder, limit, skip, now) -> list[uuid.UUID]:
    """The next `limit` images of a precomputed order after `after` that the mode admits and no other
    page holds, checked a chunk of ids at a time (one indexed query each)."""
    start = order.index(after) + 1 if after in order else 0
    rotated = order[start:] + order[:start]
    found: list[uuid.UUID] = []
    for offset in range(0, len(rotated), _RANDOM_SCAN):
        chunk = [image_id for image_id in rotated[offset: offset + _RANDOM_SCAN] if image_id not in skip]
        if not chunk:
            continue
        eligible = set(session.scalars(
            select(ClsDatasetImage.image_id).where(
                ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(chunk),
                *_mode_filter(mode, dataset_id), unreserved(holder, now))
        ))
        found += [image_id for image_id in chunk if image_id in eligible][: limit - len(found)]
        if len(found) >= limit:
            break
    return found


def queue_size(*, session, dataset_id: uuid.UUID, mode: str = "all", threshold: float = LOW_CONFIDENCE,
               holder: uuid.UUID | None = None, now: datetime | None = None) -> int:
    """How many images of the queue this page can get now: those other pages hold are counted out
    (mode "all" shows held images too), so the count and "nothing left" agree."""
    check_mode(mode)
    if mode == "all":
        return labeling_dataset(session, dataset_id).image_count
    # the queue minus what others hold: two index reads (a filtered COUNT read every pending row's lease)
    total = session.scalar(_queue_count(dataset_id, mode, threshold)) or 0
    return total - queue_held_by_others(session=session, dataset_id=dataset_id, mode=mode, holder=holder,
                                        threshold=threshold, now=now)


def queue_counts(*, session, dataset_id: uuid.UUID, mode: str, holder: uuid.UUID | None,
                 threshold: float = LOW_CONFIDENCE, now: datetime | None = None) -> tuple[int, int]:
    """(queue_size, queue_held_by_others) in one go: what this page can get, and what others hold."""
    check_mode(mode)
    if mode == "all":
        return labeling_dataset(session, dataset_id).image_count, 0
    total = session.scalar(_queue_count(dataset_id, mode, threshold)) or 0
    held = queue_held_by_others(session=session, dataset_id=dataset_id, mode=mode, holder=holder,
                                threshold=threshold, now=now)
    return total - held, held


def queue_held_by_others(*, session, dataset_id: uuid.UUID, mode: str, holder: uuid.UUID | None,
                         threshold: float = LOW_CONFIDENCE, now: datetime | None = None) -> int:
    """Images of the queue other labelers hold now (they come back when those pages move on or go idle)."""
    check_mode(mode)
    if mode == "all":
        return 0
    return session.scalar(_queue_count(dataset_id, mode, threshold)
                          .where(held_by_others(holder, now or utcnow()))) or 0


def _queue_count(dataset_id: uuid.UUID, mode: str, threshold: float):
    query = select(func.count()).select_from(ClsDatasetImage).where(
        ClsDatasetImage.dataset_id == dataset_id, *_mode_filter(mode, dataset_id))
    if mode == "low_confidence":
        low = _low_confidence_rows(dataset_id, threshold)
        query = query.join(low, low.c.image_id == ClsDatasetImage.image_id)
    return query


def position(*, session, dataset_id: uuid.UUID, image_id: uuid.UUID) -> int | None:
    """1-based place of an image in the dataset's order (the "n" of "n / N")."""
    cursor = _cursor(dataset_id, image_id)
    before = session.scalar(
        select(func.count()).select_from(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset_id,
            tuple_(ClsDatasetImage.added_at, ClsDatasetImage.image_id) < tuple_(*cursor))
    )
    return (before or 0) + 1


def previous_id(*, session, dataset_id: uuid.UUID, before: uuid.UUID) -> uuid.UUID | None:
    """The image before `before` in the dataset's order (← with no history to go back through)."""
    cursor = _cursor(dataset_id, before)
    return session.scalar(
        select(ClsDatasetImage.image_id)
        .where(ClsDatasetImage.dataset_id == dataset_id,
               tuple_(ClsDatasetImage.added_at, ClsDatasetImage.image_id) < tuple_(*cursor))
        .order_by(ClsDatasetImage.added_at.desc(), ClsDatasetImage.image_id.desc())
        .limit(1)
    )


def datasets_for_labeling(*, session) -> list[tuple[uuid.UUID, str, int, int]]:
    """(id, name, labeled, total) of every dataset, for the page's dataset picker."""
    rows = session.execute(select(ClsDataset.id, ClsDataset.name, ClsDataset.labeled_image_count,
                                  ClsDataset.image_count).order_by(ClsDataset.name)).all()
    return [tuple(row) for row in rows]


# ---------------------------------------------------------------- reservations (core.labeling.reservations)
# The labeling page's own claims, declared: a viewer browses the queue without holding images.


# ---------------------------------------------------------------- classes and pins


# ---------------------------------------------------------------- actions


# ---------------------------------------------------------------- image URLs


