"""Search jobs (queue "training"): one trial of a hyperparameter search, and registering its best trial."""

from __future__ import annotations

from core.jobs.rows import JobContext
from core.training.search_trials import fail_dead_trial, run_trial
from core.training.search_trials import register_best_trial as register_best
from core.users import User


def search_trial(ctx: JobContext, *, actor: User, study: str, role: str = "trial") -> dict:
    return run_trial(ctx, actor=actor, study_name=study)


def register_best_trial(ctx: JobContext, *, actor: User, study: str, role: str = "register") -> dict:
    return register_best(ctx, actor=actor, study_name=study)


def on_job_failed(job_id, params: dict, error: str | None) -> None:
    """A trial job died outside its control (worker killed → reaper): its trial fails, the search goes on."""
    if params.get("role") == "trial":
        fail_dead_trial(job_id, params, error)
