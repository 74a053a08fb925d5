"""RQ job entry points: each function takes (ctx, *, actor, **params) and calls core.

`actor` is the user who queued the job, rebuilt by core.jobs.rows.run_job from the job's record; the
function calls declared core services with it, so the starter's role is checked again when the job
runs (a role removed meanwhile fails the job with the refusal and writes nothing)."""
