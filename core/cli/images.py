"""Image library commands: `images add PATH...`, `images import-urls URL... | --file F`, `images list`."""

from __future__ import annotations

from pathlib import Path

from core.cli import BatchReport
from core.db import check_connection, session_scope
from core.errors import InvalidInput
from core.imports.urls import import_urls, parse_url_list
from core.library.images import ImageFilters, list_images
from core.library.ingest import ingest_many
from core.models import ClsDataset
from core.users import operator_user

IMAGE_SUFFIXES = {f".{ext}" for ext in ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "heic", "heif", "avif")}


def register(subparsers) -> None:
    images = subparsers.add_parser("images", help="the image library")
    sub = images.add_subparsers(dest="images_command", required=True, parser_class=subparsers._parser_class)

    add = sub.add_parser("add", help="ingest image files or folders (recursively)")
    add.add_argument("paths", nargs="+")
    _target_options(add)
    add.set_defaults(handler=cmd_add)

    urls = sub.add_parser("import-urls", help="download and ingest images from URLs")
    urls.add_argument("urls", nargs="*")
    urls.add_argument("--file", help="a text file (one URL per line) or CSV with a url column")
    _target_options(urls)
    urls.set_defaults(handler=cmd_import_urls)

    listing = sub.add_parser("list", help="list library images")
    listing.add_argument("--search")
    listing.add_argument("--status", action="append", default=[])
    listing.add_argument("--source", action="append", default=[])
    listing.add_argument("--folder", action="append", default=[])
    listing.add_argument("--tag", action="append", default=[])
    listing.add_argument("--sort", default="date_desc")
    listing.add_argument("--limit", type=int, default=48)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(handler=cmd_list)


def _target_options(parser) -> None:
    parser.add_argument("--folder")
    parser.add_argument("--tags", default="", help="comma-separated")
    parser.add_argument("--keep-duplicates", action="store_true", help="import files already in the library")
    parser.add_argument("--dataset", help="also add the images to this dataset (name or id)")


def _dataset_id(value: str | None):
    if not value:
        return None
    import uuid

    from sqlalchemy import select

    with session_scope() as session:
        try:
            found = session.get(ClsDataset, uuid.UUID(value))
        except ValueError:
            found = session.scalars(select(ClsDataset).where(ClsDataset.name == value)).first()
        if found is None:
            raise InvalidInput(f"no dataset {value!r}")
        return found.id


def image_files(paths: list[str]) -> tuple[list[Path], list[dict]]:
    files, errors = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"filename": raw, "status": "rejected", "image_id": None, "duplicate_of": None,
                           "error": "no such file or folder"})
    return files, errors


def cmd_add(args) -> BatchReport:
    check_connection()
    files, missing = image_files(args.paths)
    results = [r.as_dict() for r in ingest_many(items=[(p.name, p) for p in files], actor=operator_user(), folder=args.folder,
                                                 tags=args.tags, skip_duplicates=not args.keep_duplicates,
                                                 dataset_id=_dataset_id(args.dataset))]
    for result, path in zip(results, files, strict=True):
        result["path"] = str(path)
    return _summary(missing + results)


def cmd_import_urls(args) -> BatchReport:
    text = "\n".join(args.urls)
    if args.file:
        try:
            text += "\n" + Path(args.file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.file}: {exc.strerror}") from None
    urls, rejected = parse_url_list(text)
    if not urls and not rejected:
        raise InvalidInput("give URLs as arguments or --file")
    check_connection()
    summary = import_urls(actor=operator_user(), urls=urls, folder=args.folder, tags=args.tags, skip_duplicates=not args.keep_duplicates,
                          dataset_id=_dataset_id(args.dataset)) if urls else {"results": []}
    return _summary(rejected + summary["results"])


def _summary(results: list[dict]) -> BatchReport:
    """A duplicate counts as a success: the image is in the library (exit 1 only when all were refused)."""
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("imported", "duplicate", "rejected")}
    document = {**counts, "imported_ids": [r["image_id"] for r in results if r["status"] == "imported"],
                "results": results}
    return BatchReport(document, attempted=len(results), succeeded=counts["imported"] + counts["duplicate"])


def cmd_list(args) -> dict:
    filters = ImageFilters(search=args.search, statuses=args.status, sources=args.source, folders=args.folder,
                           tags=args.tag)
    with session_scope() as session:
        rows, total = list_images(session=session, filters=filters, sort=args.sort, limit=args.limit,
                                  offset=args.offset)
        return {"total": total, "limit": args.limit, "offset": args.offset, "images": [
            {"id": str(r.id), "filename": r.original_filename, "width": r.width, "height": r.height,
             "size": r.file_size_bytes, "format": r.format, "source": r.source, "folder": r.folder,
             "tags": r.tags, "status": r.status, "sha256": r.file_hash, "phash": r.phash,
             "storage_path": r.storage_path, "thumbnail_path": r.thumbnail_path, "created_at": r.created_at}
            for r in rows]}
