"""Hyperparameter search (core.training.search): an Optuna study in the platform's database whose trials are
jobs on the training queue. Embedded: a whole search in-process to a registered best model. Production
(Postgres, Redis, S3): trials on two real `rq worker` processes at once, one of them killed with SIGKILL
mid-trial: its trial ends failed and the study goes on.

Kept tiny (3 digit classes at 32 px, ResNet-18 from scratch, trials of ~10 s, one thread)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core.errors import Conflict, InvalidInput, PermissionDenied
from tests.model_factory import small_torch_settings
from tests.training_data import make_digits_version

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model_type": "resnet", "model_size": "18", "image_size": 32, "pretrained": False}


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


def make_version(stack, per_class=12):
    with stack.session() as session:
        return make_digits_version(session, stack.storage, classes=3, per_class=per_class, size=32).id


def wait_for(predicate, timeout=300.0, step=0.2, explain=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not reached in {timeout:g} s" + (f": {explain()}" if explain else ""))


def search_state(name):
    """What a search that did not end was doing: its summary, its trials and its jobs."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ClsJob

    with session_scope() as session:
        jobs = [(j.kind, j.status, (j.params or {}).get("role"), str(j.started_at), str(j.finished_at), j.error)
                for j in session.scalars(select(ClsJob).order_by(ClsJob.created_at))]
    return f"summary={summary(name)} trials={trials(name)} jobs={jobs}"


def summary(name):
    from core.training.search import load_study, search_summary

    return search_summary(load_study(name))


def trials(name):
    from core.training.search import load_study, trial_rows

    return trial_rows(load_study(name))


def test_search_runs_in_process_to_a_registered_best_model(embedded_stack, capsys):
    from core.training.registry import get_model
    from core.training.search import load_study, margin_over_defaults, register_best, search_figures, start_search
    from core.users import operator_user

    version_id = make_version(embedded_stack)
    actor = operator_user()
    name = start_search(actor=actor, version_id=version_id, base=BASE, budget_min=1.0, trial_min=0.15,
                        refit_min=0.25)
    # ~80 s here (a 1-minute budget, then the refit); CI once saw it not end in 300 s, cause not found
    # (not reproduced in 3 runs of the preceding test files): wait longer and print where it stood
    wait_for(lambda: summary(name)["status"] == "completed", timeout=600, explain=lambda: search_state(name))
    rows = trials(name)
    assert len(rows) >= 2 and rows[0]["defaults"] and rows[0]["state"] == "complete"
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    searched, refit = rows[:-1], rows[-1]  # the last minutes trained the best settings again: the refit
    assert refit["refit"] and refit["state"] == "complete" and not any(r["refit"] for r in searched), rows
    best_searched = max((r for r in searched if r["state"] == "complete"), key=lambda r: r["value"])
    defaults = searched[0]
    val_images = load_study(name).user_attrs["val_images"]
    assert val_images > 0
    if best_searched["value"] - defaults["value"] < margin_over_defaults(defaults["value"], val_images):
        best_searched = defaults  # a lead within the noise of the validation split: the defaults stand
    assert {k: refit[k] for k in ("learning_rate", "augmentation_preset")} == {
        k: best_searched[k] for k in ("learning_rate", "augmentation_preset")}
    assert summary(name)["best_trial"] == refit["trial"]
    # the refit learned from train + val (the settings came from val) and carries its settings' val score
    assert refit["trained_on"] == "train+val" and all(r["trained_on"] == "train" for r in searched)
    assert refit["value"] == rows[load_study(name).trials[refit["trial"]].user_attrs["refit_of"]]["value"]
    from core.models import ClsTrainingRun

    with embedded_stack.session() as session:
        refit_run = session.get(ClsTrainingRun, uuid.UUID(refit["run_id"]))
        assert refit_run.config["train_on_val"] is True
        assert not any(k.startswith("val_") for row in refit_run.metrics_history for k in row)
    figures = search_figures(load_study(name))
    assert figures["history"] is not None

    job_id = register_best(actor=actor, name=name, inline=True)
    from core.jobs.rows import get_job

    with embedded_stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded", job.error
        model = get_model(session=session, model_id=job.result["model_id"])
        assert model.accuracy is not None and model.timm_name == "resnet18"
    assert summary(name)["best_model_id"] == job.result["model_id"]
    with pytest.raises(Conflict, match="no budget left"):
        from core.training.search import resume_search

        resume_search(actor=actor, name=name)
    check_pages(name, job.result["model_id"])
    check_cli(name, capsys)


