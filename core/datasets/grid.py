"""The dataset grid's query: one page of a dataset's images with their labels, the total matching the
filters, and every matching id (for "select all matching")."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from sqlalchemy import and_, any_, exists, func, select
from sqlalchemy.orm import Session, aliased

from core.errors import InvalidInput
from core.ids import as_uuid
from core.labeling.labels import labels_for_images
from core.models import ClsDataset, ClsDatasetClass, ClsDatasetImage, ClsImage, ClsLabel
from core.vocabulary import IMAGE_STATUSES, SPLITS


@dataclass
class GridFilters:
    class_id: uuid.UUID | None = None
    unlabeled: bool = False
    split: str | None = None
    status: str | None = None
    source: str | None = None  # "ai" or "manual": who made the labels
    reviewed: bool | None = None

    def validate(self) -> GridFilters:
        if self.split is not None and self.split not in SPLITS:
            raise InvalidInput(f"split must be one of {', '.join(SPLITS)}")
        if self.status is not None and self.status not in IMAGE_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(IMAGE_STATUSES)}")
        if self.source not in (None, "ai", "manual"):
            raise InvalidInput("label source must be 'ai' or 'manual'")
        return self


@dataclass
class GridItem:
    image_id: uuid.UUID
    filename: str
    storage_path: str
    thumbnail_path: str | None
    width: int | None
    height: int | None
    split: str | None
    status: str
    label_revision: int
    labels: list = field(default_factory=list)  # ClsLabel rows


def _label_predicates(filters: GridFilters, label=ClsLabel) -> list:
    """What the filters ask of an image's labels, each met by some label of the image. Bare boolean
    columns (not IS TRUE): Postgres then matches them to the partial label indexes."""
    predicates = []
    if filters.class_id is not None:
        predicates.append(label.class_id == filters.class_id)
    if filters.source is not None:
        predicates.append(label.is_ai_generated if filters.source == "ai" else ~label.is_ai_generated)
    if filters.reviewed is not None:
        predicates.append(label.is_reviewed if filters.reviewed else ~label.is_reviewed)
    return predicates


def _filtered(dataset_id: uuid.UUID, filters: GridFilters):
    label = and_(ClsLabel.dataset_id == ClsDatasetImage.dataset_id, ClsLabel.image_id == ClsDatasetImage.image_id)
    conditions = [ClsDatasetImage.dataset_id == dataset_id]
    conditions += [exists().where(label, predicate) for predicate in _label_predicates(filters)]
    if filters.unlabeled:
        conditions.append(~exists().where(label))
    if filters.split:
        conditions.append(ClsDatasetImage.split == filters.split)
    if filters.status:
        conditions.append(ClsDatasetImage.status == filters.status)
    return conditions


def dataset_image_ids(*, session: Session, dataset_id, filters: GridFilters | None = None) -> list[uuid.UUID]:
    """Every image id of the dataset matching the filters (for "select all matching")."""
    conditions = _filtered(as_uuid(dataset_id, "dataset"), (filters or GridFilters()).validate())
    return list(session.scalars(select(ClsDatasetImage.image_id).where(*conditions)
                                .order_by(ClsDatasetImage.added_at, ClsDatasetImage.image_id)).all())


def dataset_grid(*, session: Session, dataset_id, filters: GridFilters | None = None, offset: int = 0,
                 limit: int = 48) -> tuple[int, list[GridItem]]:
    """One page of the dataset's images with their labels, and the total matching the filters."""
    dataset_id = as_uuid(dataset_id, "dataset")
    filters = (filters or GridFilters()).validate()
    conditions = _filtered(dataset_id, filters)
    total = _grid_total(session, dataset_id, filters, conditions)
    # The page's ids first, from the (dataset, added_at, image_id) index alone; only those 48 rows are
    # joined to the library. Offset then joined read every skipped row's image: 180 ms at page 200.
    order = (ClsDatasetImage.added_at, ClsDatasetImage.image_id)
    if _rare_class(session, dataset_id, filters):
        # Its few images by id (their order key from the index alone), then sorted: walking the
        # dataset in order read 8 or more rows per match (a 1 % class at 200,000 images: 80-100 ms at
        # load, 27-31 ms this way).
        carrying = (select(ClsLabel.image_id).where(ClsLabel.class_id == filters.class_id,
                                                    ClsLabel.dataset_id == dataset_id).scalar_subquery())
        conditions = [*_filtered(dataset_id, replace(filters, class_id=None)),
                      ClsDatasetImage.image_id == any_(func.array(carrying))]
    page = (select(*order).where(*conditions).order_by(*order).offset(max(0, offset)).limit(max(1, limit))
            .subquery())
    rows = session.execute(
        select(ClsDatasetImage, ClsImage).join(ClsImage, ClsImage.id == ClsDatasetImage.image_id)
        .join(page, page.c.image_id == ClsDatasetImage.image_id)
        .where(ClsDatasetImage.dataset_id == dataset_id).order_by(*order)
    ).all()
    labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=[link.image_id for link, _ in rows])
    items = [GridItem(image_id=image.id, filename=image.original_filename or image.filename,
                      storage_path=image.storage_path, thumbnail_path=image.thumbnail_path, width=image.width,
                      height=image.height, split=link.split, status=link.status,
                      label_revision=link.label_revision, labels=labels[image.id]) for link, image in rows]
    return total, items


