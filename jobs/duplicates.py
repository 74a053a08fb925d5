"""Duplicate search job (queue `imports`): near-duplicate grouping reads every hash in the library, so
the Duplicates view runs it in the background; the groups become the job's result."""

from __future__ import annotations

from typing import Any

from core.jobs import JobContext


def find_duplicates(ctx: JobContext, *, threshold: int, confirm: bool = True) -> dict[str, Any]:
    from core.db import session_scope
    from core.duplicates import exact_duplicate_groups, near_duplicate_groups
    from core.storage import get_storage

    with session_scope() as session:
        exact = exact_duplicate_groups(session=session)
        near = near_duplicate_groups(session=session, storage=get_storage(), threshold=threshold, confirm=confirm,
                                     progress=ctx.progress)
    return {"threshold": threshold, "confirmed": confirm, "exact": [[str(i) for i in g] for g in exact],
            "near": [[str(i) for i in g] for g in near]}
