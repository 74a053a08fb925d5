"""`datasets list|create|add-images`. This module creates the `datasets` command; modules listed
after it in COMMAND_MODULES (core.cli.dataset_tools: split, version, health, export) add their
subcommands to the same group.
"""

from __future__ import annotations

from core.datasets.dataset import create_dataset, get_dataset_by_name, library_image_ids, list_datasets
from core.db import session_scope
from core.errors import InvalidInput
from core.ids import as_uuid
from core.library.bulk import add_to_dataset
from core.users import operator_user
from core.vocabulary import SPLITS, TRAINING_SPLITS


def register(subparsers) -> None:
    datasets = subparsers.add_parser("datasets", help="datasets: images, labels, splits, versions, export")
    sub = datasets.add_subparsers(dest="datasets_command", required=True, parser_class=subparsers._parser_class)

    listing = sub.add_parser("list", help="every dataset with its counts")
    listing.set_defaults(handler=cmd_list)

    create = sub.add_parser("create", help="create a dataset")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--task", choices=("single_label", "multi_label"), default="single_label")
    create.add_argument("--description")
    create.add_argument("--train", type=float, help="split ratio (with --val and --test, adding up to 1)")
    create.add_argument("--val", type=float)
    create.add_argument("--test", type=float)
    create.add_argument("--image-size", type=int)
    create.set_defaults(handler=cmd_create)

    add = sub.add_parser("add-images", help="add library images by id or by filters")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--ids", nargs="+", metavar="ID", help="image ids")
    add.add_argument("--folder")
    add.add_argument("--tag", action="append", help="any of these tags (repeat the option)")
    add.add_argument("--source")
    add.add_argument("--status")
    add.add_argument("--search", help="part of the file name")
    add.add_argument("--split", choices=SPLITS)
    add.set_defaults(handler=cmd_add_images)


def dataset_by_name(session, name: str):
    return get_dataset_by_name(session=session, name=name)


def dataset_dict(row) -> dict:
    labeled_pct = round(100.0 * row.labeled_image_count / row.image_count, 1) if row.image_count else 0.0
    return {"id": str(row.id), "name": row.name, "task_type": row.task_type, "description": row.description,
            "image_count": row.image_count, "labeled_image_count": row.labeled_image_count,
            "labeled_pct": labeled_pct, "class_count": row.class_count, "split_ratios": row.split_ratios,
            "preprocessing": row.preprocessing, "created_at": row.created_at}


def cmd_list(args) -> dict:
    with session_scope() as session:
        return {"datasets": [dataset_dict(row) for row in list_datasets(session=session)]}


def cmd_create(args) -> dict:
    ratios = None
    given = {key: getattr(args, key) for key in TRAINING_SPLITS if getattr(args, key) is not None}
    if given:
        ratios = {"train": 0.0, "val": 0.0, "test": 0.0, **given}
    preprocessing = {"image_size": args.image_size} if args.image_size is not None else None
    with session_scope() as session:
        row = create_dataset(session=session, actor=operator_user(), name=args.name, task_type=args.task,
                             description=args.description, split_ratios=ratios, preprocessing=preprocessing)
        return dataset_dict(row)


def cmd_add_images(args) -> dict:
    filters = {"folder": args.folder, "tags": args.tag, "source": args.source, "status": args.status,
               "search": args.search}
    if not args.ids and not any(filters.values()):
        raise InvalidInput("give --ids or at least one filter (--folder, --tag, --source, --status, --search)")
    if args.ids and any(filters.values()):
        raise InvalidInput("give either --ids or filters, not both")
    with session_scope() as session:
        dataset = dataset_by_name(session, args.name)
        if args.ids:
            ids = [as_uuid(value, "image id") for value in args.ids]
        else:
            ids = library_image_ids(session=session, **filters)
        dataset_id, name = dataset.id, dataset.name
    # batches, each its own transaction: labelers of the dataset are never held long
    added = add_to_dataset(actor=operator_user(), dataset_id=dataset_id, image_ids=ids, split=args.split)
    with session_scope() as session:
        image_count = dataset_by_name(session, name).image_count
    return {"dataset": name, "matched": len(ids), "added": added,
            "already_in_dataset": len(set(ids)) - added, "image_count": image_count}
