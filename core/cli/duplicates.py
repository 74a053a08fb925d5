"""`python -m core duplicates`: exact and near-duplicate groups of the library (each member by id, file
name and folder), or one file checked against it (`--check FILE`)."""

from __future__ import annotations

from pathlib import Path

from core.errors import InvalidInput


def register(subparsers) -> None:
    from core.library.duplicates import CONFIRM_MAX_DISTANCE, DEFAULT_THRESHOLD, MAX_THRESHOLD

    parser = subparsers.add_parser("duplicates", help="exact and near-duplicate groups in the image library")
    parser.add_argument("--threshold", default=str(DEFAULT_THRESHOLD),
                        help=f"largest pHash Hamming distance, 0..{MAX_THRESHOLD} (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--exact-only", action="store_true", help="only groups of byte-identical files")
    parser.add_argument("--no-confirm", action="store_true",
                        help=f"raw pHash groups, without the 256-bit pHash confirmation (≤ {CONFIRM_MAX_DISTANCE})")
    parser.add_argument("--check", metavar="FILE", help="check one image file against the library instead")
    parser.set_defaults(handler=cmd_duplicates)


def cmd_duplicates(args) -> dict:
    from core.db import session_scope
    from core.library import duplicates
    from core.storage import get_storage

    threshold = duplicates.check_threshold(args.threshold)
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
                                                    confirm=not args.no_confirm)
            result.update(threshold=threshold, confirmed=not args.no_confirm, near_groups=_named(session, near),
                          near_extras=sum(len(g) - 1 for g in near))
    return result


def _named(session, groups: list[list]) -> list[list[dict]]:
    """Each member by id with its file name and folder, so a group can be read without another lookup."""
    from sqlalchemy import select

    from core.models import ClsImage

    ids = [image_id for group in groups for image_id in group]
    names: dict = {}
    for start in range(0, len(ids), 1000):
        for image_id, original, stored, folder in session.execute(
                select(ClsImage.id, ClsImage.original_filename, ClsImage.filename, ClsImage.folder)
                .where(ClsImage.id.in_(ids[start:start + 1000]))):
            names[image_id] = {"file": original or stored, "folder": folder}
    return [[{"id": str(image_id), **names.get(image_id, {"file": None, "folder": None})} for image_id in group]
            for group in groups]
