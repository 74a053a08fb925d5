"""`train-search ...` (a budgeted hyperparameter search, core.training.search) and `search list|show|cancel|resume|register`."""

from __future__ import annotations

import time

from core.db import session_scope
from core.errors import UserError
from core.jobs.rows import get_job
from core.ml.config import parse_set_options
from core.storage import get_storage
from core.training.runs import resolve_version
from core.training.search import (
    cancel_search,
    list_searches,
    load_study,
    register_best,
    resume_search,
    search_summary,
    start_search,
    trial_rows,
)
from core.users import operator_user


def register(subparsers) -> None:
    parser_class = subparsers._parser_class
    search = subparsers.add_parser("train-search", help="search training settings within a wall-clock budget")
    search.add_argument("--dataset", required=True, help="dataset name")
    search.add_argument("--version", type=int, help="version number (default: the latest; made if none)")
    search.add_argument("--model", required=True, help="family: vit, convnext, efficientnet, swin, dinov2, clip, resnet")
    search.add_argument("--size", required=True, help="size within the family, e.g. atto, 18")
    search.add_argument("--image-size", type=int)
    search.add_argument("--budget-min", type=float, required=True, help="wall-clock minutes for the whole search")
    search.add_argument("--trial-min", type=float, help="time budget of one trial (default: a quarter of the budget)")
    search.add_argument("--parallel", type=int, default=1, help="trial jobs at once (one per training worker)")
    search.add_argument("--refit-min", type=float, default=0.0,
                        help="the last minutes of the budget train the best settings once more, this long")
    search.add_argument("--refit-train-only", action="store_true",
                        help="the refit trains on the train split alone (default: train + val, the settings "
                             "having been chosen on val)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed training setting for every trial, e.g. --set pretrained=false")
    search.add_argument("--name", help="search name")
    search.add_argument("--wait", action="store_true", help="wait for the search to end (embedded: runs it here)")
    search.add_argument("--register-best", action="store_true",
                        help="with --wait: register the best trial as a model and report its test metrics")
    search.set_defaults(handler=cmd_train_search)

    searches = subparsers.add_parser("search", help="hyperparameter searches")
    sub = searches.add_subparsers(dest="search_command", required=True, parser_class=parser_class)
    sub.add_parser("list", help="searches, newest first").set_defaults(handler=cmd_search_list)
    for name, handler, text in (("show", cmd_search_show, "one search with its trials"),
                                ("cancel", cmd_search_cancel, "stop its trials"),
                                ("resume", cmd_search_resume, "run it again for the budget it had left"),
                                ("register", cmd_search_register, "register its best trial as a model")):
        command = sub.add_parser(name, help=text)
        command.add_argument("name", help="the search's id (search-…)")
        if name == "resume":
            command.add_argument("--budget-min", type=float, help="minutes more instead of what was left")
        if name == "register":
            command.add_argument("--queue", action="store_true", help="hand it to a training worker and return")
        command.set_defaults(handler=handler)


def cmd_train_search(args) -> dict:
    base = parse_set_options(args.set)
    base.update({"model_type": args.model, "model_size": args.size})
    if args.image_size is not None:
        base["image_size"] = args.image_size
    with session_scope() as session:
        version_id = resolve_version(session=session, actor=operator_user(), storage=get_storage(),
                                     dataset_name=args.dataset, number=args.version).id
    name = start_search(actor=operator_user(), version_id=version_id, base=base, budget_min=args.budget_min,
                        trial_min=args.trial_min, parallel=args.parallel, name=args.name, refit_min=args.refit_min,
                        refit_on_val=not args.refit_train_only)
    if not args.wait:
        return _show(name)
    _wait(name)
    outcome = _show(name)
    if args.register_best:
        outcome["best_model"] = _register(name, inline=True)
    return outcome


def _wait(name: str) -> None:
    while search_summary(load_study(name))["status"] not in ("completed", "cancelled"):
        time.sleep(2.0)


def _show(name: str) -> dict:
    study = load_study(name)
    return {**search_summary(study), "trials": trial_rows(study)}


def _register(name: str, *, inline: bool) -> dict:
    job_id = register_best(actor=operator_user(), name=name, inline=inline)
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        if not inline:
            return {"job_id": str(job_id), "status": job.status}
        if job.status != "succeeded":
            raise UserError(f"registering the best trial {job.status}: {job.error or 'no error text'}")
        return {"job_id": str(job_id), **(job.result or {})}


def cmd_search_list(args) -> dict:
    return {"searches": list_searches()}


def cmd_search_show(args) -> dict:
    return _show(args.name)


def cmd_search_cancel(args) -> dict:
    return cancel_search(actor=operator_user(), name=args.name)


def cmd_search_resume(args) -> dict:
    return resume_search(actor=operator_user(), name=args.name, budget_min=args.budget_min)


def cmd_search_register(args) -> dict:
    return _register(args.name, inline=not args.queue)
