"""Settings: defaults for the embedded set-up, one-line errors naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_defaults(monkeypatch):
    for name in ("DATABASE_URL", "STORAGE_URL", "REDIS_URL", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///") and "data" in settings.database_url
    assert settings.storage_url.startswith("file://")
    assert settings.redis_url is None


def test_postgres_url_uses_psycopg3():
    settings = load_settings(database_url="postgresql://u@h/db")
    assert settings.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("database_url", "mysql://x/y"), ("storage_url", "ftp://host/x"), ("storage_url", "s3://"),
     ("redis_url", "http://localhost"), ("default_role", "owner")],
)
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable.upper()):
        load_settings(**{variable: value})


def _cli(*args, **env):
    full_env = {**os.environ, "DATABASE_URL": "sqlite:////tmp/never-used.db", **env}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"DATABASE_URL": "oracle://nope"}, "DATABASE_URL"),
     ({"STORAGE_URL": "gopher://x"}, "STORAGE_URL"),
     ({"REDIS_URL": "tcp://x"}, "REDIS_URL"),
     ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "DATABASE_URL"),
     ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "REDIS_URL")],
)
def test_cli_reports_bad_settings_in_one_line(env, variable, tmp_path):
    env.setdefault("STORAGE_URL", f"file://{tmp_path}")
    result = _cli("check", **env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_unknown_command_is_one_line():
    result = _cli("frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
