"""`python -m core duplicates`: exact and near-duplicate groups of the library, or one file checked
against it (`--check FILE`)."""

from __future__ import annotations

from pathlib import Path

from core.errors import InvalidInput


def register(subparsers) -> None:
    from core.duplicates import CONFIRM_MAX_DISTANCE, DEFAULT_THRESHOLD, MAX_THRESHOLD

    parser = subparsers.add_parser("duplicates", help="exact and near-duplicate groups in the image library")
    parser.add_argument("--threshold", default=str(DEFAULT_THRESHOLD),
                        help=f"largest pHash Hamming distance, 0..{MAX_THRESHOLD} (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--exact-only", action="store_true", help="only groups of byte-identical files")
    parser.add_argument("--no-confirm", action="store_true",
                        help=f"raw pHash groups, without the 256-bit pHash confirmation (≤ {CONFIRM_MAX_DISTANCE})")
    parser.add_argument("--check", metavar="FILE", help="check one image file against the library instead")
    parser.set_defaults(handler=cmd_duplicates)


def cmd_duplicates(args) -> dict:
    from core import duplicates
    from core.db import session_scope
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
        result = {"exact_groups": exact, "exact_extras": sum(len(g) - 1 for g in exact)}
        if not args.exact_only:
            near = duplicates.near_duplicate_groups(session=session, storage=get_storage(), threshold=threshold,
                                                    confirm=not args.no_confirm)
            result.update(threshold=threshold, confirmed=not args.no_confirm, near_groups=near,
                          near_extras=sum(len(g) - 1 for g in near))
    return result
