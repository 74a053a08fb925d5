"""Shared page helpers: the current user, role checks, cached resources, job progress, storage links.

Pages import from here; this module may import streamlit (core never does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import streamlit as st

from core import file_links
from core.config import get_settings
from core.db import session_scope
from core.errors import UserError
from core.file_links import signed_path, stable_url
from core.jobs.rows import get_job
from core.labeling import keyboard_session as labeling_session
from core.library.images import image_filter_options
from core.migrate import upgrade_head
from core.permissions import can_act, current_role, register_user
from core.storage import get_storage
from core.users import User, local_user, oidc_user

SPLIT_COLORS = {"train": "#2563EB", "val": "#D97706", "test": "#7C3AED", "unassigned": "#6B7280"}
"""One colour per split, the same on the dataset grid's chips and in the split charts."""


@st.cache_resource(show_spinner="Preparing the database…")
def _migrated(database_url: str) -> str:
    return upgrade_head()


@st.cache_resource(show_spinner=False)
def disable_nagle() -> int:
    """Turn Nagle's algorithm off on this server process's TCP sockets, once; returns how many.

    Streamlit's server binds its listening socket with proto 0, so asyncio never sets TCP_NODELAY on
    the connections it accepts (the bug of uvicorn#3149): each keep-alive request after a
    connection's first waits ~40 ms for the browser's delayed ACK (measured: 44 ms per thumbnail,
    0.4 s for the Images page's 48). Linux copies TCP_NODELAY from a listening socket to the
    connections it accepts, so setting it on the listener fixes every later connection."""
    import os
    import socket
    import stat

    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: nothing to do here
        return 0
    changed = 0
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the fd stays open: it belongs to the server
    return changed


def ensure_schema() -> None:
    """Migrations run before the app serves anything (once per process and database)."""
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
        with session_scope() as session:
            register_user(session=session, user=user)
        st.session_state["_registered_user"] = user.id
    return user


def sidebar_user(user: User) -> None:
    with st.sidebar:
        if user.is_local:
            st.caption(f"Local user ({current_role(user)}); no login configured.")
        else:
            st.caption(f"Signed in as {user.email} ({current_role(user)})")
            st.button("Log out", on_click=st.logout, key="logout")


def end_labeling_elsewhere(page) -> None:
    """On any page but Labeling, the labeling session's reservations end (the images it showed and
    prefetched go back to the queue for the others now); coming back claims them again."""
    state = st.session_state.get("labeling_state")
    if state is None or page.url_path == "labeling" or not state.held_at:
        return

    labeling_session.end(session_scope, state)


def allowed(role: str) -> bool:
    """Whether the signed-in user holds `role` now: pages hide or disable what they may not do
    (core refuses it anyway, with the same words)."""
    return can_act(current_user(), role)


def refusal(role: str, action: str) -> str | None:
    """The one-line reason a control is disabled ("deleting a class needs the admin role; you are a
    viewer"), or None when the signed-in user may use it."""
    if allowed(role):
        return None
    return f"{action[:1].upper()}{action[1:]} needs the {role} role; you are a {current_role(current_user())}."


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


# ---------------------------------------------------------------- images at stable browser URLs

def storage_url(key: str) -> str:
    """A URL the browser can load for an image or thumbnail key that stays the same across runs,
    so the browser caches and prefetches it (measured: halves labeling latency): the store's public or
    reused presigned URL (core.file_links.stable_url), or for local storage a signed link to serve.py's
    file route, valid for hours (core.file_links). Deleted objects stop being served at once."""
    storage = get_storage()
    url = stable_url(storage, key)
    if url:
        return url
    if storage.local_path(key) is None:
        raise ValueError(f"no browser URL for storage key {key!r}")
    return f"{_app_root()}{signed_path(key)}"


def warn_without_file_route() -> None:
    """Started as `streamlit run app.py` on local storage, images would not load: say how to start."""
    if st.context.url and not file_links.route_mounted and get_storage().local_path("images/x") is not None:
        st.warning("Images cannot be shown: start the app with `streamlit run serve.py` (it serves the "
                   "image files through signed links).")


def _app_root() -> str:
    """The app's absolute root URL in this browser (st.image takes only absolute or /app/static URLs).
    Without a browser (AppTest) it is this server's own address."""
    from urllib.parse import urlparse

    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    browser_url = st.context.url
    origin = (f"{urlparse(browser_url).scheme}://{urlparse(browser_url).netloc}" if browser_url
              else f"http://localhost:{config.get_option('server.port')}")
    return f"{origin}/" + (f"{base}/" if base else "")


def storage_urls(keys: list[str | None]) -> list[str | None]:
    return [storage_url(key) if key else None for key in keys]


def plain(text: str | None) -> str:
    """User text shown through markdown-rendering widgets, with markdown characters escaped."""
    out = str(text or "")
    for char in "\\`*_{}[]()#+-.!|<>~$:":
        out = out.replace(char, "\\" + char)
    return out


def library_filter_options() -> dict:
    """The library's statuses, sources, folders and tags (core.library.images.image_filter_options) and
    its total, read now on every run (ui.freshness: a few index probes at 1,000,000 images, so an
    import's new folder or tag shows at once; the one-minute cache this replaced could hide it)."""
    with session_scope() as session:
        return image_filter_options(session=session)
