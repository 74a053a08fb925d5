"""Training job (queue "training"): runs one training run through core.training."""

from __future__ import annotations

from core.jobs import JobContext
from core.training import execute_run, mark_run_failed


def train_run(ctx: JobContext, *, run_id: str, resume: bool = False) -> dict:
    return execute_run(ctx, run_id=run_id, resume=resume)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """The job died outside the run's control (worker killed → reaper): the run ends failed."""
    if params.get("run_id"):
        mark_run_failed(params["run_id"], error)
