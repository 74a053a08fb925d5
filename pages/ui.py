"""Shared page helpers: the current user, cached resources, job progress, error display.

Pages import from here; this module may import streamlit (core never does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import contextmanager

import streamlit as st

from core.errors import UserError
from core.users import User, local_user, oidc_user


@st.cache_resource(show_spinner="Preparing the database…")
def _migrated(database_url: str) -> str:
    from core.migrate import upgrade_head

    return upgrade_head()


def ensure_schema() -> None:
    """Migrations run before the app serves anything (once per process and database)."""
    from core.config import get_settings

    try:
        _migrated(get_settings().database_url)
    except UserError as exc:
        st.error(str(exc))
        st.stop()


def _auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def current_user() -> User:
    """The OIDC user when login is configured (asks to log in otherwise), else the local user.
    Recorded once per browser session so core can resolve the id to a role."""
    if not _auth_configured():
        user = local_user()
    elif not st.user.is_logged_in:
        st.title("Image classification")
        st.write("Sign in to continue.")
        st.button("Log in", on_click=st.login, type="primary")
        st.stop()
    else:
        user = oidc_user(st.user.get("email") or "", st.user.get("name"))
    if st.session_state.get("_registered_user") != user.id:
        from core.db import session_scope
        from core.permissions import register_user

        with session_scope() as session:
            register_user(session=session, user=user)
        st.session_state["_registered_user"] = user.id
    return user


def sidebar_user(user: User) -> None:
    with st.sidebar:
        if user.is_local:
            st.caption(f"Local user ({user.role}); no login configured.")
        else:
            st.caption(f"Signed in as {user.email} ({user.role})")
            st.button("Log out", on_click=st.logout, key="logout")


def session_user() -> User:
    return current_user()


@contextmanager
def user_errors():
    """Show a UserError as a red message instead of a traceback; other errors still surface."""
    try:
        yield
    except UserError as exc:
        st.error(str(exc))


def run_action(action: Callable[[], object], success: str | None = None):
    """Run a core call from a button; show its UserError or a success toast."""
    try:
        result = action()
    except UserError as exc:
        st.error(str(exc))
        return None
    if success:
        st.toast(success)
    return result


def job_progress(job) -> None:
    """One job as a progress bar with its status and message."""
    total = job.progress_total or 0
    fraction = min(1.0, job.progress_done / total) if total else (1.0 if job.status == "succeeded" else 0.0)
    label = f"{job.kind} · {job.status}"
    if total:
        label += f" · {job.progress_done}/{total}"
    if job.message:
        label += f" · {job.message}"
    st.progress(fraction, text=label)
    if job.error:
        st.caption(f":red[{job.error}]")


def watch_jobs(job_ids: list[uuid.UUID], *, every_s: float = 1.0, on_done: Callable | None = None) -> None:
    """Live progress bars for some jobs, refreshed in a fragment so the page never freezes."""
    from core.db import session_scope
    from core.jobs import get_job

    @st.fragment(run_every=every_s)
    def _watch():
        with session_scope() as session:
            jobs = [get_job(session=session, job_id=job_id) for job_id in job_ids]
            for job in jobs:
                job_progress(job)
            done = all(job.status not in ("queued", "running") for job in jobs)
        if done and on_done is not None:
            on_done(jobs)

    _watch()
