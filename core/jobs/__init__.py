"""Background jobs: one table of job kinds (kind → function, queue, timeout, failure hook), the
cls_jobs row (create, progress, cancel, finish, reap), the runner a worker
executes, and the queue that hands a job to RQ or the in-process pool. The functions jobs run live
in the top-level `jobs/` package (RQ's entry points)."""
