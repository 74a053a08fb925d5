"""`train ...` (in-process, or --queue for a worker), `runs list|show|cancel|resume|delete`, and
`models list|show|set-default|activate|deactivate|rename|delete|export-onnx`."""

from __future__ import annotations

from core.datasets.split_checks import version_missing_eval, warning_lines
from core.db import session_scope
from core.errors import UserError
from core.ids import as_uuid
from core.jobs.rows import get_job
from core.ml.config import parse_set_options
from core.models import ClsTrainedModel
from core.storage import get_storage
from core.training.registry import (
    delete_model,
    export_onnx,
    get_model,
    list_models,
    model_summary,
    rename_model,
    set_active,
    set_default,
)
from core.training.runs import (
    cancel_run,
    create_run,
    delete_run,
    get_run,
    list_runs,
    recipe_rows,
    resolve_version,
    run_summary,
    start_run,
)
from core.users import operator_user


def register(subparsers) -> None:
    parser_class = subparsers._parser_class
    train = subparsers.add_parser("train", help="train a model on a dataset version")
    train.add_argument("--dataset", required=True, help="dataset name")
    train.add_argument("--version", type=int, help="version number (default: the latest; made if none)")
    train.add_argument("--model", required=True, help="family: vit, convnext, efficientnet, swin, dinov2, clip, resnet")
    train.add_argument("--size", required=True, help="size within the family, e.g. atto, tiny, s, ViT-B-16, 18")
    train.add_argument("--epochs", type=int)
    train.add_argument("--image-size", type=int)
    train.add_argument("--preset", help="augmentation preset: sota, heavy, medium, light, none")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any training setting, e.g. --set batch_size=16 --set pretrained=false")
    train.add_argument("--name", help="run name")
    train.add_argument("--queue", action="store_true", help="hand the run to a training worker and return")
    train.set_defaults(handler=cmd_train)

    runs = subparsers.add_parser("runs", help="training runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=parser_class)
    runs_sub.add_parser("list", help="recent runs").set_defaults(handler=cmd_runs_list)
    for name, handler, text in (("show", cmd_runs_show, "one run with its metrics per epoch"),
                                ("cancel", cmd_runs_cancel, "stop a run"),
                                ("resume", cmd_runs_resume, "resume a failed or cancelled run from its checkpoint"),
                                ("delete", cmd_runs_delete, "delete a finished run and its checkpoint")):
        command = runs_sub.add_parser(name, help=text)
        command.add_argument("run_id")
        if name == "resume":
            command.add_argument("--queue", action="store_true", help="hand it to a worker and return")
        command.set_defaults(handler=handler)

    models = subparsers.add_parser("models", help="trained models")
    models_sub = models.add_subparsers(dest="models_command", required=True, parser_class=parser_class)
    listing = models_sub.add_parser("list", help="trained models, newest first")
    listing.add_argument("--type", help="only this model family")
    listing.add_argument("--active", action="store_true", help="only active models")
    listing.set_defaults(handler=cmd_models_list)
    for name, handler, text in (("show", cmd_models_show, "one model with its metrics"),
                                ("set-default", cmd_models_set_default, "make it the default of its type"),
                                ("activate", cmd_models_activate, "make it usable for prediction"),
                                ("deactivate", cmd_models_deactivate, "hide it from prediction"),
                                ("delete", cmd_models_delete, "delete the model and its files"),
                                ("export-onnx", cmd_models_export_onnx, "write (or return) its ONNX file")):
        command = models_sub.add_parser(name, help=text)
        command.add_argument("model_id")
        command.set_defaults(handler=handler)
    rename = models_sub.add_parser("rename", help="rename a model")
    rename.add_argument("model_id")
    rename.add_argument("name")
    rename.set_defaults(handler=cmd_models_rename)



def training_values(args) -> dict:
    values = parse_set_options(args.set)
    values.update({"model_type": args.model, "model_size": args.size})
    for key, given in (("epochs", args.epochs), ("image_size", args.image_size), ("augmentation_preset", args.preset)):
        if given is not None:
            values[key] = given
    return values


def cmd_train(args) -> dict:
    values, operator = training_values(args), operator_user()
    with session_scope() as session:
        version = resolve_version(session=session, actor=operator, storage=get_storage(), dataset_name=args.dataset,
                                  number=args.version)
        run = create_run(session=session, actor=operator, version_id=version.id, config=values, name=args.name)
        run_id = run.id
        print_recipe(run.config)
        missing = _warn_missing_eval(version)
    job_id = start_run(actor=operator, run_id=run_id, inline=not args.queue)
    return {**_run_outcome(run_id, job_id, queued=args.queue), "warnings": {"missing_eval": missing}}


def _warn_missing_eval(version) -> list[dict]:
    """Classes of the version with no val or test image: said on stderr before the run starts."""
    import sys

    missing = version_missing_eval(version)
    for line in warning_lines({"missing_eval": missing}):
        sys.stderr.write(f"warning: {line}\n")
    return missing


def print_recipe(config: dict) -> None:
    """The recipe, one setting a line, on stderr (stdout carries the one JSON document)."""
    import sys

    for row in recipe_rows(config):
        print(f"recipe: {row['setting']} = {row['value']}  ({row['by']}: {row['why']})", file=sys.stderr)


def _run_outcome(run_id, job_id, *, queued: bool) -> dict:
    from sqlalchemy import select

    with session_scope() as session:
        run = get_run(session=session, run_id=run_id)
        outcome = {"run_id": str(run.id), "job_id": str(job_id), "status": run.status,
                   "recipe": recipe_rows(run.config or {}),
                   "best": {"epoch": run.best_epoch, "accuracy": run.best_accuracy, "f1": run.best_f1,
                            "top5_accuracy": run.best_top5_accuracy}}
        if queued:
            return outcome
        if run.status != "completed":
            job = get_job(session=session, job_id=job_id)
            raise UserError(f"training run {run.id} {run.status}: {run.error_message or job.error or 'no error text'}")
        model = session.scalar(select(ClsTrainedModel).where(ClsTrainedModel.training_run_id == run.id)
                               .order_by(ClsTrainedModel.created_at.desc()).limit(1))
        full = model_summary(model, full=True)
        outcome.update({
            "model_id": full["id"], "files": full["files"], "test_metrics": {
                "accuracy": model.accuracy, "f1": model.f1_score, "top5_accuracy": model.top5_accuracy,
                "precision_macro": model.precision_macro, "recall_macro": model.recall_macro},
            "export_check": model.export_check, "epochs_run": run.current_epoch,
            "images_per_s": [round(h["train_images_per_s"], 1) for h in run.metrics_history
                             if h.get("train_images_per_s")],
        })
        return outcome


def cmd_runs_list(args) -> dict:
    with session_scope() as session:
        return {"runs": [{k: v for k, v in run_summary(r).items() if k not in ("config", "metrics_history")}
                         for r in list_runs(session=session)]}


def cmd_runs_show(args) -> dict:
    with session_scope() as session:
        return run_summary(get_run(session=session, run_id=as_uuid(args.run_id, "run id")))


def cmd_runs_cancel(args) -> dict:
    with session_scope() as session:
        return run_summary(cancel_run(session=session, actor=operator_user(), run_id=as_uuid(args.run_id, "run id")))


def cmd_runs_resume(args) -> dict:
    run_id = as_uuid(args.run_id, "run id")
    job_id = start_run(actor=operator_user(), run_id=run_id, inline=not args.queue, resume=True)
    return _run_outcome(run_id, job_id, queued=args.queue)


def cmd_runs_delete(args) -> dict:
    with session_scope() as session:
        delete_run(session=session, actor=operator_user(), storage=get_storage(), run_id=as_uuid(args.run_id, "run id"))
    return {"deleted": args.run_id}


def _model_command(args, action) -> dict:
    with session_scope() as session:
        return model_summary(action(session, as_uuid(args.model_id, "model id")), full=True)


def cmd_models_list(args) -> dict:
    with session_scope() as session:
        return {"models": [model_summary(m) for m in list_models(session=session, model_type=args.type,
                                                                  active_only=args.active)]}


def cmd_models_show(args) -> dict:
    return _model_command(args, lambda s, i: get_model(session=s, model_id=i))


def cmd_models_set_default(args) -> dict:
    return _model_command(args, lambda s, i: set_default(session=s, actor=operator_user(), model_id=i))


def cmd_models_activate(args) -> dict:
    return _model_command(args, lambda s, i: set_active(session=s, actor=operator_user(), model_id=i, active=True))


def cmd_models_deactivate(args) -> dict:
    return _model_command(args, lambda s, i: set_active(session=s, actor=operator_user(), model_id=i, active=False))


def cmd_models_rename(args) -> dict:
    return _model_command(args, lambda s, i: rename_model(session=s, actor=operator_user(), model_id=i,
                                                          name=args.name))


def cmd_models_delete(args) -> dict:
    with session_scope() as session:
        return delete_model(session=session, actor=operator_user(), storage=get_storage(),
                            model_id=as_uuid(args.model_id, "model id"))


def cmd_models_export_onnx(args) -> dict:
    return _model_command(args, lambda s, i: export_onnx(session=s, actor=operator_user(), storage=get_storage(),
                                                         model_id=i))
