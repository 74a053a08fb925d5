"""`datasets classes NAME [--add ...] [--remove ...] [--order ...]`: a dataset's label space (its ordered
classes); `datasets duplicates NAME [--join train|drop]`: near-duplicate groups that straddle its
splits. Both join the `datasets` group (core.cli.datasets comes before this module in COMMAND_MODULES).
The CLI acts as the operator (core.users.operator_user)."""

from __future__ import annotations

import argparse

from core.datasets import label_space_edits
from core.datasets.dataset import get_dataset_by_name
from core.datasets.label_space import KEYS, label_space
from core.datasets.split_checks import join_straddling, straddling_duplicates
from core.db import session_scope
from core.errors import NotFound
from core.storage import get_storage
from core.users import operator_user


def _names(values: list[str] | None) -> list[str]:
    """Repeated options and comma-separated lists both work: --add a,b --add c."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def register(subparsers) -> None:
    datasets = subparsers.choices["datasets"]
    commands = next(a for a in datasets._actions if isinstance(a, argparse._SubParsersAction))

    classes = commands.add_parser("classes", help="a dataset's classes, in key order; add, remove, reorder")
    classes.add_argument("name", help="dataset name")
    classes.add_argument("--add", action="append", metavar="CLASS[,CLASS]",
                         help="add classes by name (a name no class has yet creates the class)")
    classes.add_argument("--remove", action="append", metavar="CLASS[,CLASS]",
                         help="remove classes no label of the dataset uses")
    classes.add_argument("--order", action="append", metavar="CLASS[,CLASS]",
                         help="put these classes first, in this order (the rest keep theirs)")
    classes.set_defaults(handler=cmd_classes)

    duplicates = commands.add_parser("duplicates", help="near-duplicate groups that sit in more than one split")
    duplicates.add_argument("name", help="dataset name")
    duplicates.add_argument("--join", choices=("train", "drop"),
                            help="train: move every member of a straddling group to train; drop: keep the members "
                                 "in the group's first split (train, val, test) and remove the others from the dataset")
    duplicates.add_argument("--near-duplicate-threshold", type=int)
    duplicates.set_defaults(handler=cmd_duplicates)


def _space(session, dataset_id) -> list[dict]:
    return [{"key": KEYS[i] if i < len(KEYS) else None, "id": str(c.class_id), "name": c.name,
             "images": c.image_count, "active": c.is_active}
            for i, c in enumerate(label_space(session=session, dataset_id=dataset_id))]


def cmd_classes(args) -> dict:
    add, remove, order = _names(args.add), _names(args.remove), _names(args.order)
    actor = operator_user()
    with session_scope() as session:
        dataset = get_dataset_by_name(session=session, name=args.name)
        if add:
            existing, new = [], []
            for name in add:
                try:
                    existing += label_space_edits.resolve_class_names(session, [name])
                except NotFound:  # a new class by that name
                    new.append(name)
            label_space_edits.add_classes(session=session, actor=actor, dataset_id=dataset.id, class_ids=existing,
                                    new_names=new)
        if remove:
            label_space_edits.remove_classes(session=session, actor=actor, dataset_id=dataset.id,
                                       class_ids=label_space_edits.resolve_class_names(session, remove))
        if order:
            label_space_edits.reorder_classes(session=session, actor=actor, dataset_id=dataset.id,
                                        class_ids=label_space_edits.resolve_class_names(session, order))
        return {"dataset": dataset.name, "classes": _space(session, dataset.id)}


def cmd_duplicates(args) -> dict:
    storage = get_storage()
    with session_scope() as session:
        dataset = get_dataset_by_name(session=session, name=args.name)
        result = {"dataset": dataset.name, "straddling": straddling_duplicates(
            session=session, dataset_id=dataset.id, storage=storage,
            near_duplicate_threshold=args.near_duplicate_threshold)}
        if args.join:
            result["joined"] = join_straddling(session=session, actor=operator_user(), dataset_id=dataset.id,
                                               how=args.join, storage=storage,
                                               near_duplicate_threshold=args.near_duplicate_threshold)
    return result
