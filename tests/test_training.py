"""Training runs on real images (scikit-learn's digits) through the platform: version → run → job →
metrics, checkpoint, model row and files; cancel, bad input, a killed worker, resume, the CLI.

Kept tiny (3 classes, 32 px, ConvNeXt-V2 atto from scratch, one thread): these prove the plumbing,
bench/bench_training.py measures accuracy and speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import Conflict, InvalidInput, NotFound
from tests.factories import ADMIN
from tests.model_factory import small_torch_settings
from tests.training_data import make_digits_version

TINY = {"model_type": "convnext", "model_size": "atto", "image_size": 32, "pretrained": False, "epochs": 2,
        "batch_size": 4, "warmup_epochs": 0, "augmentation_preset": "light", "learning_rate": 1e-3,
        "export_formats": []}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


def make_version(stack, **kwargs):
    with stack.session() as session:
        version = make_digits_version(session, stack.storage, classes=3, per_class=10, size=32, **kwargs)
        return version.id


def create(stack, version_id, **changes):
    from core.training.runs import create_run

    with stack.session() as session:
        return create_run(actor=ADMIN, session=session, version_id=version_id, config={**TINY, **changes}).id


def load_run(stack, run_id):
    from core.training.runs import get_run, run_summary

    with stack.session() as session:
        return run_summary(get_run(session=session, run_id=run_id))


def wait_for(predicate, timeout=600.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_run_trains_records_metrics_and_registers_the_model(stack):
    from core.jobs.rows import get_job
    from core.training.registry import get_model, model_summary

    version_id = make_version(stack)
    exports = ["onnx", "torchscript"] if stack.name == "embedded" else []  # exports cost ~30 s on this CPU
    run_id = create(stack, version_id, export_formats=exports)
    assert load_run(stack, run_id)["status"] == "pending"
    from core.training.runs import start_run

    job_id = start_run(actor=ADMIN, run_id=run_id)
    # The embedded in-process pool may already have picked the job up: both states mean "left pending".
    assert load_run(stack, run_id)["status"] in ("queued", "training")
    stack.drain_jobs()

    run = load_run(stack, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["current_epoch"] == 2 and [h["epoch"] for h in run["metrics_history"]] == [1, 2]
    assert {"train_loss", "val_loss", "val_accuracy", "val_top5", "val_f1", "val_precision", "val_recall"} <= set(
        run["metrics_history"][0])
    assert run["best_epoch"] in (1, 2) and run["best_accuracy"] is not None
    assert stack.storage.exists(run["checkpoint_key"])
    with stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded" and job.progress_done == job.progress_total
        model_id = job.result["model_id"]
        model = model_summary(get_model(session=session, model_id=model_id), full=True)
    assert model["timm_name"] == "convnextv2_atto" and model["class_names"] == ["digits-0", "digits-1", "digits-2"]
    assert np.array(model["confusion_matrix"]).shape == (3, 3) and set(model["per_class_metrics"]) == set(
        model["class_names"])
    assert model["preprocessing"]["size"] == 32 and model["preprocessing"]["crop_pct"] == 1.0  # from scratch: the whole image
    assert stack.storage.exists(model["files"]["checkpoint"])
    predictions = json.loads(stack.storage.get(model["files"]["predictions"]))
    assert len(predictions["splits"]["val"]["probs"]) == 6 and len(predictions["splits"]["test"]["probs"]) == 6
    if stack.name == "embedded":
        check_exported_model(stack, model, predictions)


def check_exported_model(stack, model, predictions):
    """ONNX/TorchScript recorded diffs ≤ 1e-4; the Predictor (ONNX Runtime) reproduces the stored
    test probabilities from the original image bytes."""
    from core.prediction.loading import predictor_for_model

    assert model["export_check"]["onnx_max_abs_diff"] <= 1e-4
    assert model["export_check"]["torchscript_max_abs_diff"] <= 1e-4
    with stack.session() as session:
        predictor = predictor_for_model(session=session, storage=stack.storage, model_id=model["id"])
    test = predictions["splits"]["test"]
    probs = predictor.predict([stack.storage.get(key) for key in test["keys"]])
    assert predictor.backend == "onnxruntime"
    assert np.abs(probs - np.array(test["probs"])).max() <= 1e-4


def test_multi_label_run_reports_map(embedded_stack):
    from core.training.runs import start_run

    version_id = make_version(embedded_stack, multi_label=True)
    run_id = create(embedded_stack, version_id, epochs=1, multi_label_loss="asymmetric")
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    run = load_run(embedded_stack, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["task_type"] == "multi_label" and run["num_classes"] == 5
    assert "val_map" in run["metrics_history"][0] and "val_f1_micro" in run["metrics_history"][0]


def test_cancel_stops_a_training_run_within_seconds(embedded_stack):
    from core.jobs.queue import get_backend
    from core.jobs.rows import get_job
    from core.training.runs import cancel_run, start_run

    run_id = create(embedded_stack, make_version(embedded_stack), epochs=200)
    job_id = start_run(actor=ADMIN, run_id=run_id)
    wait_for(lambda: load_run(embedded_stack, run_id)["status"] == "training")

    def progressed() -> bool:
        with embedded_stack.session() as session:
            return get_job(session=session, job_id=job_id).progress_done > 0

    wait_for(progressed)
    asked = time.monotonic()
    with embedded_stack.session() as session:
        cancel_run(actor=ADMIN, session=session, run_id=run_id)
    get_backend().wait(job_id, timeout=120)
    assert time.monotonic() - asked < 30
    run = load_run(embedded_stack, run_id)
    assert run["status"] == "cancelled" and run["current_epoch"] < 200


def test_cancel_before_a_worker_takes_it(stack):
    from core.jobs.rows import get_job
    from core.training.runs import cancel_run, start_run

    version_id = make_version(stack)
    pending = create(stack, version_id)
    with stack.session() as session:
        assert cancel_run(actor=ADMIN, session=session, run_id=pending).status == "cancelled"
    if stack.name == "production":  # RQ: queued with no worker running
        queued = create(stack, version_id)
        job_id = start_run(actor=ADMIN, run_id=queued)
        with stack.session() as session:
            assert cancel_run(actor=ADMIN, session=session, run_id=queued).status == "cancelled"
        stack.drain_jobs()
        with stack.session() as session:
            assert get_job(session=session, job_id=job_id).status == "cancelled"
        assert load_run(stack, queued)["current_epoch"] == 0


def test_bad_run_requests_are_refused_with_reasons(embedded_stack):
    import uuid

    from core.training.runs import delete_run, start_run

    version_id = make_version(embedded_stack)  # 18 train, 6 val, 6 test images
    with pytest.raises(InvalidInput, match="batch_size 64 is larger than the train split \\(18 images\\)"):
        create(embedded_stack, version_id, batch_size=64)
    with pytest.raises(InvalidInput, match="num_classes 7 does not match the version's 3"):
        create(embedded_stack, version_id, num_classes=7)
    with pytest.raises(InvalidInput, match="task_type 'multi_label' does not match the version's 'single_label'"):
        create(embedded_stack, version_id, task_type="multi_label")
    with pytest.raises(NotFound, match="no dataset version"):
        create(embedded_stack, uuid.uuid4())
    with pytest.raises(NotFound, match="no trained model"):
        create(embedded_stack, version_id, pretrained_weights=f"model:{uuid.uuid4()}")
    run_id = create(embedded_stack, version_id)
    with pytest.raises(Conflict, match="only a failed or cancelled run can be resumed"):
        start_run(actor=ADMIN, run_id=run_id, resume=True)
    with embedded_stack.session() as session, pytest.raises(Conflict, match="cancel it before deleting"):
        delete_run(actor=ADMIN, session=session, storage=embedded_stack.storage, run_id=run_id)
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    with pytest.raises(Conflict, match="is completed; only a pending run can be started"):
        start_run(actor=ADMIN, run_id=run_id)


def test_missing_pretrained_weights_fail_the_run_with_a_message(embedded_stack):
    from core.training.runs import start_run

    run_id = create(embedded_stack, make_version(embedded_stack), pretrained_weights="file:/nonexistent/w.safetensors")
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    run = load_run(embedded_stack, run_id)
    assert run["status"] == "failed" and "pretrained_weights: no file /nonexistent/w.safetensors" in run["error"]


def kill_with_children(pid: int) -> None:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in (children.read_text().split() if children.exists() else []):
        kill_with_children(int(child))
    os.kill(pid, signal.SIGKILL)


def test_killed_worker_leaves_the_run_failed_and_it_resumes_from_its_checkpoint(production_stack, tmp_path):
    """A real `rq worker` process trains on Postgres/Redis/S3 and is killed with SIGKILL after its
    first checkpoint; the reaper marks the job and the run failed; resume finishes the run."""
    from core.jobs.rows import reap_stale_jobs
    from core.training.runs import start_run

    stack = production_stack
    run_id = create(stack, make_version(stack), epochs=3)
    start_run(actor=ADMIN, run_id=run_id)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CLS_CACHE_DIR": str(tmp_path / "w")}
    worker = subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--url", stack.redis_url, "training"],
                              cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        first = wait_for(lambda: (run := load_run(stack, run_id))["current_epoch"] >= 1 and run, step=0.05)
    finally:
        kill_with_children(worker.pid)  # RQ's work horse (its own session) trains; the worker waits on it
        worker.wait(timeout=30)
    assert first["status"] == "training" and first["current_epoch"] < 3
    time.sleep(1.0)
    with stack.session() as session:
        assert reap_stale_jobs(session=session, stale_after_s=0.5) == 1
    failed = load_run(stack, run_id)
    assert failed["status"] == "failed" and "worker stopped responding" in failed["error"]

    start_run(actor=ADMIN, run_id=run_id, resume=True, inline=True)
    done = load_run(stack, run_id)
    assert done["status"] == "completed", done["error"]
    assert [h["epoch"] for h in done["metrics_history"]] == [1, 2, 3]
    assert done["metrics_history"][0] == first["metrics_history"][0]  # epoch 1 was not trained again


def test_cli_train_and_models_commands(embedded_stack, capsys):
    from core.cli import main

    make_version(embedded_stack)
    args = ["train", "--dataset", "digits", "--model", "convnext", "--size", "atto", "--epochs", "1",
            "--image-size", "32", "--preset", "none", "--set", "pretrained=false", "--set", "batch_size=4",
            "--set", "export_formats=[]", "--set", "warmup_epochs=0"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed" and out["files"]["checkpoint"].startswith(f"models/{out['model_id']}/")
    assert out["files"]["onnx"] is None and 0 <= out["test_metrics"]["accuracy"] <= 1
    assert main(["models", "list"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)["models"]] == [out["model_id"]]
    assert main(["models", "set-default", out["model_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["is_default"] is True
    assert main(["models", "export-onnx", out["model_id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["files"]["onnx"] == f"models/{out['model_id']}/model.onnx"
    assert shown["export_check"]["onnx_max_abs_diff"] <= 1e-4 and shown["export_check"]["images"] > 0

    assert main(["train", "--dataset", "nope", "--model", "convnext", "--size", "atto"]) == 2
    assert "no dataset named 'nope'" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--model", "convnext", "--size", "huge"]) == 2
    assert "has no size 'huge'" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--model", "convnext", "--size", "atto", "--set", "x=1"]) == 2
    assert "--set x: no such training setting" in capsys.readouterr().err
    assert main(["models", "show", "not-a-uuid"]) == 2
    assert "is not a valid id" in capsys.readouterr().err


def test_resolve_version_makes_one_when_the_dataset_has_none(embedded_stack):
    from core.datasets.dataset import create_dataset
    from core.training.runs import resolve_version

    version_id = make_version(embedded_stack)
    with embedded_stack.session() as session:
        assert resolve_version(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_name="digits").id == version_id
        with pytest.raises(NotFound, match="has no version 9"):
            resolve_version(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_name="digits", number=9)
        create_dataset(actor=ADMIN, session=session, name="empty")
        with pytest.raises(InvalidInput, match="no labeled images"):
            resolve_version(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_name="empty")


def test_delete_run_removes_its_checkpoint_but_keeps_the_model(embedded_stack):
    from core.training.registry import list_models
    from core.training.runs import delete_run, start_run

    run_id = create(embedded_stack, make_version(embedded_stack), epochs=1)
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    key = load_run(embedded_stack, run_id)["checkpoint_key"]
    with embedded_stack.session() as session:
        delete_run(actor=ADMIN, session=session, storage=embedded_stack.storage, run_id=run_id)
    assert not embedded_stack.storage.exists(key)
    with embedded_stack.session() as session:
        models = list_models(session=session)
        assert len(models) == 1 and models[0].training_run_id is None


def test_time_budget_and_lr_range_test_are_settled_on_the_worker_and_recorded(embedded_stack, monkeypatch):
    """No epochs and a time budget: the worker measures its throughput and fits the epochs; auto_lr: an
    LR range test picks the rate. Both are recorded on the run with their reasons."""
    from core.ml import probe
    from core.training.runs import create_run, start_run

    monkeypatch.setattr(probe, "LR_TEST_STEPS", 30)
    settings = {k: v for k, v in TINY.items() if k not in ("epochs", "learning_rate")}
    version_id = make_version(embedded_stack)
    with embedded_stack.session() as session:
        run_id = create_run(actor=ADMIN, session=session, version_id=version_id,
                            config={**settings, "time_budget_min": 0.25, "auto_lr": True}).id
    start_run(actor=ADMIN, run_id=run_id, inline=True)
    run = load_run(embedded_stack, run_id)
    assert run["status"] == "completed", run["error"]
    assert sum(h["seconds"] for h in run["metrics_history"]) <= 0.25 * 60  # training ended within the budget
    config = run["config"]
    assert "epochs" in config["recipe_auto"] and "img/s" in config["recipe_notes"]["epochs"]
    # the fitted epochs are an estimate: training goes on to the deadline, the run counts what it trained
    assert config["epochs"] >= 1 and run["total_epochs"] == max(config["epochs"], len(run["metrics_history"]))
    test = config["lr_range_test"]
    assert len(test["lr"]) == len(test["loss"]) > 10 and config["learning_rate"] == test["chosen"]
    assert config["recipe_notes"]["learning_rate"].startswith("LR range test: lowest loss at")
    from tests.test_training_pages import page, texts

    app = page("pages/training.py", run=run_id)  # the run's page shows its recipe and the LR range test
    assert "LR range test" in texts(app) and len(app.get("plotly_chart")) >= 2
    recipe = app.dataframe[0].value
    assert set(recipe["setting"]) >= {"epochs", "learning_rate", "use_ema"} and "you" in set(recipe["by"])
