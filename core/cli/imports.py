"""`python -m core import zip|products|cutouts|od|preview`: labeled archives and the platform's sources.

Imports run in this process (no worker needed) and print their summary: images imported, duplicates
skipped, classes created, labels written, per-file errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import BatchReport
from core.datasets.dataset import create_dataset, get_dataset_by_name
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.imports.archive import ClassMapping, preview_archive, run_archive_import
from core.imports.archive_conflicts import CONFLICT_CHOICES
from core.imports.sources import (
    CutoutFilters,
    ImportFromCutoutsRequest,
    ImportFromODRequest,
    ImportFromProductsRequest,
    ODImageFilters,
    ProductFilters,
    preview_source_import,
    run_source_import,
)
from core.models import ClsClass
from core.users import operator_user


def register(subparsers) -> None:
    imports = subparsers.add_parser("import", help="import labeled archives, products, cutouts, OD images")
    sub = imports.add_subparsers(dest="import_command", required=True, parser_class=subparsers._parser_class)

    preview = sub.add_parser("preview", help="what a ZIP holds: format, classes, splits, problems, the same "
                                             "image under different classes")
    preview.add_argument("file")
    preview.set_defaults(handler=cmd_preview)

    archive = sub.add_parser("zip", help="import a labeled ZIP (folders per class, splits, or CSV)")
    archive.add_argument("file")
    archive.add_argument("--map", action="append", default=[], metavar="SRC=DST",
                         help="put source class SRC into class DST (created if missing)")
    archive.add_argument("--skip", action="append", default=[], metavar="SRC", help="do not import class SRC")
    archive.add_argument("--conflicts", choices=CONFLICT_CHOICES, default="first",
                         help="the same image under different classes (single-label dataset): label every copy "
                              "with the first copy's class in archive order, or label none; reported either way")
    _dataset_options(archive, required=True)
    archive.set_defaults(handler=cmd_zip)

    products = sub.add_parser("products", help="import product frames")
    products.add_argument("--label", default="category", choices=["category", "brand", "product_name", "manual"])
    products.add_argument("--types", default="synthetic,real", help="comma-separated: synthetic,real,augmented")
    products.add_argument("--max-frames", type=int, default=5, help="most images per product")
    products.add_argument("--status", help="only products with this status (e.g. matched)")
    products.add_argument("--category", action="append", default=[])
    products.add_argument("--brand", action="append", default=[])
    products.add_argument("--product-id", action="append", dest="ids")
    _source_options(products)

    cutouts = sub.add_parser("cutouts", help="import cutouts")
    cutouts.add_argument("--label", default="matched_product_category",
                         choices=["matched_product_category", "matched_product_brand", "manual"])
    cutouts.add_argument("--include-unmatched", action="store_true", help="also cutouts with no matched product")
    cutouts.add_argument("--category", action="append", default=[])
    cutouts.add_argument("--brand", action="append", default=[])
    cutouts.add_argument("--cutout-id", action="append", dest="ids")
    _source_options(cutouts)

    od = sub.add_parser("od", help="import object-detection images (unlabeled)")
    od.add_argument("--folder")
    od.add_argument("--od-image-id", action="append", dest="ids")
    _source_options(od)


def _dataset_options(parser, required: bool) -> None:
    parser.add_argument("--dataset", required=required, help="dataset name to add (and label) images in")
    parser.add_argument("--create", action="store_true", help="create the dataset when missing")
    parser.add_argument("--task", default="single_label", choices=["single_label", "multi_label"])
    parser.add_argument("--keep-duplicates", action="store_true", help="store byte-identical images again")


def _source_options(parser) -> None:
    _dataset_options(parser, required=False)
    parser.add_argument("--preview", action="store_true", help="only print the counts, import nothing")
    parser.set_defaults(handler=cmd_source)


def _dataset_id(args) -> str | None:
    """The named dataset's id; with --create, made when missing."""
    if not args.dataset:
        return None

    with session_scope() as session:
        try:
            return str(get_dataset_by_name(session=session, name=args.dataset).id)
        except NotFound:
            if not args.create:
                raise NotFound(f"no dataset named {args.dataset!r}; add --create to make it") from None
        return str(create_dataset(session=session, actor=operator_user(), name=args.dataset, task_type=args.task).id)


def _archive_path(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise InvalidInput(f"{value}: no such file")
    return path


def cmd_preview(args) -> dict:
    with session_scope() as session:
        return preview_archive(_archive_path(args.file), session=session)


def _mapping(args) -> list:
    from sqlalchemy import select

    mapping = [ClassMapping(source_name=name, skip=True) for name in args.skip]
    with session_scope() as session:
        for pair in args.map:
            source, sep, target = pair.partition("=")
            if not sep or not source or not target.strip():
                raise InvalidInput(f"--map {pair!r}: write SRC=DST")
            existing = session.scalar(select(ClsClass.id).where(ClsClass.name == target.strip()))
            mapping.append(ClassMapping(source_name=source, target_class_id=str(existing)) if existing else
                           ClassMapping(source_name=source, create_new=True, new_name=target.strip()))
    return mapping


def cmd_zip(args) -> BatchReport:
    path = _archive_path(args.file)
    mapping = _mapping(args)
    return import_report(run_archive_import(actor=operator_user(), source=path, dataset_id=_dataset_id(args),
                                            class_mapping=mapping, skip_duplicates=not args.keep_duplicates,
                                            conflicts=args.conflicts, progress=_progress))


def import_report(summary: dict) -> BatchReport:
    """An image that was a duplicate or imported before counts as a success (it is in the library
    and the dataset); the errors also list ignored files, so they count only when nothing got in."""
    succeeded = summary["images_imported"] + summary["duplicates_skipped"] + summary["already_imported"]
    return BatchReport(summary, attempted=succeeded + summary["error_count"], succeeded=succeeded)


def _request(args):
    common = {"skip_duplicates": not args.keep_duplicates}
    kind = args.import_command
    if kind == "products":
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        return ImportFromProductsRequest(product_ids=args.ids, label_source=args.label, image_types=types,
                                         max_frames_per_product=args.max_frames, **common,
                                         filters=ProductFilters(status=args.status, categories=args.category,
                                                                brands=args.brand))
    if kind == "cutouts":
        return ImportFromCutoutsRequest(cutout_ids=args.ids, label_source=args.label,
                                        only_matched=not args.include_unmatched, **common,
                                        filters=CutoutFilters(categories=args.category, brands=args.brand))
    return ImportFromODRequest(od_image_ids=args.ids, filters=ODImageFilters(folder=args.folder), **common)


def cmd_source(args) -> dict | BatchReport:
    from pydantic import ValidationError

    try:
        request = _request(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    if args.preview:
        with session_scope() as session:
            return preview_source_import(session=session, kind=args.import_command, request=request)
    request.dataset_id = _dataset_id(args)
    return import_report(run_source_import(actor=operator_user(), kind=args.import_command, request=request,
                                           progress=_progress))


def _progress(done: int, total: int | None = None, message: str | None = None) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{done}/{total or '?'} {message or ''}   ")
