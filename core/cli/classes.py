"""`classes list|create|merge`: class definitions from the command line."""

from __future__ import annotations

from core.datasets.classes import create_class, get_class_by_name, list_classes, merge_classes
from core.db import session_scope
from core.users import operator_user


def register(subparsers) -> None:
    classes = subparsers.add_parser("classes", help="class definitions")
    sub = classes.add_subparsers(dest="classes_command", required=True, parser_class=subparsers._parser_class)

    listing = sub.add_parser("list", help="every class with its image count")
    listing.add_argument("--active", action="store_true", help="only active classes")
    listing.set_defaults(handler=cmd_list)

    create = sub.add_parser("create", help="create one or more classes")
    create.add_argument("names", nargs="+", metavar="NAME")
    create.add_argument("--color", help="#RRGGBB (default: the next palette color)")
    create.add_argument("--display-name")
    create.add_argument("--description")
    create.add_argument("--parent", help="name of the parent class")
    create.set_defaults(handler=cmd_create)

    merge = sub.add_parser("merge", help="move the labels of SOURCE classes to TARGET and delete the sources")
    merge.add_argument("sources", nargs="+", metavar="SOURCE")
    merge.add_argument("--into", required=True, metavar="TARGET")
    merge.set_defaults(handler=cmd_merge)


def class_dict(row) -> dict:
    return {"id": str(row.id), "name": row.name, "display_name": row.display_name, "color": row.color,
            "parent_class_id": str(row.parent_class_id) if row.parent_class_id else None,
            "image_count": row.image_count, "is_active": row.is_active}


def cmd_list(args) -> dict:
    with session_scope() as session:
        return {"classes": [class_dict(row) for row in list_classes(session=session, active_only=args.active)]}


def cmd_create(args) -> dict:
    with session_scope() as session:
        parent = get_class_by_name(session=session, name=args.parent).id if args.parent else None
        created = [create_class(session=session, actor=operator_user(), name=name, color=args.color, display_name=args.display_name,
                                description=args.description, parent_class_id=parent) for name in args.names]
        return {"created": [class_dict(row) for row in created]}


def cmd_merge(args) -> dict:
    with session_scope() as session:
        sources = [get_class_by_name(session=session, name=name).id for name in args.sources]
        target = get_class_by_name(session=session, name=args.into).id
        return merge_classes(session=session, actor=operator_user(), source_ids=sources, target_id=target)
