"""`predict --model ID|default IMAGE_OR_URL...`, `predict-batch --model ID (--dataset NAME | --library |
a selection: --image-id ID... --image-ids-file FILE --folder F... --tag T... [--dataset NAME])
[--write-labels] [--overwrite] [--csv OUT]`, `label-issues --dataset NAME [--model ID]`."""

from __future__ import annotations

from core.cli import BatchReport
from core.datasets.dataset import get_dataset_by_name
from core.db import session_scope
from core.errors import InvalidInput
from core.prediction.auto_label import parse_image_ids, run_batch_prediction, selection_ids
from core.prediction.label_errors import find_issues
from core.prediction.predict import predict_items, read_inputs
from core.storage import get_storage
from core.users import operator_user


def register(subparsers) -> None:
    predict = subparsers.add_parser("predict", help="predict images (files or http(s) URLs) with a model")
    predict.add_argument("--model", required=True, help="model id, or 'default'")
    predict.add_argument("images", nargs="+", help="image files or URLs")
    predict.add_argument("--top-k", type=int, default=5)
    predict.set_defaults(handler=cmd_predict)

    batch = subparsers.add_parser("predict-batch", help="predict a dataset, a selection of images or the library; "
                                                        "write AI labels and/or a CSV")
    batch.add_argument("--model", required=True, help="model id, or 'default'")
    batch.add_argument("--dataset", help="dataset name (with a selection: only its images in this dataset)")
    batch.add_argument("--library", action="store_true", help="predict every image of the library")
    batch.add_argument("--image-id", action="append", default=[], metavar="ID", help="select this image (repeat)")
    batch.add_argument("--image-ids-file", metavar="FILE", help="select the image ids in this file")
    batch.add_argument("--folder", action="append", default=[], help="select the images in this folder (repeat)")
    batch.add_argument("--tag", action="append", default=[], help="select the images with this tag (repeat)")
    batch.add_argument("--write-labels", action="store_true", help="write predictions as AI labels")
    batch.add_argument("--overwrite", action="store_true", help="also replace manual and reviewed labels")
    batch.add_argument("--csv", metavar="OUT", help="write the predictions to this CSV file")
    batch.set_defaults(handler=cmd_predict_batch)

    issues = subparsers.add_parser("label-issues", help="rank a dataset's likely label errors (changes nothing)")
    issues.add_argument("--dataset", required=True, help="dataset name")
    issues.add_argument("--version", type=int, help="version number (default: the latest)")
    issues.add_argument("--model", help="use this model's predictions on images it did not train on")
    issues.add_argument("--folds", type=int, default=5)
    issues.add_argument("--limit", type=int, default=50, help="show at most this many")
    issues.set_defaults(handler=cmd_label_issues)


def cmd_predict(args) -> BatchReport:
    items = read_inputs(args.images)
    with session_scope() as session:
        result = predict_items(session=session, storage=get_storage(), model=args.model, items=items, top_k=args.top_k)
    return BatchReport(result, attempted=len(result["results"]),
                       succeeded=sum(1 for r in result["results"] if "error" not in r))


def cmd_predict_batch(args) -> BatchReport:
    from pathlib import Path

    pasted = parse_image_ids(args.image_id)
    if args.image_ids_file:
        try:
            pasted += parse_image_ids(Path(args.image_ids_file).read_text())
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.image_ids_file}: {exc.strerror or exc}") from None
    selecting = bool(pasted or args.folder or args.tag or args.image_ids_file)
    if sum([selecting, args.library, bool(args.dataset) and not selecting]) != 1:
        raise InvalidInput("choose one scope: --dataset NAME, --library, or a selection (--image-id, "
                           "--image-ids-file, --folder, --tag; with --dataset to keep that dataset's images)")
    image_ids = None
    with session_scope() as session:
        dataset_id = get_dataset_by_name(session=session, name=args.dataset).id if args.dataset else None
        if selecting:
            image_ids = selection_ids(session=session, image_ids=pasted, folders=args.folder, tags=args.tag)
    scope = "selection" if selecting else "library" if args.library else "dataset"
    result = run_batch_prediction(actor=operator_user(), model=args.model, scope=scope, dataset_id=dataset_id, image_ids=image_ids,
                                  write_labels=args.write_labels, overwrite=args.overwrite,
                                  export_csv=bool(args.csv))
    if args.csv:
        Path(args.csv).write_bytes(get_storage().get(result["csv_key"]))
        result["csv"] = args.csv
    return BatchReport(result, attempted=result["total"], succeeded=result["total"] - result["failed"])


def cmd_label_issues(args) -> dict:
    with session_scope() as session:
        dataset_id = get_dataset_by_name(session=session, name=args.dataset).id
        result = find_issues(session=session, storage=get_storage(), dataset_id=dataset_id, version_number=args.version,
                             model_id=args.model, folds=args.folds, limit=args.limit)
    result.pop("decisions", None)
    return result
