"""The image library's queries and edits: the Images page's filters and sorts, one image's detail,
folders, tags and deletion (objects go only once the deletion commits). Images come in through
core.library.ingest."""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, delete, exists, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from core import limits
from core.datasets.dataset import detach_images_everywhere
from core.errors import InvalidInput, NotFound
from core.library.object_hooks import delete_on_commit
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsImage, ClsImageTag, ClsLabel
from core.permissions import audit, requires
from core.stats import library_size
from core.users import User
from core.vocabulary import IMAGE_SOURCES, IMAGE_STATUSES

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 255
MAX_TAGS = 50
MAX_TAG_CHARS = 100
SORTS = {
    "date_desc": (ClsImage.created_at.desc(),), "date_asc": (ClsImage.created_at.asc(),),
    "name_asc": (ClsImage.original_filename.asc(),), "name_desc": (ClsImage.original_filename.desc(),),
    "size_desc": (ClsImage.file_size_bytes.desc(),), "size_asc": (ClsImage.file_size_bytes.asc(),),
}


def clean_tags(tags: Iterable[str] | str | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    cleaned: list[str] = []
    for tag in tags:
        tag = "".join(ch for ch in str(tag) if unicodedata.category(ch)[0] != "C").strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(f"tag {tag[:30]!r}… is longer than {MAX_TAG_CHARS} characters")
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"{len(cleaned)} tags given; at most {MAX_TAGS}")
    return cleaned


def clean_folder(folder: str | None) -> str | None:
    if folder is None:
        return None
    folder = "".join(ch for ch in str(folder) if unicodedata.category(ch)[0] != "C").strip().strip("/")
    if len(folder) > MAX_FILENAME_CHARS:
        raise InvalidInput(f"folder name is longer than {MAX_FILENAME_CHARS} characters")
    return folder or None



# ---------------------------------------------------------------- library queries


@dataclass
class ImageFilters:
    """What the Images page filters by; `to_params`/`from_params` round-trip it through a URL."""

    search: str | None = None
    statuses: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # any of these

    def to_params(self) -> dict[str, str]:
        params = {"q": self.search or "", "status": ",".join(self.statuses), "source": ",".join(self.sources),
                  "folder": "|".join(self.folders), "tag": "|".join(self.tags)}
        return {key: value for key, value in params.items() if value}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ImageFilters:
        def split(key: str, sep: str) -> list[str]:
            return [part for part in str(params.get(key) or "").split(sep) if part]

        return cls(search=(params.get("q") or None), statuses=[s for s in split("status", ",") if s in IMAGE_STATUSES],
                   sources=[s for s in split("source", ",") if s in IMAGE_SOURCES], folders=split("folder", "|"),
                   tags=split("tag", "|"))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _like_pattern(text_: str) -> str:
    escaped = text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _tags_any(session: Session, tags: list[str]):
    if _dialect(session) == "postgresql":
        from sqlalchemy import type_coerce
        from sqlalchemy.dialects.postgresql import ARRAY, JSONB, array

        return type_coerce(ClsImage.tags, JSONB).has_any(array(tags, type_=ARRAY(Text)))
    each = func.json_each(ClsImage.tags).table_valued("value").alias("tag_each")
    return exists().select_from(each).where(each.c.value.in_(tags))


def _tags_like(session: Session, pattern: str):
    if _dialect(session) == "postgresql":
        return cast(ClsImage.tags, Text).ilike(pattern, escape="\\")
    each = func.json_each(ClsImage.tags).table_valued("value").alias("tag_like")
    return exists().select_from(each).where(literal_column("tag_like.value").ilike(pattern, escape="\\"))


def filter_clauses(session: Session, filters: ImageFilters) -> list:
    clauses = []
    if filters.search and filters.search.strip():
        pattern = _like_pattern(filters.search.strip())
        clauses.append(or_(ClsImage.original_filename.ilike(pattern, escape="\\"), _tags_like(session, pattern)))
    if filters.statuses:
        clauses.append(ClsImage.status.in_(filters.statuses))
    if filters.sources:
        clauses.append(ClsImage.source.in_(filters.sources))
    if filters.folders:
        clauses.append(ClsImage.folder.in_(filters.folders))
    if filters.tags:
        clauses.append(_tags_any(session, filters.tags))
    return clauses


