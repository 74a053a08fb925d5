"""Duplicate search job (queue `imports`): near-duplicate grouping reads every hash in the library, so
the Duplicates view runs it in the background; the groups become the job's result."""

from __future__ import annotations

from typing import Any

from core.jobs.rows import JobContext
from core.library.duplicate_search import run_duplicate_search
from core.users import User


def find_duplicates(ctx: JobContext, *, actor: User, threshold: int, confirm: bool = True) -> dict[str, Any]:
    return run_duplicate_search(actor=actor, threshold=threshold, confirm=confirm, progress=ctx.progress)
