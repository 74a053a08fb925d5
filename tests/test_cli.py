"""`python -m core migrate` and `demo` on empty SQLite and Postgres; demo twice adds nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from core.migrate import head_revision
from core.models import ClsClass, ClsImage, Cutout, OdImage, Product, ProductImage

ROOT = Path(__file__).resolve().parents[1]
COUNTED = (Product, ProductImage, Cutout, OdImage, ClsClass, ClsImage)


def run_cli(env: dict, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_env(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    yield {"DATABASE_URL": url, "STORAGE_URL": f"file://{tmp_path / 'storage'}", "REDIS_URL": ""}
    if request.param == "postgres":
        from tests.plugins import stack

        stack._pg_schema_ready.discard(url)


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        result = {model.__tablename__: connection.scalar(select(func.count()).select_from(model)) for model in COUNTED}
    engine.dispose()
    return result


def test_migrate_then_demo_twice(empty_env):
    assert run_cli(empty_env, "migrate")["revision"] == head_revision()
    first = run_cli(empty_env, "demo", "--products", "8")
    assert first["products"] == 8 and first["already_present"] is False
    after_first = counts(empty_env["DATABASE_URL"])
    assert after_first["products"] == 8
    assert after_first["product_images"] == 8 * 7
    assert after_first["cutouts"] == 8 and after_first["od_images"] == 6
    second = run_cli(empty_env, "demo", "--products", "8")
    assert second["already_present"] is True
    assert counts(empty_env["DATABASE_URL"]) == after_first


def test_jobs_commands(empty_env):
    run_cli(empty_env, "migrate")
    assert run_cli(empty_env, "jobs", "list") == {"jobs": []}
    assert run_cli(empty_env, "jobs", "reap") == {"reaped": 0}
    bad = subprocess.run([sys.executable, "-m", "core", "jobs", "show", "not-a-uuid"], cwd=ROOT,
                         env={**os.environ, **empty_env}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a valid id" in bad.stderr
