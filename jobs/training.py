"""Training job (queue "training"): runs one training run through core.training.runs."""

from __future__ import annotations

from core.jobs.rows import JobContext
from core.training.run_job import execute_run
from core.training.runs import mark_run_failed
from core.users import User


def train_run(ctx: JobContext, *, actor: User, run_id: str, resume: bool = False) -> dict:
    return execute_run(ctx, actor=actor, run_id=run_id, resume=resume)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """The job died outside the run's control (worker killed → reaper) or was refused before it
    started (its starter's role removed): the run ends failed with the job's error."""
    if params.get("run_id"):
        mark_run_failed(params["run_id"], error)
