"""`python -m core duplicates`: exact and near-duplicate groups of the library (each member by id, file
name and folder), or one file checked against it (`--check FILE`), or the sub-crop hashes computed for
images ingested before they were stored (`--backfill-crops`)."""

from __future__ import annotations

from pathlib import Path

from core.db import session_scope
from core.errors import InvalidInput
from core.library import duplicates
from core.library.crop_duplicates import backfill_crop_hashes
from core.library.duplicates import CONFIRM_MAX_DISTANCE, DEFAULT_THRESHOLD, MAX_THRESHOLD
from core.models import ClsImage
from core.storage import get_storage
from core.users import operator_user


def register(subparsers) -> None:
    parser = subparsers.add_parser("duplicates", help="exact and near-duplicate groups in the image library")
    parser.add_argument("--threshold", default=str(DEFAULT_THRESHOLD),
                        help=f"largest pHash Hamming distance, 0..{MAX_THRESHOLD} (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--exact-only", action="store_true", help="only groups of byte-identical files")
    parser.add_argument("--no-confirm", action="store_true",
                        help=f"raw pHash groups, without the 256-bit pHash confirmation (≤ {CONFIRM_MAX_DISTANCE})")
    parser.add_argument("--check", metavar="FILE", help="check one image file against the library instead")
    parser.add_argument("--no-crops", action="store_true",
                        help="leave out copies cropped by a few percent per side (the sub-crop hashes)")
    parser.add_argument("--backfill-crops", action="store_true",
                        help="instead: compute the sub-crop hashes of images ingested before they were stored "
                             "(from each thumbnail; resumable)")
    parser.add_argument("--limit", type=int, help="with --backfill-crops: at most this many images")
    parser.set_defaults(handler=cmd_duplicates)


def cmd_duplicates(args) -> dict:
    threshold = duplicates.check_threshold(args.threshold)
    if args.backfill_crops:
        return _backfill(args)
    if args.check:
        path = Path(args.check)
        if not path.is_file():
            raise InvalidInput(f"--check: no such file {args.check!r}")
        with session_scope() as session:
            return duplicates.check_image(session=session, data=path.read_bytes(), threshold=threshold,
                                          storage=get_storage())
    with session_scope() as session:
        exact = duplicates.exact_duplicate_groups(session=session)
        result = {"exact_groups": _named(session, exact), "exact_extras": sum(len(g) - 1 for g in exact)}
        if not args.exact_only:
            near = duplicates.near_duplicate_groups(session=session, storage=get_storage(), threshold=threshold,
                                                    confirm=not args.no_confirm, crops=not args.no_crops)
            result.update(threshold=threshold, confirmed=not args.no_confirm, near_groups=_named(session, near),
                          near_extras=sum(len(g) - 1 for g in near))
    return result


def _backfill(args) -> dict:
    if args.limit is not None and args.limit < 1:
        raise InvalidInput(f"--limit must be at least 1, got {args.limit}")
    with session_scope() as session:
        return backfill_crop_hashes(session=session, actor=operator_user(), storage=get_storage(), limit=args.limit)


def _named(session, groups: list[list]) -> list[list[dict]]:
    """Each member by id with its file name and folder, so a group can be read without another lookup."""
    from sqlalchemy import select

    ids = [image_id for group in groups for image_id in group]
    names: dict = {}
    for start in range(0, len(ids), 1000):
        for image_id, original, stored, folder in session.execute(
                select(ClsImage.id, ClsImage.original_filename, ClsImage.filename, ClsImage.folder)
                .where(ClsImage.id.in_(ids[start:start + 1000]))):
            names[image_id] = {"file": original or stored, "folder": folder}
    return [[{"id": str(image_id), **names.get(image_id, {"file": None, "folder": None})} for image_id in group]
            for group in groups]
