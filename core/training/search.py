"""Budgeted hyperparameter search over training runs, with Optuna.

A search is an Optuna study kept in the platform's own database (RDB storage on DATABASE_URL: a schema
`optuna` beside ours on Postgres; a sibling SQLite file embedded, since Optuna's tables include its own
`alembic_version`). Its settings and status live in the study's user attributes. Each trial is a job
on the `training` queue, so every training worker shares one study: the job asks the study for
parameters, trains a run with them under the trial's time budget, reports each epoch's validation
score (weak trials are pruned by the median rule) and tells the study the result; then it tops the
search up to `parallel` trial jobs while the wall-clock budget lasts. The first trial is the recipe's
defaults, and they stand unless a sampled trial beats them by more than the validation split's noise. A trial whose worker died is marked failed by the reaper's hook and replaced.
Cancel stops the trials at their next batch; resume gives back the budget that was left.
The best trial becomes a registered model through a job that evaluates its saved weights on the test
split and exports them (core.training.search_trials).
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from core.db import session_scope
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import as_uuid
from core.jobs.queue import enqueue, get_backend, submit_created
from core.jobs.rows import create_job, request_cancel, run_job
from core.ml.augment import PRESETS
from core.models import ClsDatasetVersion, ClsJob
from core.permissions import requires
from core.training.runs import recipe_values
from core.users import User, actor_record

TRIAL_KIND, REGISTER_KIND = "search_trial", "search_register"
STUDY_PREFIX = "search-"
SEARCH_SPACE = ("learning_rate", "weight_decay", "augmentation_preset", "label_smoothing", "drop_path_rate",
                "batch_size")
MAXIMISED = ("val_f1", "val_accuracy", "val_top5", "val_map")

_storages: dict[tuple[int, str], Any] = {}
_top_up_lock = threading.Lock()  # in-process jobs; across processes the database lock below serialises


def optuna_location(database_url: str) -> tuple[str, dict[str, Any]]:
    """Where the studies live: the same Postgres database in schema `optuna`, or a SQLite file beside
    the platform's (SQLite has no schemas, and Optuna's own alembic_version would clash with ours)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "platform.db")
        return f"sqlite:///{path.with_name(path.stem + '.optuna' + (path.suffix or '.db'))}", {
            "connect_args": {"timeout": 30}}
    return database_url, {"connect_args": {"options": "-csearch_path=optuna"}, "pool_pre_ping": True}


def study_storage():
    """Optuna's RDBStorage for this process and database (engines never cross a fork)."""
    import optuna

    database_url = get_settings().database_url
    key = (os.getpid(), database_url)
    if key not in _storages:
        url, engine_kwargs = optuna_location(database_url)
        if not url.startswith("sqlite"):
            try:
                with session_scope() as session:
                    session.execute(text("CREATE SCHEMA IF NOT EXISTS optuna"))
            except IntegrityError:  # two processes created it at once: it exists
                pass
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _storages[key] = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return _storages[key]


def load_study(name: str):
    """The study with the search's sampler and pruner (Optuna keeps neither in its storage). The
    sampler's seed moves with the trial count, so jobs loading the study anew do not repeat a draw."""
    import optuna

    storage = study_storage()
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise NotFound(f"no search {name!r}") from None
    seed = int(storage.get_study_user_attrs(study_id).get("seed", 0)) + storage.get_n_trials(study_id)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler(seed), pruner=pruner())


def sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


