"""`python -m core storage check [--fix]`: storage ↔ database reconciliation."""

from __future__ import annotations

from datetime import timedelta

from core.db import session_scope
from core.library.storage_check import check_storage, fix_storage
from core.storage import get_storage
from core.users import operator_user


def register(subparsers) -> None:
    storage = subparsers.add_parser("storage", help="object storage maintenance")
    sub = storage.add_subparsers(dest="storage_command", required=True, parser_class=subparsers._parser_class)
    check = sub.add_parser("check", help="find objects without rows and rows without objects")
    check.add_argument("--fix", action="store_true", help="delete orphan objects (older than --grace-minutes)")
    check.add_argument("--grace-minutes", type=float, default=60.0,
                       help="leave younger orphans alone: an import may still be committing their rows")
    check.set_defaults(handler=cmd_check)


def cmd_check(args) -> dict:
    with session_scope() as session:
        if args.fix:
            return fix_storage(session=session, actor=operator_user(), storage=get_storage(),
                               grace=timedelta(minutes=args.grace_minutes))
        return check_storage(session=session, storage=get_storage())
