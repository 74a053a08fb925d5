"""Imports from the platform's own tables: Products (frames by type, labeled by category, brand or
product name), Cutouts (labeled by the matched product's category or brand) and OD images (unlabeled).

Each has a preview (how many rows match, how many images would be imported, which classes would be
created) and a run that goes through the shared ingest pipeline. Every image records its source row
(`source_type` product_image / cutout / od_image, `source_id`), so a re-run finds the rows it already
imported and only adds/labels them in the target dataset. Labels live in a dataset: without a target
dataset images are imported unlabeled (the would-be label is kept in the image's metadata).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets.classes import get_or_create_class
from core.datasets.label_space import _fill_from_import
from core.db import session_scope
from core.errors import InvalidInput
from core.imports.batches import ImportItem, ImportSummary, load_dataset, run_items
from core.imports.layouts import class_name_problem
from core.jobs.queue import enqueue
from core.models import ClsClass, ClsImage, Cutout, OdImage, Product, ProductImage
from core.permissions import requires
from core.storage import get_storage
from core.users import User

ImageType = Literal["synthetic", "real", "augmented"]


class ProductFilters(BaseModel):
    status: str | None = None
    categories: list[str] = Field(default_factory=list)
    brands: list[str] = Field(default_factory=list)


class CutoutFilters(BaseModel):
    """Filters on the matched product."""

    categories: list[str] = Field(default_factory=list)
    brands: list[str] = Field(default_factory=list)


class ODImageFilters(BaseModel):
    folder: str | None = None


class ImportFromProductsRequest(BaseModel):
    product_ids: list[str] | None = None
    filters: ProductFilters | None = None
    label_source: Literal["category", "brand", "product_name", "manual"] = "category"
    image_types: list[ImageType] = Field(default_factory=lambda: ["synthetic", "real"], min_length=1)
    max_frames_per_product: int = Field(default=5, ge=1, le=1000)
    skip_duplicates: bool = True
    dataset_id: str | None = None


class ImportFromCutoutsRequest(BaseModel):
    cutout_ids: list[str] | None = None
    filters: CutoutFilters | None = None
    label_source: Literal["matched_product_category", "matched_product_brand", "manual"] = "matched_product_category"
    only_matched: bool = True
    skip_duplicates: bool = True
    dataset_id: str | None = None


class ImportFromODRequest(BaseModel):
    od_image_ids: list[str] | None = None
    filters: ODImageFilters | None = None
    skip_duplicates: bool = True
    dataset_id: str | None = None


@dataclass(frozen=True)
class SourceRow:
    source_id: uuid.UUID
    storage_key: str
    name: str  # shown in errors and used as the original file name
    label: str | None
    meta: dict[str, Any]


def _ids(values: list[str] | None, what: str) -> list[uuid.UUID] | None:
    if values is None:
        return None
    try:
        return [uuid.UUID(str(v)) for v in values]
    except ValueError:
        raise InvalidInput(f"{what} ids must be UUIDs") from None


def spread(items: list, count: int) -> list:
    """At most `count` items, evenly spaced (5 of 36 turntable frames cover the whole turn)."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def product_rows(session: Session, request: ImportFromProductsRequest) -> tuple[int, list[SourceRow]]:
    query = select(Product)
    ids = _ids(request.product_ids, "product")
    if ids is not None:
        query = query.where(Product.id.in_(ids))
    filters = request.filters or ProductFilters()
    if filters.status:
        query = query.where(Product.status == filters.status)
    if filters.categories:
        query = query.where(Product.category.in_(filters.categories))
    if filters.brands:
        query = query.where(Product.brand.in_(filters.brands))
    products = {p.id: p for p in session.scalars(query.order_by(Product.name, Product.id))}
    type_order = {t: i for i, t in enumerate(request.image_types)}
    frames: dict[uuid.UUID, list[ProductImage]] = {}
    product_ids = list(products)
    for start in range(0, len(product_ids), 500):
        for image in session.scalars(select(ProductImage).where(
                ProductImage.product_id.in_(product_ids[start:start + 500]),
                ProductImage.image_type.in_(request.image_types))):
            frames.setdefault(image.product_id, []).append(image)
    rows = []
    for product_id, product in products.items():
        chosen = spread(sorted(frames.get(product_id, []), key=lambda f: (type_order[f.image_type], f.frame_index)),
                        request.max_frames_per_product)
        label = {"category": product.category, "brand": product.brand, "product_name": product.name}.get(
            request.label_source)
        for frame in chosen:
            ext = frame.storage_key.rsplit(".", 1)[-1] if "." in frame.storage_key else "png"
            rows.append(SourceRow(frame.id, frame.storage_key,
                                  f"{product.name}_{frame.image_type}_{frame.frame_index}.{ext}", label,
                                  {"product_id": str(product_id), "image_type": frame.image_type,
                                   "frame_index": frame.frame_index}))
    return len(products), rows


def cutout_rows(session: Session, request: ImportFromCutoutsRequest) -> tuple[int, list[SourceRow]]:
    query = select(Cutout, Product).outerjoin(Product, Cutout.matched_product_id == Product.id)
    ids = _ids(request.cutout_ids, "cutout")
    if ids is not None:
        query = query.where(Cutout.id.in_(ids))
    if request.only_matched:
        query = query.where(Cutout.matched_product_id.is_not(None))
    filters = request.filters or CutoutFilters()
    if filters.categories:
        query = query.where(Product.category.in_(filters.categories))
    if filters.brands:
        query = query.where(Product.brand.in_(filters.brands))
    rows = []
    for cutout, product in session.execute(query.order_by(Cutout.created_at, Cutout.id)):
        label = None
        if product is not None:
            label = {"matched_product_category": product.category,
                     "matched_product_brand": product.brand}.get(request.label_source)
        ext = cutout.storage_key.rsplit(".", 1)[-1] if "." in cutout.storage_key else "jpg"
        rows.append(SourceRow(cutout.id, cutout.storage_key, f"cutout_{cutout.id}.{ext}", label,
                              {"matched_product_id": str(product.id) if product else None}))
    return len(rows), rows


