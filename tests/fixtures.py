"""Job functions used by the queue tests (workers import them by dotted path). Like every job
function they take the actor who queued the job (core.jobs.rows.run_job passes it)."""

import time

from core.jobs.kinds import JobKind

TEST_JOB_KINDS = {
    "test_add_numbers": JobKind("tests.fixtures.add_numbers", "imports"),
    "test_add_numbers_on_predictions": JobKind("tests.fixtures.add_numbers", "predictions"),
    "test_fail_with_message": JobKind("tests.fixtures.fail_with_message", "training"),
    "test_wait_for_cancel": JobKind("tests.fixtures.wait_for_cancel", "imports"),
    "test_outside_jobs": JobKind("os.system", "imports"),  # the runner must refuse it
}
"""Job kinds of the tests (core.jobs.kinds.JOB_KINDS holds the product's), added for every test."""


def add_numbers(ctx, *, actor, a: int, b: int) -> dict:
    ctx.progress(0, 2, "adding")
    ctx.progress(2, 2, "done")
    return {"sum": a + b}


def fail_with_message(ctx, *, actor, message: str) -> dict:
    raise ValueError(message)


def wait_for_cancel(ctx, *, actor, steps: int = 200, delay_s: float = 0.05) -> dict:
    for step in range(steps):
        ctx.progress(step, steps, force=True)
        time.sleep(delay_s)
    return {"finished": True}
