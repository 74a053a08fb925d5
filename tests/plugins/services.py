"""Real servers for the tests: Postgres, Redis, and an S3-protocol server (moto in server mode).

Unreachable Postgres/Redis skip the tests that need them with a reason, except under CI=true, where
they fail the run, so CI can never silently skip them.
"""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlparse

import pytest

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, port: int) -> None:
    if _reachable(url, port):
        return
    message = f"{name} not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services must be up)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url():
    """A fresh database for this test session (parallel sessions never share tables)."""
    require_service("PostgreSQL", PG_ADMIN_URL, 5432)
    from sqlalchemy import create_engine, text

    name = f"cls_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from core.db import dispose_engines

    dispose_engines()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_server_url():
    """A Redis database number of its own for this session, flushed before use."""
    require_service("Redis", REDIS_URL, 6379)
    from redis import Redis

    base = REDIS_URL.rstrip("/")
    if base.count("/") > 2:
        base = base.rsplit("/", 1)[0]
    db, claims = _claim_redis_db(Redis.from_url(f"{base}/0"))
    url = f"{base}/{db}"
    Redis.from_url(url).flushdb()
    yield url
    Redis.from_url(url).flushdb()
    claims.delete(f"cls-test-db:{db}")


def _claim_redis_db(claims):
    """Databases 1-15, one per test session at a time: a claim key in database 0 (SET NX, expiring),
    so parallel sessions never flush each other's queues (pid % 15 could pick the same one)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    for _ in range(600):
        for db in range(1, 16):
            if claims.set(f"cls-test-db:{db}", token, nx=True, ex=4 * 3600):
                return db, claims
        import time

        time.sleep(1)
    pytest.fail("no free Redis database 1-15 for this test session (15 sessions running?)")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over real HTTP on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="cls-test")
    yield endpoint
    server.stop()