def pruner():
    """Median rule: after two finished trials, a trial whose score at an epoch is below the median of
    earlier trials at that epoch stops (not in its first two epochs)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)


def _set(study, **attrs: Any) -> None:
    for key, value in attrs.items():
        study.set_user_attr(key, value)


# ---------------------------------------------------------------- writes


@requires("admin", "searching hyperparameters")
def start_search(*, actor: User, version_id, base: dict[str, Any], budget_min: float, trial_min: float | None = None,
                 parallel: int = 1, name: str | None = None, seed: int = 0, refit_min: float = 0.0,
                 refit_on_val: bool = True) -> str:
    """Create the study (its first trial the recipe's defaults) and queue `parallel` trial jobs.
    refit_min: the last minutes of the budget train the best settings found once more, that long
    (short trials find the settings; the refit trains them as long as a normal run would).
    refit_on_val: the refit trains on train + val (the val split has done its work, choosing the
    settings; a quarter more data is worth more than a held-out score), keeping its last weights."""
    import optuna

    if not 0 < budget_min <= 7 * 24 * 60:
        raise InvalidInput(f"budget_min {budget_min!r}: give minutes between 0 and one week")
    parallel = int(parallel)
    if not 1 <= parallel <= 64:
        raise InvalidInput(f"parallel {parallel}: between 1 and 64 trial jobs at once")
    trial_min = float(trial_min or max(1.0, budget_min / 4))
    refit_min = float(refit_min or 0.0)
    if not 0 <= refit_min < budget_min:
        raise InvalidInput(f"refit_min {refit_min:g} must leave part of the budget ({budget_min:g} min) to the trials")
    if not 0 < trial_min <= budget_min - refit_min:
        raise InvalidInput(f"trial_min {trial_min:g} must be above 0 and at most the budget less the refit "
                           f"({budget_min - refit_min:g} min)")
    base = {k: v for k, v in base.items() if k not in SEARCH_SPACE and k not in ("time_budget_min", "epochs")}
    metric = base.get("early_stopping_metric") or "val_f1"
    if metric not in MAXIMISED:
        raise InvalidInput(f"early_stopping_metric {metric}: a search maximises; use one of {', '.join(MAXIMISED)}")
    with session_scope() as session:
        version = session.get(ClsDatasetVersion, as_uuid(version_id, "version id"))
        if version is None:
            raise NotFound(f"no dataset version {version_id}")
        values = {**base, "num_classes": version.class_count, "task_type": version.task_type,
                  "time_budget_min": trial_min}
        defaults = recipe_values(values, split_counts=version.split_counts or {})  # also checks the settings
        dataset_id, version_number = str(version.dataset_id), version.version_number
        train_images = (version.split_counts or {}).get("train", 0)
        val_images = (version.split_counts or {}).get("val", 0)
    name = (name or "").strip() or f"{base.get('model_type')}-{base.get('model_size')} v{version_number}"
    study_name = f"{STUDY_PREFIX}{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=study_name, storage=study_storage(), direction="maximize",
                                sampler=sampler(seed), pruner=pruner())
    lr = float(defaults["learning_rate"])
    _set(study, name=name[:200], dataset_id=dataset_id, version_id=str(version_id), base=base, metric=metric,
         budget_min=budget_min, trial_min=trial_min, parallel=parallel, lr_center=lr, status="running",
         train_images=train_images, val_images=val_images, refit_min=refit_min, refit=None, seed=seed,
         refit_on_val=bool(refit_on_val),
         deadline=time.time() + 60 * budget_min, created_at=time.time(), actor=actor_record(actor))
    study.enqueue_trial({
        "learning_rate": lr, "weight_decay": defaults["weight_decay"],
        "augmentation_preset": defaults["augmentation_preset"],
        "label_smoothing": PRESETS[defaults["augmentation_preset"]].settings["label_smoothing"],
        "drop_path_rate": defaults["drop_path_rate"], "batch_size": int(base.get("batch_size") or 32),
    }, user_attrs={"defaults": True})
    top_up(actor=actor, name=study_name)
    return study_name


@requires("admin", "cancelling a search")
def cancel_search(*, actor: User, name: str) -> dict[str, Any]:
    """Stop: queued trials never start, running ones stop at their next batch (marked failed)."""
    study = load_study(name)
    attrs = study.user_attrs
    if attrs.get("status") != "running":
        raise Conflict(f"search {attrs.get('name', name)!r} is {attrs.get('status')}; only a running one can be cancelled")
    _set(study, status="cancelled", remaining_s=max(0.0, attrs["deadline"] - time.time()))
    _drop_waiting(study)
    with session_scope() as session:
        for job in _active_trial_jobs(session, name):
            request_cancel(session=session, actor=actor, job_id=job.id)
    return search_summary(load_study(name))


@requires("admin", "resuming a search")
def resume_search(*, actor: User, name: str, budget_min: float | None = None) -> dict[str, Any]:
    """Run a cancelled or finished search again: for the budget it had left, or `budget_min` more."""
    study = load_study(name)
    attrs = study.user_attrs
    if attrs.get("status") == "running" and attrs["deadline"] > time.time():
        raise Conflict(f"search {attrs['name']!r} is still running")
    seconds = 60 * budget_min if budget_min else attrs.get("remaining_s") or 0.0
    if seconds <= 0:
        raise Conflict(f"search {attrs['name']!r} has no budget left; give more minutes to resume it")
    refit = float(attrs.get("refit_min") or 0.0)
    _set(study, status="running", deadline=time.time() + seconds, remaining_s=0.0, refit=None,
         refit_min=refit if 2 * 60 * refit <= seconds else 0.0)
    top_up(actor=actor, name=name)
    return search_summary(load_study(name))


@requires("admin", "registering a model")
def register_best(*, actor: User, name: str, inline: bool = False) -> uuid.UUID:
    """Queue (or, inline, run now) the job that turns the best trial's weights into a registered model."""
    best_trial(load_study(name))  # refuses a search with no finished trial before any job exists
    params = {"study": name, "role": "register"}
    if not inline:
        return enqueue(actor=actor, kind=REGISTER_KIND, params=params)
    with session_scope() as session:
        job_id = create_job(session=session, actor=actor, kind=REGISTER_KIND, params=params).id
    run_job(job_id)
    return job_id


def trials_end(attrs: dict[str, Any]) -> float:
    """When trials stop being started: the deadline, less the refit's minutes until the refit is queued.
    A trial started in time runs to its own budget, so the search can end a trial's overhead late."""
    if attrs.get("refit"):
        return attrs["deadline"]
    return attrs["deadline"] - 60 * float(attrs.get("refit_min") or 0.0)


@requires("admin", "searching hyperparameters")
def top_up(*, actor: User, name: str, exclude: uuid.UUID | None = None) -> int:
    """Keep `parallel` trial jobs queued or running while the search runs and its budget lasts; then
    queue the refit of the best settings (if asked for); mark the search completed once nothing is
    left to run. Returns the jobs added."""
    study = load_study(name)
    attrs = study.user_attrs
    now, running = time.time(), attrs.get("status") == "running"
    if running:
        get_backend().check()
    with _top_up_lock, session_scope() as session:
        if session.bind.dialect.name == "postgresql":  # one top-up at a time across workers
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": name})
        active = [j for j in _active_trial_jobs(session, name) if j.id != exclude]
        wanted = 0
        if running and not attrs.get("refit") and now < trials_end(attrs):
            wanted = int(attrs["parallel"]) - len(active)
        elif running and not attrs.get("refit") and attrs.get("refit_min") and not active:
            # queued even when the last trial's evaluation ran into the refit's minutes (seen under load):
            # the refit is the model the search registers, so it runs its minutes once the trials end
            wanted = _queue_refit(study)
        elif running and not active:
            _drop_waiting(study)
            study.set_user_attr("status", "completed")
        params = {"study": name, "role": "trial"}
        created = [create_job(session=session, actor=actor, kind=TRIAL_KIND, params=params).id for _ in range(max(0, wanted))]
    for job_id in created:
        submit_created(job_id, TRIAL_KIND)
    return len(created)


def _drop_waiting(study) -> None:
    """Trials queued in the study that no job will run (the search ended or was cancelled first) end failed."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "error", "not run: the search ended first")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _queue_refit(study) -> int:
    """The best settings, once more, for the refit's minutes (its trial is marked `refit`)."""
    try:
        best = best_trial(study)
    except Conflict:  # no finished trial to refit
        study.set_user_attr("status", "completed")
        return 0
    study.enqueue_trial(best.params, user_attrs={"refit": True, "refit_of": best.number})
    study.set_user_attr("refit", "queued")
    return 1


def _active_trial_jobs(session, name: str) -> list[ClsJob]:
    jobs = session.scalars(select(ClsJob).where(ClsJob.kind == TRIAL_KIND,
                                                ClsJob.status.in_(("queued", "running")))).all()
    return [job for job in jobs if (job.params or {}).get("study") == name]




# ---------------------------------------------------------------- reads


MIN_MARGIN_OVER_DEFAULTS = 0.01
"""Least lead (in the metric's units) a sampled trial needs over the defaults' trial to be chosen."""


def margin_over_defaults(defaults_value: float, val_images: int) -> float:
    """How far a trial must beat the defaults to count: one standard error of the defaults' score on
    the validation images (a short trial's lead within the noise of a small validation split picked
    worse settings than the defaults on the scans bench: 0.959 vs 0.984 test), at least MIN_MARGIN."""
    p = min(max(float(defaults_value), 0.0), 1.0)
    noise = math.sqrt(p * (1 - p) / val_images) if val_images else 0.0
    return max(MIN_MARGIN_OVER_DEFAULTS, noise)


def best_trial(study):
    """The refit of the best settings when it finished (trained longest); else the best trial, where
    the defaults' trial stands unless another beats it by margin_over_defaults."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        raise Conflict(f"search {study.user_attrs.get('name', study.study_name)!r} has no finished trial yet")
    refits = [t for t in done if t.user_attrs.get("refit")]
    if refits:
        return refits[-1]
    best = max(done, key=lambda t: t.value)
    defaults = next((t for t in done if t.user_attrs.get("defaults")), None)
    if defaults is not None and best.value - defaults.value < margin_over_defaults(
            defaults.value, int(study.user_attrs.get("val_images") or 0)):
        return defaults
    return best


def search_summary(study) -> dict[str, Any]:
    from optuna.trial import TrialState

    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = best_trial(study) if done else None
    status = attrs.get("status")
    if status == "running" and attrs.get("refit"):
        status = "refitting"
    elif status == "running" and time.time() >= attrs.get("deadline", 0):
        # past the deadline with the study still running: a trial ends, or the refit waits to start
        # (the last trial job's top-up marks the study completed; saying so earlier showed the search
        # completed while its refit had still to run)
        status = "finishing"
    return {
        "name": study.study_name, "title": attrs.get("name"), "status": status, "metric": attrs.get("metric"),
        "budget_min": attrs.get("budget_min"), "trial_min": attrs.get("trial_min"), "parallel": attrs.get("parallel"),
        "refit_min": attrs.get("refit_min") or 0.0, "refit_on_val": bool(attrs.get("refit_on_val")),
        "deadline": attrs.get("deadline"), "created_at": attrs.get("created_at"), "version_id": attrs.get("version_id"),
        "dataset_id": attrs.get("dataset_id"), "model_type": (attrs.get("base") or {}).get("model_type"),
        "model_size": (attrs.get("base") or {}).get("model_size"), "trial_counts": counts,
        "best_value": best.value if best else None, "best_trial": best.number if best else None,
        "best_params": best.params if best else None, "best_run_id": best.user_attrs.get("run_id") if best else None,
        "best_model_id": attrs.get("best_model_id"),
    }


def list_searches() -> list[dict[str, Any]]:
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(study_storage(), include_best_trial=False)
             if s.study_name.startswith(STUDY_PREFIX)]
    rows = [search_summary(load_study(name)) for name in names]
    return sorted(rows, key=lambda r: r["created_at"] or 0, reverse=True)


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                   if trial.datetime_complete and trial.datetime_start else None)
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                     "epochs": max(trial.intermediate_values, default=None), "seconds": seconds,
                     "defaults": bool(trial.user_attrs.get("defaults")), "refit": bool(trial.user_attrs.get("refit")),
                     "trained_on": trial.user_attrs.get("trained_on", "train"),
                     "run_id": trial.user_attrs.get("run_id"),
                     "error": trial.user_attrs.get("error"), **trial.params})
    return rows


def search_figures(study) -> dict[str, Any]:
    """Optuna's own plotly figures: the optimisation history and, with two finished trials whose
    parameters differ, the parameter importances (fANOVA)."""
    from optuna import visualization

    figures: dict[str, Any] = {"history": None, "importance": None}
    if not any(t.value is not None for t in study.get_trials(deepcopy=False)):
        return figures
    figures["history"] = visualization.plot_optimization_history(study, target_name=study.user_attrs.get("metric"))
    try:
        figures["importance"] = visualization.plot_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few finished trials, or no varied parameter
        pass
    return figures
