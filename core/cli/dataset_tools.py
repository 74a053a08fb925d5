"""`datasets split|version|versions|compare|health|export`: splits, versions, health and export.

These join the `datasets` command group that core.cli.datasets creates (it comes before this module
in COMMAND_MODULES).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.datasets.dataset import get_dataset_by_name
from core.datasets.export import collect_export, combined_csv, write_zip
from core.datasets.health import health_check
from core.datasets.split_checks import version_warnings, warning_lines
from core.datasets.splits import auto_split
from core.datasets.versions import compare_versions, create_version, list_versions, version_summary
from core.db import session_scope
from core.errors import InvalidInput
from core.storage import get_storage
from core.users import operator_user
from core.vocabulary import TRAINING_SPLITS

RATIO_FLAGS = TRAINING_SPLITS


def register(subparsers) -> None:
    """Attach to the `datasets` group when core.cli.datasets (listed before this module) made it;
    create the group otherwise, so these commands never depend on that module being present."""
    datasets = subparsers.choices.get("datasets")
    if datasets is not None:
        commands = next(a for a in datasets._actions if isinstance(a, argparse._SubParsersAction))
    else:
        datasets = subparsers.add_parser("datasets", help="datasets: splits, versions, health, export")
        commands = datasets.add_subparsers(dest="datasets_command", required=True,
                                           parser_class=subparsers._parser_class)
    add_commands(commands)


def add_commands(commands) -> None:
    split = commands.add_parser("split", help="stratified auto-split of the labeled images")
    split.add_argument("name", help="dataset name")
    for flag in RATIO_FLAGS:
        split.add_argument(f"--{flag}", type=float, help=f"{flag} ratio (default: the dataset's)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--keep-val-test", action="store_true", help="keep images already in val or test")
    split.add_argument("--min-per-class", type=int, default=1, help="minimum images per class in val and test")
    split.add_argument("--near-duplicate-threshold", type=int,
                       help="pHash distance that groups near duplicates (default: the platform's; 0: exact copies only)")
    split.set_defaults(handler=cmd_split)

    version = commands.add_parser("version", help="snapshot the labeled images as a new version")
    version.add_argument("name", help="dataset name")
    version.add_argument("--notes")
    version.set_defaults(handler=cmd_version)

    versions = commands.add_parser("versions", help="list a dataset's versions")
    versions.add_argument("name", help="dataset name")
    versions.set_defaults(handler=cmd_versions)

    compare = commands.add_parser("compare", help="compare two versions (per-class counts, changed images)")
    compare.add_argument("name", help="dataset name")
    compare.add_argument("a", type=int)
    compare.add_argument("b", type=int)
    compare.set_defaults(handler=cmd_compare)

    health = commands.add_parser("health", help="dataset health check")
    health.add_argument("name", help="dataset name")
    health.add_argument("--min-images", type=int, default=10, help="report classes with fewer images")
    health.add_argument("--near-duplicate-threshold", type=int)
    health.set_defaults(handler=cmd_health)

    export = commands.add_parser("export", help="export as a ZIP (or only the CSV when --out ends in .csv)")
    export.add_argument("name", help="dataset name")
    export.add_argument("--format", required=True, choices=("imagefolder", "csv", "multilabel-csv"))
    export.add_argument("--version", type=int, help="version number (default: the current labels)")
    export.add_argument("--out", required=True, help="file to write")
    export.set_defaults(handler=cmd_export)


def _dataset_id(session, name: str):
    return get_dataset_by_name(session=session, name=name).id


def cmd_split(args) -> dict:
    given = {flag: getattr(args, flag) for flag in RATIO_FLAGS if getattr(args, flag) is not None}
    with session_scope() as session:
        ratios = None
        if given:  # a partly given set: the missing splits get 0
            ratios = {flag: given.get(flag, 0.0) for flag in RATIO_FLAGS}
        return auto_split(session=session, actor=operator_user(), dataset_id=_dataset_id(session, args.name), ratios=ratios,
                          seed=args.seed, keep_existing_val_test=args.keep_val_test,
                          min_per_class=args.min_per_class, near_duplicate_threshold=args.near_duplicate_threshold)


def cmd_version(args) -> dict:
    storage = get_storage()
    with session_scope() as session:
        dataset_id = _dataset_id(session, args.name)
        warnings = version_warnings(session=session, dataset_id=dataset_id, storage=storage)
    for line in warning_lines(warnings):  # said before the version is made
        sys.stderr.write(f"warning: {line}\n")
    with session_scope() as session:
        version = create_version(session=session, actor=operator_user(), storage=storage, dataset_id=dataset_id,
                                 notes=args.notes)
        return {**version_summary(version), "warnings": warnings}


def cmd_versions(args) -> dict:
    with session_scope() as session:
        return {"versions": [version_summary(v) for v in list_versions(
            session=session, dataset_id=_dataset_id(session, args.name))]}


def cmd_compare(args) -> dict:
    with session_scope() as session:
        return compare_versions(session=session, storage=get_storage(), dataset_id=_dataset_id(session, args.name),
                                number_a=args.a, number_b=args.b)


def cmd_health(args) -> dict:
    with session_scope() as session:
        return health_check(session=session, dataset_id=_dataset_id(session, args.name),
                            min_images_per_class=args.min_images, near_duplicate_threshold=args.near_duplicate_threshold)


def cmd_export(args) -> dict:
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InvalidInput(f"--out: folder {str(out.parent)!r} does not exist")
    storage = get_storage()
    with session_scope() as session:
        plan = collect_export(session=session, storage=storage, dataset_id=_dataset_id(session, args.name),
                              fmt=args.format, version_number=args.version)
    if out.suffix.lower() == ".csv":
        if args.format == "imagefolder":
            raise InvalidInput("--out FILE.csv needs --format csv or multilabel-csv")
        out.write_text(combined_csv(plan), encoding="utf-8")
        return {"out": str(out), "format": args.format, "images": len(plan.items), "csv_only": True}
    tmp = out.with_name(f".{out.name}.partial")
    try:
        summary = write_zip(plan, storage=storage, target=tmp)
        tmp.replace(out)  # never a half-written file under the asked name
    finally:
        tmp.unlink(missing_ok=True)
    return {**summary, "out": str(out)}
