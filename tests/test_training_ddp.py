"""A training run with devices=2 through the platform (version → run → job → rows, files, model):
the job spawns two gloo ranks (core.ml.spawn); rank 0's progress, per-epoch checkpoints and the
model reach the database and storage as with one device. SQLite + local files and Postgres + S3 +
RQ (`stack`). Ports: MASTER_PORT from this branch's range 29610-29619."""

from __future__ import annotations

import pytest

from tests.factories import ADMIN
from tests.test_training import create, load_run, make_version, small_torch  # noqa: F401 (fixture)


def test_two_device_run_completes_checkpoints_and_registers_its_model(stack, monkeypatch):
    import torch

    from core.jobs.rows import get_job
    from core.training.registry import get_model, model_summary
    from core.training.runs import start_run

    monkeypatch.setenv("MASTER_PORT", "29614" if stack.name == "embedded" else "29615")
    version_id = make_version(stack)
    run_id = create(stack, version_id, devices=2)
    job_id = start_run(actor=ADMIN, run_id=run_id)
    stack.drain_jobs()

    run = load_run(stack, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["config"]["devices"] == 2
    assert run["current_epoch"] == 2 and [h["epoch"] for h in run["metrics_history"]] == [1, 2]
    assert run["metrics_history"][-1]["val_accuracy"] is not None and run["best_epoch"] in (1, 2)
    with stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded" and job.progress_done == job.progress_total
        model = model_summary(get_model(session=session, model_id=job.result["model_id"]), full=True)
    checkpoint = torch.load(_local(stack, run["checkpoint_key"], "ckpt.pt"), weights_only=True)
    assert checkpoint["fit"]["epoch"] == 2 and not any(k.startswith("module.") for k in checkpoint["model"])
    best = torch.load(_local(stack, model["files"]["checkpoint"], "best.pt"), weights_only=True)
    assert best["state_dict"].keys() == checkpoint["model"].keys()


def test_devices_that_do_not_divide_the_batch_are_refused(embedded_stack):
    from core.errors import InvalidInput

    version_id = make_version(embedded_stack)
    with pytest.raises(InvalidInput, match="batch_size 4 is split evenly over 3 devices"):
        create(embedded_stack, version_id, devices=3)


def _local(stack, key, name):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(stack.storage.get(key))
    return path