def count_ahead(filters: ImageFilters) -> int:
    """How many matches past the page shown the Images page counts exactly before saying "N+"."""
    return limits.COUNT_AHEAD_SEARCH if filters.search and filters.search.strip() else limits.COUNT_AHEAD


def list_images(*, session: Session, filters: ImageFilters, sort: str = "date_desc", limit: int = limits.PAGE_SIZE,
                offset: int = 0, count_limit: int | None = None) -> tuple[list[ClsImage], int]:
    """One page of the library and the number of images matching the filters. With `count_limit` the
    counting stops there: the number is count_limit + 1 when more match."""
    if sort not in SORTS:
        raise InvalidInput(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    if limit < 1 or limit > 1000 or offset < 0:
        raise InvalidInput("limit must be 1–1000 and offset ≥ 0")
    clauses = filter_clauses(session, filters)
    rows = session.scalars(select(ClsImage).where(*clauses).order_by(*SORTS[sort], ClsImage.id)
                           .limit(limit).offset(offset)).all()
    return list(rows), _count(session, filters, clauses, count_limit)


def _count(session: Session, filters: ImageFilters, clauses: list, count_limit: int | None) -> int:
    """How many images match, stopping at count_limit + 1. Tags alone are counted from cls_image_tags'
    index (each image once): through the GIN index every match is read from the table to recheck it,
    50-86 ms for 10,001 of 15,000 matches at 1,000,000 images. Otherwise the rows counted select no
    column, so Postgres counts an index's matches on pages known all-visible without reading them."""
    if filters.tags and filters == ImageFilters(tags=filters.tags):
        matching = select(ClsImageTag.image_id).where(ClsImageTag.tag.in_(filters.tags)).distinct()
    else:
        matching = select(literal_column("1").label("one")).select_from(ClsImage).where(*clauses)
    if count_limit is not None:
        matching = matching.limit(count_limit + 1)
    return int(session.scalar(select(func.count()).select_from(matching.subquery())) or 0)


def matching_image_ids(*, session: Session, filters: ImageFilters) -> list[uuid.UUID]:
    """Every image matching the filters ("select all matching")."""
    return list(session.scalars(select(ClsImage.id).where(*filter_clauses(session, filters))))


def image_filter_options(*, session: Session) -> dict[str, Any]:
    """The plan's get_cls_image_filter_options: the values present in the library, read now."""
    def distinct(column) -> list[str]:
        """The column's values by a loose index scan: from each value, the next one through the column's
        index (one probe per value). SELECT DISTINCT read the whole index: 130-210 ms per column at
        1,000,000 images (bench/bench_scale.py); a few probes now, on Postgres and SQLite alike."""
        walk = select(func.min(column).label("value")).cte("walk", recursive=True)
        step = select(func.min(column)).where(column > walk.c.value).scalar_subquery()
        walk = walk.union_all(select(step).where(walk.c.value.is_not(None)))
        return sorted(v for v in session.scalars(select(walk.c.value).where(walk.c.value.is_not(None))) if v)

    # Tags from the table the database keeps one row per image and tag (core.models.library_aggregates):
    # reading every image's list took 1.5-1.9 s at 1,000,000 images; exact and current either way.
    return {"statuses": distinct(ClsImage.status), "sources": distinct(ClsImage.source),
            "folders": distinct(ClsImage.folder), "tags": distinct(ClsImageTag.tag),
            "total_count": library_size(session=session)}


def get_image(*, session: Session, image_id: uuid.UUID) -> ClsImage:
    image = session.get(ClsImage, image_id)
    if image is None:
        raise NotFound(f"no image {image_id}")
    return image


def image_detail(*, session: Session, image_id: uuid.UUID) -> dict[str, Any]:
    """An image with the datasets it is in and its labels there."""
    image = get_image(session=session, image_id=image_id)
    datasets = session.execute(
        select(ClsDataset.id, ClsDataset.name, ClsDatasetImage.split, ClsDatasetImage.status)
        .join(ClsDatasetImage, ClsDatasetImage.dataset_id == ClsDataset.id)
        .where(ClsDatasetImage.image_id == image_id).order_by(ClsDataset.name)).all()
    labels = session.execute(
        select(ClsDataset.name, ClsClass.name, ClsLabel.confidence, ClsLabel.is_ai_generated)
        .join(ClsDataset, ClsDataset.id == ClsLabel.dataset_id).join(ClsClass, ClsClass.id == ClsLabel.class_id)
        .where(ClsLabel.image_id == image_id).order_by(ClsDataset.name, ClsClass.name)).all()
    return {
        "image": image,
        "datasets": [{"id": d[0], "name": d[1], "split": d[2], "status": d[3]} for d in datasets],
        "labels": [{"dataset": lb[0], "class": lb[1], "confidence": lb[2], "ai": lb[3]} for lb in labels],
    }


# ---------------------------------------------------------------- edits and bulk actions

_UNSET: Any = object()


@requires("admin", "editing images")
def update_image(*, session: Session, actor: User, image_id: uuid.UUID, folder=_UNSET, tags=_UNSET,
                 status=_UNSET) -> ClsImage:
    image = get_image(session=session, image_id=image_id)
    if folder is not _UNSET:
        image.folder = clean_folder(folder)
    if tags is not _UNSET:
        image.tags = clean_tags(tags)
    if status is not _UNSET:
        if status not in IMAGE_STATUSES:
            raise InvalidInput(f"unknown status {status!r}; one of {', '.join(IMAGE_STATUSES)}")
        image.status = status
    session.flush()
    return image


def _chunks(ids: Iterable[uuid.UUID], size: int = 500) -> Iterator[list[uuid.UUID]]:
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


@requires("admin", "setting folders")
def set_folder(*, session: Session, actor: User, image_ids: Iterable[uuid.UUID], folder: str | None) -> int:
    folder, count = clean_folder(folder), 0
    for chunk in _chunks(image_ids):
        count += session.execute(update(ClsImage).where(ClsImage.id.in_(chunk)).values(folder=folder)).rowcount
    return count


@requires("admin", "tagging images")
def update_tags(*, session: Session, actor: User, image_ids: Iterable[uuid.UUID], add: Iterable[str] = (),
                remove: Iterable[str] = (), replace: Iterable[str] | None = None) -> int:
    """Add and remove tags, or replace them all; returns how many images changed."""
    add, remove = clean_tags(list(add)), set(clean_tags(list(remove)))
    replacement = clean_tags(list(replace)) if replace is not None else None
    changed = 0
    for chunk in _chunks(image_ids):
        for image in session.scalars(select(ClsImage).where(ClsImage.id.in_(chunk))):
            tags = list(replacement) if replacement is not None else [t for t in image.tags or [] if t not in remove]
            tags += [t for t in add if t not in tags]
            if len(tags) > MAX_TAGS:
                raise InvalidInput(f"image {image.original_filename!r} would have {len(tags)} tags; at most {MAX_TAGS}")
            if tags != list(image.tags or []):
                image.tags, changed = tags, changed + 1
    session.flush()
    return changed


@requires("admin", "deleting images")
def delete_images(*, session: Session, actor: User, storage, image_ids: Iterable[uuid.UUID]) -> int:
    """Delete images: their rows now (dataset memberships and labels cascade, counts moved by what was removed), their
    original and thumbnail objects once the transaction commits. Admins only; audited."""
    deleted = _delete_images(session=session, actor=actor, storage=storage, image_ids=image_ids)
    if deleted:
        audit(session=session, actor=actor, action="delete_images", target_type="image", row_count=deleted)
    return deleted


def _delete_images(*, session: Session, actor: User, storage, image_ids: Iterable[uuid.UUID]) -> int:

    ids = list(dict.fromkeys(image_ids))
    # Dataset memberships and their labels go through the datasets service first: it locks the
    # datasets and classes and keeps every denormalized count exact.
    detach_images_everywhere(session=session, actor=actor, image_ids=ids)
    deleted = 0
    for chunk in _chunks(ids):
        rows = session.execute(select(ClsImage.id, ClsImage.storage_path, ClsImage.thumbnail_path)
                               .where(ClsImage.id.in_(chunk))).all()
        if not rows:
            continue
        found = [row[0] for row in rows]
        # Explicit delete rather than ON DELETE CASCADE: SQLite cascades only with its foreign_keys
        # pragma, which a foreign engine may not set.
        session.execute(delete(ClsLabel).where(ClsLabel.image_id.in_(found)))
        deleted += session.execute(delete(ClsImage).where(ClsImage.id.in_(found))).rowcount
        delete_on_commit(session, storage, [key for row in rows for key in row[1:] if key])
    session.flush()
    return deleted