def test_the_defaults_stand_unless_a_trial_beats_them_by_more_than_the_noise():
    """A sampled trial's lead within one standard error of the defaults' score on the validation
    images (at least 0.01) is noise: the refit trains the defaults."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from core.training.search import best_trial, margin_over_defaults

    assert margin_over_defaults(0.9, 400) == pytest.approx(0.015)
    assert margin_over_defaults(0.99, 10_000) == 0.01
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def study_of(defaults: float, other: float, val_images: int):
        study = optuna.create_study(direction="maximize")
        study.set_user_attr("val_images", val_images)
        space = {"learning_rate": FloatDistribution(1e-5, 1.0, log=True)}
        study.add_trial(create_trial(value=defaults, params={"learning_rate": 2e-3}, distributions=space,
                                     user_attrs={"defaults": True}))
        study.add_trial(create_trial(value=other, params={"learning_rate": 0.1}, distributions=space))
        return study

    assert best_trial(study_of(0.90, 0.91, 400)).params["learning_rate"] == 2e-3  # lead 0.01 < 0.015
    assert best_trial(study_of(0.90, 0.93, 400)).params["learning_rate"] == 0.1  # lead 0.03
    assert best_trial(study_of(0.90, 0.92, 100_000)).params["learning_rate"] == 0.1  # big split: 0.01 floor
    assert best_trial(study_of(0.90, 0.85, 400)).params["learning_rate"] == 2e-3


def check_cli(name, capsys):
    import json

    from core.cli import main

    assert main(["search", "show", name]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == name and shown["trials"][0]["defaults"] and shown["best_model_id"]
    assert main(["search", "list"]) == 0
    assert [s["name"] for s in json.loads(capsys.readouterr().out)["searches"]] == [name]
    assert main(["search", "cancel", name]) == 2 and "only a running one can be cancelled" in capsys.readouterr().err


def check_pages(name, model_id):
    """The Training page lists the search; its page shows the trials, Optuna's figures and the model."""
    from tests.test_training_pages import page, texts

    app = page("pages/training.py")
    assert "Hyperparameter searches" in texts(app) and "resnet/18 · budget 1 min" in texts(app)
    assert ":green-badge[completed]" in texts(app)
    app = page("pages/training.py", search=name)
    assert ":green-badge[completed]" in texts(app) and "maximising val_f1 on val" in texts(app)
    assert len(app.dataframe) == 1 and len(app.get("plotly_chart")) >= 1
    assert any(b.label == "Register the best trial as a model" for b in app.button)
    assert any(b.label == "Open the registered model" for b in app.button)


def test_each_job_loading_the_study_draws_new_settings(embedded_stack):
    """Optuna keeps no sampler in its storage: every trial job loads the study with a sampler seeded
    by the trial count, so startup draws differ from job to job."""
    import optuna

    from core.training.search import load_study, study_storage
    from core.training.search_trials import suggest

    optuna.create_study(study_name="search-draws", storage=study_storage(), direction="maximize")
    attrs = {"lr_center": 2e-3, "train_images": 100}
    drawn = []
    for value in (0.5, 0.6, 0.7):
        study = load_study("search-draws")
        trial = study.ask()
        drawn.append(suggest(trial, attrs)["learning_rate"])
        study.tell(trial, value)
    assert len(set(drawn)) == 3


