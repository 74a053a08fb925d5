"""Browser test harness: the app on a free port against a throwaway database, driven by Playwright
with Debian's Chromium (never `playwright install`).

`app_server` starts `streamlit run serve.py` (the app with its file route) (module scope: one server per test module) on an embedded
stack in a temporary folder; `browser_page` opens a fresh page and records console errors, which a test
can assert on with `page_errors(page)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@dataclass
class AppServer:
    url: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(workdir: Path, extra_env: dict[str, str] | None = None, migrate: bool = True) -> AppServer:
    """Start the app on an embedded stack under `workdir` (call `python -m core demo` first if wanted)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'app.db'}",
        "STORAGE_URL": f"file://{workdir / 'storage'}",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    env.pop("REDIS_URL", None) if "REDIS_URL" not in (extra_env or {}) else None
    if migrate:
        subprocess.run([sys.executable, "-m", "core", "migrate"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=120)
    log_path = workdir / "streamlit.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "serve.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return AppServer(url, env, workdir, process, log_path)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"streamlit did not start:\n{log_path.read_text(errors='replace')}")


def stop_app(server: AppServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@contextmanager
def seeded_app_server(workdir: Path, seed: str, *, timeout: int = 120):
    """A server whose database the `seed` script (run with the server's environment) filled first;
    yields (server, the JSON object the script printed last)."""
    server = start_app(workdir)
    try:
        done = subprocess.run([sys.executable, "-c", seed], cwd=ROOT, env=server.env, check=True,
                              capture_output=True, text=True, timeout=timeout)
        yield server, json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop_app(server)


def query_app_database(server: AppServer, statement) -> list:
    """The rows of a SQLAlchemy statement, read from the server's own database."""
    from sqlalchemy import create_engine

    engine = create_engine(server.env["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(statement).all()
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def chromium_browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium not found at {CHROMIUM} (make test installs it)")
        pytest.skip(f"Chromium not found at {CHROMIUM}; run `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def postgres_app(tmp_path_factory):
    """The app on a Postgres database of its own (the session's database is emptied between tests),
    local storage and in-process jobs; yields (server, database URL). Concurrency is proven here."""
    import secrets

    from sqlalchemy import create_engine, text

    from tests.plugins.services import PG_ADMIN_URL, require_service

    require_service("PostgreSQL", PG_ADMIN_URL, 5432)
    name = f"cls_app_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    workdir = tmp_path_factory.mktemp("pg-app")
    server = start_app(workdir, extra_env={"DATABASE_URL": url, "STORAGE_URL": f"file://{workdir / 'storage'}"})
    try:
        yield server, url
    finally:
        from core.db import dispose_engines

        stop_app(server)
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The app on an embedded stack with the demo data loaded."""
    workdir = tmp_path_factory.mktemp("app")
    server = start_app(workdir)
    subprocess.run([sys.executable, "-m", "core", "demo", "--products", "8"], cwd=ROOT, env=server.env,
                   check=True, capture_output=True, timeout=300)
    yield server
    stop_app(server)


# Streamlit's frontend probes `<page>/_stcore/health` and `host-config` to find its base path when a
# page is opened by URL; the 404s it gets there are part of its normal start-up, not app errors.
BENIGN_FAILED_URL = re.compile(r"/[^/]+/_stcore/(health|host-config)$")


@dataclass
class PageWatch:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)

    def on_console(self, msg) -> None:
        # "Failed to load resource" is reported with its URL by on_response instead.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.console_errors.append(msg.text)

    def on_response(self, response) -> None:
        if response.status >= 400 and not BENIGN_FAILED_URL.search(response.url):
            self.failed_responses.append(f"{response.status} {response.url}")

    def on_request_failed(self, request) -> None:
        self.failed_responses.append(f"{request.failure} {request.url}")

    def problems(self) -> list[str]:
        return self.console_errors + self.page_errors + self.failed_responses


@pytest.fixture
def browser_page(chromium_browser):
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    watch = PageWatch()
    page.on("console", watch.on_console)
    page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
    page.on("response", watch.on_response)
    page.on("requestfailed", watch.on_request_failed)
    page.watch = watch
    yield page
    context.close()


def wait_for_app(page, timeout_ms: int = 30000) -> None:
    """Wait until Streamlit finished running the script (no running indicator, app view present)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    # Until app.py's first run reaches st.navigation, Streamlit's frontend lists every file in pages/
    # (its old multipage mode); the app is ready once our own sections are in the sidebar.
    page.wait_for_function(
        "() => { const nav = document.querySelector('[data-testid=\"stSidebarNav\"]');"
        " return nav && nav.innerText.includes('Classification'); }",
        timeout=timeout_ms,
    )
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stSpinner\"],"
        " [data-testid=\"stStatusWidgetRunningIcon\"]')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(300)


def exception_texts(page) -> list[str]:
    return [el.inner_text() for el in page.query_selector_all("[data-testid='stException']")]


__all__ = ["start_app", "stop_app", "wait_for_app", "exception_texts", "shutil"]