RARE_CLASS_IMAGES = 10_000
RARE_CLASS_SHARE = 1 / 8
"""A class filter on Postgres whose class at most this many images carry, under this share of the
dataset, is paged from the class's images (idx_cls_dataset_images_image_order), not by a walk."""


def _rare_class(session: Session, dataset_id: uuid.UUID, filters: GridFilters) -> bool:
    if filters.class_id is None or session.get_bind().dialect.name != "postgresql":
        return False
    carrying, size = session.execute(
        select(ClsDatasetClass.image_count, ClsDataset.image_count)
        .join(ClsDataset, ClsDataset.id == ClsDatasetClass.dataset_id)
        .where(ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id == filters.class_id)
    ).first() or (None, None)
    return carrying is not None and carrying <= RARE_CLASS_IMAGES and carrying <= size * RARE_CLASS_SHARE


def _grid_total(session: Session, dataset_id: uuid.UUID, filters: GridFilters, conditions: list) -> int:
    """How many images match: no filter, "unlabeled" alone or one class alone, from the dataset's counts
    and its label space's per-class counts (kept exact by every label and membership write,
    core.labeling.counts); other filters are counted. At 200,000 images a COUNT of the whole dataset
    took 40-60 ms, the unlabeled anti-join 200 ms, one class's semi-join 22-60 ms."""
    plain = GridFilters()
    if filters in (plain, GridFilters(unlabeled=True)):
        counts = session.execute(select(ClsDataset.image_count, ClsDataset.labeled_image_count)
                                 .where(ClsDataset.id == dataset_id)).first()
        if counts is not None:
            return counts.image_count - (counts.labeled_image_count if filters.unlabeled else 0)
    if filters.class_id is not None and filters == GridFilters(class_id=filters.class_id):
        carrying = session.scalar(select(ClsDatasetClass.image_count).where(
            ClsDatasetClass.dataset_id == dataset_id, ClsDatasetClass.class_id == filters.class_id))
        if carrying is not None:
            return carrying
    if _label_predicates(filters) and not (filters.unlabeled or filters.split or filters.status):
        return _count_from_labels(session, dataset_id, filters)
    return session.scalar(select(func.count()).select_from(ClsDatasetImage).where(*conditions)) or 0


def _count_from_labels(session: Session, dataset_id: uuid.UUID, filters: GridFilters) -> int:
    """Images with, for each label predicate, a label meeting it, counted in cls_labels alone: a labeled
    image is always in its dataset (removing an image removes its labels), as the unlabeled total
    above also takes. The first predicate walks its partial index (AI, unreviewed) and the others are
    merged in by image: AI labels not reviewed at 200,000 images took 200-330 ms through the dataset's
    rows, 25-55 ms here."""
    if len(_label_predicates(filters)) > 1 and _one_label_per_image(session, dataset_id):
        # Then "each predicate met by some label of the image" is "one label meets them all", and AI
        # labels not reviewed are counted from their own partial index alone (idx_cls_labels_ai_unreviewed):
        # 10,000 of 100,000 labels, 3-5 ms where the merge of the AI and unreviewed indexes took 33 ms.
        return session.scalar(select(func.count()).select_from(ClsLabel).where(
            ClsLabel.dataset_id == dataset_id, *_label_predicates(filters))) or 0
    outer = aliased(ClsLabel)
    first = _label_predicates(filters, label=outer)[0]
    rest = [exists().where(ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == outer.image_id, predicate)
            for predicate in _label_predicates(filters)[1:]]
    matching = select(outer.image_id).where(outer.dataset_id == dataset_id, first, *rest).distinct().subquery()
    return session.scalar(select(func.count()).select_from(matching)) or 0


def _one_label_per_image(session: Session, dataset_id: uuid.UUID) -> bool:
    """No image of the dataset carries two labels: its labels (the per-class counts of its label
    space, which holds every class its labels use) are as many as its labeled images. Both counts
    are kept exact by every label write (core.labeling.counts)."""
    labels, labeled = session.execute(
        select(func.coalesce(func.sum(ClsDatasetClass.image_count), 0), ClsDataset.labeled_image_count)
        .select_from(ClsDataset).outerjoin(ClsDatasetClass, ClsDatasetClass.dataset_id == ClsDataset.id)
        .where(ClsDataset.id == dataset_id).group_by(ClsDataset.labeled_image_count)
    ).first() or (None, None)
    return labels is not None and labels == labeled