def test_search_refuses_bad_requests_and_non_admins(embedded_stack, monkeypatch):
    from core.config import reset_settings_cache
    from core.training.search import start_search
    from core.users import oidc_user, operator_user

    version_id = make_version(embedded_stack, per_class=4)
    with pytest.raises(InvalidInput, match="budget_min"):
        start_search(actor=operator_user(), version_id=version_id, base=BASE, budget_min=0)
    with pytest.raises(InvalidInput, match="a search maximises"):
        start_search(actor=operator_user(), version_id=version_id, base={**BASE, "early_stopping_metric": "val_loss"},
                     budget_min=1)
    monkeypatch.setenv("ROLES", "ann@x.com=labeler")
    reset_settings_cache()
    with pytest.raises(PermissionDenied, match="needs the admin role; you are a labeler"):
        start_search(actor=oidc_user("ann@x.com"), version_id=version_id, base=BASE, budget_min=1)
    with pytest.raises(PermissionDenied):
        start_search(actor=None, version_id=version_id, base=BASE, budget_min=1)


@pytest.fixture
def production_stack(request, tmp_path, monkeypatch):
    from tests.plugins.stack import _apply, _cleanup, make_stack

    built = make_stack("production", request, tmp_path)
    _apply(monkeypatch, built)
    yield built
    _cleanup()


def start_worker(stack, tmp_path, name):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CLS_CACHE_DIR": str(tmp_path / name)}
    return subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--url", stack.redis_url, "--name", name,
                             "training"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def oldest_heartbeat_age(stack, job_ids) -> float:
    from datetime import UTC, datetime

    from core.models import ClsJob

    with stack.session() as session:
        beats = [session.get(ClsJob, job_id).heartbeat_at for job_id in job_ids]
    now = datetime.now(UTC)
    return max((now - (b if b.tzinfo else b.replace(tzinfo=UTC))).total_seconds() for b in beats)


def test_trials_run_on_two_rq_workers_and_the_study_survives_a_killed_one(production_stack, tmp_path):
    from core.jobs.rows import reap_stale_jobs
    from core.models import ClsJob
    from core.training.search import TRIAL_KIND, cancel_search, start_search
    from core.users import operator_user
    from tests.test_training import kill_with_children

    stack = production_stack
    version_id = make_version(stack)
    name = start_search(actor=operator_user(), version_id=version_id, base=BASE, budget_min=3, trial_min=0.3,
                        parallel=2)
    workers = {n: start_worker(stack, tmp_path, n) for n in ("w1", "w2")}
    try:
        def running_jobs():
            with stack.session() as session:
                return [j for j in session.query(ClsJob).filter_by(kind=TRIAL_KIND, status="running")]

        both = wait_for(lambda: len(running_jobs()) == 2 and running_jobs(), timeout=120)
        assert len({j.id for j in both}) == 2  # two trials at once, one per worker
        wait_for(lambda: sum(r["state"] == "running" and r["run_id"] is not None for r in trials(name)) == 2)
        kill_with_children(workers.pop("w1").pid)
        # The live worker stamps its heartbeat at least every JOB_HEARTBEAT_S (10 s): once the killed
        # one's is older than that, reaping at 10.8 s takes the dead job only.
        wait_for(lambda: oldest_heartbeat_age(stack, [j.id for j in both]) > 11.5, timeout=60, step=0.5)
        with stack.session() as session:
            assert reap_stale_jobs(session=session, stale_after_s=10.8) == 1
        failed = [r for r in trials(name) if r["state"] == "fail"]
        assert len(failed) == 1 and "stopped responding" in failed[0]["error"]
        finished_before = sum(r["state"] in ("complete", "pruned") for r in trials(name))
        # the other worker finishes its trial and takes the replacement job: the study goes on
        wait_for(lambda: sum(r["state"] in ("complete", "pruned") for r in trials(name)) >= finished_before + 2,
                 timeout=240)
        cancel_search(actor=operator_user(), name=name)
    finally:
        for worker in workers.values():
            kill_with_children(worker.pid)
            worker.wait(timeout=30)
    states = [r["state"] for r in trials(name)]
    assert states.count("fail") >= 1 and states.count("complete") >= 1
