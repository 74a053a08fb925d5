"""System commands: migrate, demo, config check, jobs (list, show, cancel, reap)."""

from __future__ import annotations

from core.config import get_settings
from core.db import check_connection, session_scope
from core.ids import as_uuid
from core.imports.demo import load_demo
from core.jobs.fanout import reap_stale
from core.jobs.queue import get_backend
from core.jobs.rows import get_job, list_jobs, request_cancel
from core.migrate import upgrade_head
from core.storage import get_storage
from core.users import operator_user


def register(subparsers) -> None:
    migrate = subparsers.add_parser("migrate", help="bring the database to the newest schema")
    migrate.set_defaults(handler=cmd_migrate)

    demo = subparsers.add_parser("demo", help="fill the platform tables and a few classes/datasets")
    demo.add_argument("--products", type=int, default=24, help="number of demo products")
    demo.set_defaults(handler=cmd_demo)

    check = subparsers.add_parser("check", help="check settings and reach every configured server")
    check.set_defaults(handler=cmd_check)

    jobs = subparsers.add_parser("jobs", help="background jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=subparsers._parser_class)
    listing = jobs_sub.add_parser("list", help="recent jobs")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--active", action="store_true", help="only queued and running")
    listing.set_defaults(handler=cmd_jobs_list)
    show = jobs_sub.add_parser("show", help="one job")
    show.add_argument("job_id")
    show.set_defaults(handler=cmd_jobs_show)
    cancel = jobs_sub.add_parser("cancel", help="ask a job to stop")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=cmd_jobs_cancel)
    reap = jobs_sub.add_parser("reap", help="mark failed the running jobs whose worker died")
    reap.set_defaults(handler=cmd_jobs_reap)


def job_dict(job) -> dict:
    return {
        "id": str(job.id), "kind": job.kind, "queue": job.queue, "status": job.status,
        "progress_done": job.progress_done, "progress_total": job.progress_total,
        "message": job.message, "error": job.error, "result": job.result,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }


def cmd_migrate(args) -> dict:
    check_connection()
    revision = upgrade_head()
    return {"database": _redacted(get_settings().database_url), "revision": revision}


def cmd_demo(args) -> dict:
    check_connection()
    return load_demo(actor=operator_user(), products=args.products)


def cmd_check(args) -> dict:
    settings = get_settings()
    check_connection()
    store = get_storage()
    next(iter(store.list_keys()), None)  # one listing call proves the store answers
    backend = get_backend()
    backend.check()
    return {
        "database": _redacted(settings.database_url),
        "storage": settings.storage_url,
        "queue": backend.name,
        "ok": True,
    }


def cmd_jobs_list(args) -> dict:
    with session_scope() as session:
        return {"jobs": [job_dict(job) for job in list_jobs(session=session, limit=args.limit,
                                                            active_only=args.active)]}


def cmd_jobs_show(args) -> dict:
    with session_scope() as session:
        return job_dict(get_job(session=session, job_id=as_uuid(args.job_id, "job id")))


def cmd_jobs_cancel(args) -> dict:
    with session_scope() as session:
        return job_dict(request_cancel(session=session, actor=operator_user(), job_id=as_uuid(args.job_id, "job id")))


def cmd_jobs_reap(args) -> dict:
    with session_scope() as session:
        return {"reaped": reap_stale(session=session)}


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
