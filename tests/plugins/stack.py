"""The platform's three parts wired for a test, embedded or production.

`stack` runs a test twice: embedded (SQLite file, local folder, in-process jobs) and production
(Postgres, S3 over HTTP, Redis/RQ). Narrower fixtures (`db_backend`, `storage_backend`,
`queue_backend`) vary one part. Each test gets empty tables and an empty storage prefix.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Stack:
    name: str
    database_url: str
    storage_url: str
    redis_url: str | None
    s3_endpoint_url: str | None = None

    @property
    def storage(self):
        from core.storage import get_storage

        return get_storage()

    def session(self):
        from core.db import session_scope

        return session_scope()

    def drain_jobs(self, timeout: float = 300) -> None:
        """Run every queued job to its end (RQ: a burst SimpleWorker; in-process: wait)."""
        from core.jobs.queue import get_backend

        backend = get_backend()
        if self.redis_url:
            from rq import SimpleWorker

            worker = SimpleWorker(["imports", "training", "predictions"], connection=backend.connection)
            # No command channel: a burst worker needs none, and stopping its pub/sub thread waits for
            # that thread's 60 s poll to end (a minute added to a test now and then).
            worker.subscribe = lambda: None
            worker.work(burst=True)
        else:
            for job_id in list(backend.futures):
                backend.wait(job_id, timeout=timeout)


def _apply(monkeypatch, stack: Stack) -> None:
    from core.config import reset_settings_cache
    from core.db import dispose_engines
    from core.jobs.queue import reset_backend
    from core.storage import reset_storage_cache

    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    monkeypatch.setenv("STORAGE_URL", stack.storage_url)
    if stack.redis_url:
        monkeypatch.setenv("REDIS_URL", stack.redis_url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    if stack.s3_endpoint_url:
        monkeypatch.setenv("S3_ENDPOINT_URL", stack.s3_endpoint_url)
    else:
        monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    reset_settings_cache()
    dispose_engines()
    reset_storage_cache()
    reset_backend()


def _cleanup() -> None:
    from core.config import reset_settings_cache
    from core.db import dispose_engines
    from core.jobs.queue import reset_backend
    from core.storage import reset_storage_cache

    dispose_engines()
    reset_settings_cache()
    reset_storage_cache()
    reset_backend()


_pg_schema_ready: set[str] = set()


def _fresh_postgres(url: str) -> None:
    """Create the schema once per session, then empty every table before each test."""
    from sqlalchemy import create_engine, text

    from core.models import Base

    engine = create_engine(url)
    stamp = False
    with engine.begin() as connection:
        if url not in _pg_schema_ready:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
            Base.metadata.create_all(connection)
            _pg_schema_ready.add(url)
            stamp = True
        else:
            names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()
    if stamp:
        _stamp(url)


def _stamp(url: str) -> None:
    """Tables come from create_all (fast); mark them as at the newest migration so the app's
    start-up migration is a no-op. test_migrations.py proves the migrations build the same schema."""
    from core.db import dispose_engines
    from core.migrate import stamp_head

    stamp_head(url)
    dispose_engines()


def _fresh_sqlite(path: Path) -> str:
    from sqlalchemy import create_engine

    from core.models import Base

    url = f"sqlite:///{path}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    _stamp(url)
    return url


def _redis_flush(url: str) -> None:
    from redis import Redis

    Redis.from_url(url).flushdb()


def make_stack(kind: str, request, tmp_path: Path) -> Stack:
    if kind == "embedded":
        return Stack("embedded", _fresh_sqlite(tmp_path / "test.db"), f"file://{tmp_path / 'storage'}", None)
    pg_url = request.getfixturevalue("postgres_server_url")
    redis_url = request.getfixturevalue("redis_server_url")
    endpoint = request.getfixturevalue("s3_server")
    _fresh_postgres(pg_url)
    _redis_flush(redis_url)
    return Stack("production", pg_url, f"s3://cls-test/t-{uuid.uuid4().hex[:12]}", redis_url, endpoint)


@pytest.fixture(params=["embedded", "production"])
def stack(request, tmp_path, monkeypatch):
    """Embedded (SQLite, local folder, in-process jobs) and production (Postgres, S3, RQ)."""
    built = make_stack(request.param, request, tmp_path)
    _apply(monkeypatch, built)
    yield built
    _cleanup()


@pytest.fixture
def embedded_stack(request, tmp_path, monkeypatch):
    built = make_stack("embedded", request, tmp_path)
    _apply(monkeypatch, built)
    yield built
    _cleanup()


@pytest.fixture
def production_stack(request, tmp_path, monkeypatch):
    """Postgres, S3 over HTTP and Redis/RQ only (tests whose point is the production set-up)."""
    built = make_stack("production", request, tmp_path)
    _apply(monkeypatch, built)
    yield built
    _cleanup()


@pytest.fixture
def postgres_stack(request, tmp_path, monkeypatch):
    """Postgres + local storage + in-process jobs: for concurrency tests (SQLite ignores FOR UPDATE)."""
    pg_url = request.getfixturevalue("postgres_server_url")
    _fresh_postgres(pg_url)
    built = Stack("postgres", pg_url, f"file://{tmp_path / 'storage'}", None)
    _apply(monkeypatch, built)
    yield built
    _cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def db_stack(request, tmp_path, monkeypatch):
    """Vary only the database (local storage, in-process jobs)."""
    if request.param == "sqlite":
        built = Stack("sqlite", _fresh_sqlite(tmp_path / "test.db"), f"file://{tmp_path / 'storage'}", None)
    else:
        pg_url = request.getfixturevalue("postgres_server_url")
        _fresh_postgres(pg_url)
        built = Stack("postgres", pg_url, f"file://{tmp_path / 'storage'}", None)
    _apply(monkeypatch, built)
    yield built
    _cleanup()