def od_rows(session: Session, request: ImportFromODRequest) -> tuple[int, list[SourceRow]]:
    query = select(OdImage)
    ids = _ids(request.od_image_ids, "OD image")
    if ids is not None:
        query = query.where(OdImage.id.in_(ids))
    filters = request.filters or ODImageFilters()
    if filters.folder:
        query = query.where(OdImage.folder == filters.folder)
    rows = [SourceRow(od.id, od.storage_key, od.filename, None, {"od_folder": od.folder})
            for od in session.scalars(query.order_by(OdImage.created_at, OdImage.id))]
    return len(rows), rows


SOURCES: dict[str, tuple[str, str, Callable]] = {
    # kind: (cls_images.source, cls_images.source_type, row finder)
    "products": ("products_import", "product_image", product_rows),
    "cutouts": ("cutouts_import", "cutout", cutout_rows),
    "od": ("od_import", "od_image", od_rows),
}
REQUESTS = {"products": ImportFromProductsRequest, "cutouts": ImportFromCutoutsRequest, "od": ImportFromODRequest}


def _already_imported(session: Session, source_type: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    found: dict[uuid.UUID, uuid.UUID] = {}
    for start in range(0, len(ids), 500):
        for source_id, image_id in session.execute(select(ClsImage.source_id, ClsImage.id).where(
                ClsImage.source_type == source_type, ClsImage.source_id.in_(ids[start:start + 500]))
                .order_by(ClsImage.created_at)):
            found.setdefault(source_id, image_id)
    return found


def preview_source_import(*, session: Session, kind: str, request: BaseModel) -> dict[str, Any]:
    """Counts the import dialog shows before anything is written."""
    _, source_type, finder = SOURCES[kind]
    matching, rows = finder(session, request)
    done = _already_imported(session, source_type, [r.source_id for r in rows])
    labels = sorted({r.label for r in rows if r.label and not class_name_problem(r.label)}, key=str.lower)
    existing = set(session.scalars(select(ClsClass.name).where(ClsClass.name.in_(labels)))) if labels else set()
    return {
        "source": kind, "matching": matching, "images": len(rows),
        "images_to_import": sum(1 for r in rows if r.source_id not in done),
        "already_imported": sum(1 for r in rows if r.source_id in done),
        "unlabeled_images": sum(1 for r in rows if not r.label),
        "classes": labels, "new_classes": [name for name in labels if name not in existing],
        "refused_labels": sorted({r.label for r in rows if r.label and class_name_problem(r.label)}),
    }


@requires("admin", "importing")
def run_source_import(*, actor: User, kind: str, request: BaseModel | dict, progress=None,
                      storage=None) -> dict[str, Any]:
    if isinstance(request, dict):
        request = REQUESTS[kind](**request)
    storage = storage or get_storage()
    source, source_type, finder = SOURCES[kind]
    summary = ImportSummary()
    with session_scope() as session:
        dataset = load_dataset(session=session, dataset_id=request.dataset_id)
        matching, rows = finder(session, request)
        done = _already_imported(session, source_type, [r.source_id for r in rows])
        class_ids: dict[str, uuid.UUID] = {}
        for label in sorted({r.label for r in rows if r.label} if dataset else set()):
            problem = class_name_problem(label)
            if problem:
                summary.error(label[:120], f"{problem}; its images were imported unlabeled")
                continue
            existed = session.scalar(select(ClsClass.id).where(ClsClass.name == label.strip()))
            class_ids[label] = get_or_create_class(session=session, actor=actor, name=label).id
            if existed is None:
                summary.classes_created.append(label.strip())
        if dataset and class_ids:
            _fill_from_import(session, dataset[0], [class_ids[label] for label in sorted(class_ids)], user_id=actor.id)

    def loader(key: str) -> Callable[[], bytes]:
        return lambda: storage.get(key)

    items = [ImportItem(name=row.name, load=loader(row.storage_key),
                        labels=[class_ids[row.label]] if row.label in class_ids else None,
                        source_type=source_type, source_id=row.source_id, existing_image_id=done.get(row.source_id),
                        meta={**row.meta, **({"source_label": row.label} if row.label else {})})
             for row in rows]
    summary.extra = {"source": kind, "matching": matching}
    run_items(items, actor=actor, total=len(items), source=source, summary=summary, dataset=dataset,
              skip_duplicates=request.skip_duplicates, storage=storage, progress=progress)
    return summary.as_dict()


@requires("admin", "importing")
def start_source_import(*, actor: User, kind: str, request: BaseModel) -> uuid.UUID:
    """Queue the import as a job (its progress shows in the dialog)."""
    with session_scope() as session:
        load_dataset(session=session, dataset_id=request.dataset_id)
    return enqueue(actor=actor, kind=f"{kind}_import", params={"kind": kind, "request": request.model_dump()})


def source_filter_options(*, session: Session) -> dict[str, list[str]]:
    """Values the import dialog offers in its filter boxes."""
    def distinct(column) -> list[str]:
        return sorted(v for v in session.scalars(select(column).distinct()) if v)

    return {"statuses": distinct(Product.status), "categories": distinct(Product.category),
            "brands": distinct(Product.brand), "od_folders": distinct(OdImage.folder)}
