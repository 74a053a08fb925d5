"""The job bodies of a search (core.training.search): one trial (ask → train a run → tell → top up), the
registration of the best trial as a model, and the hook that fails the trial of a job whose worker died."""

from __future__ import annotations

import time
import uuid
from typing import Any

from core.db import session_scope
from core.errors import JobCancelled
from core.ml.config import parse_config
from core.ml.data import records_from_manifest
from core.models import ClsDatasetVersion, ClsTrainingRun
from core.permissions import requires
from core.training.run_job import RunStopped, _RunJob, execute_run
from core.training.runs import create_run, mark_run_failed
from core.training.search import SEARCH_SPACE, best_trial, load_study, study_storage, top_up, trials_end
from core.users import User, actor_from_record

AUGMENTATIONS = ("crops", "light", "medium", "heavy", "sota")
MIN_TRIAL_S = 5.0
"""A trial is not started with less of the search's budget left than this."""


def suggest(trial, attrs: dict[str, Any]) -> dict[str, Any]:
    """The trial's settings: around the recipe's learning rate, and the regularisation that matters
    most on small data. The first trial is enqueued with the recipe's own values."""
    lr = float(attrs["lr_center"])
    values = {
        "learning_rate": trial.suggest_float("learning_rate", lr / 3, lr * 3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 0.01, 0.2, log=True),
        "augmentation_preset": trial.suggest_categorical("augmentation_preset", AUGMENTATIONS),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "drop_path_rate": trial.suggest_float("drop_path_rate", 0.0, 0.15),
        "batch_size": trial.suggest_categorical("batch_size", (16, 32, 64)),
    }
    train = int(attrs["train_images"])
    values["batch_size"] = max(2, min(values["batch_size"], train - train % 2))  # a small train split
    assert set(values) == set(SEARCH_SPACE)
    return values


@requires("admin", "searching hyperparameters")
def run_trial(ctx, *, actor: User, study_name: str) -> dict[str, Any]:
    """One trial, as the actor who started the search: ask, train within the trial's time budget
    (pruned if weak), tell, top up."""
    from optuna.trial import TrialState

    study = load_study(study_name)
    attrs = study.user_attrs
    remaining_min = (trials_end(attrs) - time.time()) / 60
    refit = attrs.get("refit") == "queued"  # the refit runs its full minutes once queued
    if attrs.get("status") != "running" or (remaining_min * 60 < MIN_TRIAL_S and not refit):
        top_up(actor=actor, name=study_name, exclude=ctx.job_id)
        return {"skipped": "the search is over or cancelled"}
    trial = study.ask()
    trial.set_user_attr("job_id", str(ctx.job_id))
    refit_trial = bool(trial.user_attrs.get("refit"))
    budget = attrs["refit_min"] if refit_trial else min(attrs["trial_min"], remaining_min)
    values = {**attrs["base"], **suggest(trial, attrs), "export_formats": [], "time_budget_min": round(budget, 3)}
    if refit_trial and attrs.get("refit_on_val"):
        values["train_on_val"] = True
        trial.set_user_attr("trained_on", "train+val")
    if trial.user_attrs.get("defaults"):  # the recipe's own choice on this worker, from its measured epochs
        for key in ("augmentation_preset", "drop_path_rate", "label_smoothing"):  # the preset's smoothing
            values.pop(key)
    try:
        with session_scope() as session:
            run = create_run(session=session, actor=actor, version_id=attrs["version_id"], config=values,
                             name=f"{attrs['name']} · trial {trial.number}",
                             description=f"hyperparameter search {study_name}, trial {trial.number}")
            run_id = run.id
        trial.set_user_attr("run_id", str(run_id))
        metric = attrs["metric"]

        def after_epoch(state) -> None:
            if metric not in state.history[-1]:  # an epoch the time budget's cadence did not validate
                return
            trial.report(float(state.history[-1][metric]), state.epoch)
            if not refit_trial and trial.should_prune():  # the refit is the result: never pruned
                raise RunStopped(f"pruned by the search after epoch {state.epoch}: {metric} below the median")

        result = execute_run(ctx, actor=actor, run_id=run_id, after_epoch=after_epoch, final=False)
    except RunStopped:
        study.tell(trial, state=TrialState.PRUNED)
        result = {"pruned": True}
    except JobCancelled:
        trial.set_user_attr("error", "cancelled")
        study.tell(trial, state=TrialState.FAIL)
        top_up(actor=actor, name=study_name, exclude=ctx.job_id)
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
        study.tell(trial, state=TrialState.FAIL)
        top_up(actor=actor, name=study_name, exclude=ctx.job_id)
        raise
    else:
        score = result["best_score"]
        if score is None and refit_trial:  # trained on train + val: the score is its settings' (on val)
            score = study.trials[int(trial.user_attrs["refit_of"])].value
        study.tell(trial, score)
    top_up(actor=actor, name=study_name, exclude=ctx.job_id)
    return {"study": study_name, "trial": trial.number, **result}


def fail_dead_trial(job_id, params: dict[str, Any], error: str | None) -> None:
    """The trial job's worker died (the reaper found its heartbeat stopped): its trial ends failed,
    its run too, and the search goes on with a new trial job."""
    from optuna.trial import TrialState

    study = load_study(params["study"])
    storage = study_storage()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("job_id") == str(job_id):
            storage.set_trial_user_attr(trial._trial_id, "error", (error or "the trial's worker died")[:500])
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            if trial.user_attrs.get("run_id"):
                mark_run_failed(trial.user_attrs["run_id"], error)
    top_up(actor=actor_from_record(params["actor"]), name=params["study"], exclude=uuid.UUID(str(job_id)))


@requires("admin", "registering a model")
def register_best_trial(ctx, *, actor: User, study_name: str) -> dict[str, Any]:
    """The best finished trial's saved weights, evaluated on the test split, exported, registered."""
    import tempfile
    from pathlib import Path

    from core.ml import pipeline

    study = load_study(study_name)
    best = best_trial(study)
    with session_scope() as session:
        run = session.get(ClsTrainingRun, uuid.UUID(best.user_attrs["run_id"]))
        version = session.get(ClsDatasetVersion, run.dataset_version_id)
        job = _RunJob(run, version, actor=actor, resume=False)
        checkpoint = run.checkpoint_key
    exports = study.user_attrs["base"].get("export_formats") or ["onnx", "torchscript"]
    job.config = parse_config({**job.config.model_dump(mode="json"), "export_formats": exports})
    ctx.progress(0, None, f"evaluating trial {best.number} on the test split", force=True)
    saved = job._load_torch(checkpoint)
    records = records_from_manifest(job.manifest, num_classes=job.config.num_classes)
    with tempfile.TemporaryDirectory(prefix="cls-search-") as tmp:
        artifacts = pipeline.evaluate_saved(job.config, records, saved["fit"], class_names=job.class_names,
                                            storage=job.storage, workdir=Path(tmp), exports=tuple(exports))
        model_id, keys = job.register(artifacts)
    study.set_user_attr("best_model_id", str(model_id))
    metrics = {k: v for k, v in artifacts.report.items() if k not in ("confusion_matrix", "per_class")}
    return {"study": study_name, "trial": best.number, "run_id": str(job.run_id), "model_id": str(model_id),
            "files": keys, "test_metrics": metrics, "export_check": artifacts.export_check}
