"""Credentials in settings (issue 14): a DATABASE_URL, REDIS_URL, STORAGE_URL or S3_ENDPOINT_URL that
is malformed, unreachable or holds userinfo stops with one line naming the variable and the scheme,
never the password or the userinfo, and never a traceback: on the CLI (a subprocess, as a user runs
it) and in the app's start-up error (AppTest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ConfigError
from tests.hostile.tally import TALLY

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3tPW"
# case: (variable, value, the scheme the message names, what else the message says)
CASES = {
    "db_port_typo": ("DATABASE_URL", f"postgresql://u:{SECRET}@h:54x2/db", "postgresql", "port"),
    "db_port_range": ("DATABASE_URL", f"postgresql://u:{SECRET}@h:99999/db", "postgresql", "port"),
    "db_port_zero": ("DATABASE_URL", f"postgres://u:{SECRET}@h:0/db", "postgres", "port"),
    "db_bad_host": ("DATABASE_URL", f"postgresql://u:{SECRET}@[h/db", "postgresql", "host"),
    "db_unreachable": ("DATABASE_URL", f"postgresql://u:{SECRET}@127.0.0.1:1/db", "", "cannot connect"),
    "db_no_scheme": ("DATABASE_URL", f"u:{SECRET}@h/db", "", "must start with"),
    "redis_port_typo": ("REDIS_URL", f"redis://u:{SECRET}@h:63x9/0", "redis", "port"),
    "redis_bad_db": ("REDIS_URL", f"redis://u:{SECRET}@h:6379/zero", "redis", "database"),
    "redis_bad_host": ("REDIS_URL", f"rediss://:{SECRET}@[h/0", "rediss", "host"),
    "redis_unreachable": ("REDIS_URL", f"redis://u:{SECRET}@127.0.0.1:1/0", "", "cannot reach"),
    "s3_endpoint_userinfo": ("S3_ENDPOINT_URL", f"http://key:{SECRET}@127.0.0.1:9000", "", "AWS_ACCESS_KEY_ID"),
    "s3_endpoint_user_only": ("S3_ENDPOINT_URL", f"https://{SECRET}@minio:9000", "", "credentials"),
    "s3_endpoint_port": ("S3_ENDPOINT_URL", f"http://key:{SECRET}@minio:9x0", "http", "port"),
    "s3_endpoint_no_scheme": ("S3_ENDPOINT_URL", f"key:{SECRET}", "", "http(s)://"),
    "storage_userinfo": ("STORAGE_URL", f"s3://key:{SECRET}@bucket/prefix", "", "credentials"),
}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL")}
    # STORAGE_URL=s3://… needs an endpoint to be checked against; none is reached (the URL is refused first)
    return {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "STORAGE_URL": f"file://{tmp_path / 'st'}"}


def assert_one_clean_line(text: str, variable: str, scheme: str, fragment: str) -> str:
    assert SECRET not in text, text
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert variable in lines[0] and fragment in lines[0], lines[0]
    if scheme:
        assert f"{scheme} URL" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_names_variable_and_scheme_never_the_secret(tmp_path, case):
    variable, value, scheme, fragment = CASES[case]
    result = run_cli({**base_env(tmp_path), variable: value}, "check")
    TALLY.tried += 1
    if SECRET in result.stdout + result.stderr or "Traceback" in result.stderr:
        TALLY.crashes.append(case)
    assert result.returncode != 0 and result.stdout == ""
    assert_one_clean_line(result.stderr, variable, scheme, fragment)


@pytest.mark.parametrize("case", ["db_port_typo", "redis_port_typo", "s3_endpoint_userinfo"])
def test_other_commands_stop_the_same_way(tmp_path, case):
    variable, value, scheme, fragment = CASES[case]
    result = run_cli({**base_env(tmp_path), variable: value}, "images", "list")
    TALLY.tried += 1
    assert result.returncode != 0
    assert_one_clean_line(result.stderr, variable, scheme, fragment)


def test_engine_and_queue_refuse_an_unparsable_url_without_echoing_it():
    # Settings normally refuse these first; the engine and the queue never echo a URL either.
    from core.db import make_engine
    from core.jobs.queue import RQBackend

    for url in (f"postgresql+psycopg//u:{SECRET}@h/db", f"postgresql+psycopg://u:{SECRET}@h:5x/db"):
        with pytest.raises(ConfigError) as refused:
            make_engine(url)
        assert SECRET not in str(refused.value) and "DATABASE_URL" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        RQBackend(f"redis://u:{SECRET}@h:6x/0")
    assert SECRET not in str(refused.value) and str(refused.value).startswith("REDIS_URL: cannot parse this redis URL")
    TALLY.tried += 3


@pytest.mark.parametrize("case", ["db_port_typo", "db_bad_host", "redis_bad_db", "s3_endpoint_userinfo",
                                  "storage_userinfo"])
def test_app_start_up_error_is_one_line_without_the_secret(monkeypatch, tmp_path, case):
    from core.config import reset_settings_cache

    variable, value, scheme, fragment = CASES[case]
    for name, setting in base_env(tmp_path).items():
        monkeypatch.setenv(name, setting)
    monkeypatch.setenv(variable, value)
    reset_settings_cache()
    try:
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        app.run()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    TALLY.tried += 1
    assert not app.exception, [e.value for e in app.exception]
    shown = "\n".join(element.value for element in app.error)
    assert len(app.error) == 1, shown
    assert_one_clean_line(shown, variable, scheme, fragment)
    everything = " ".join(str(getattr(node, "value", "")) for node in app.main) + " ".join(
        str(getattr(node, "value", "")) for node in app.sidebar)
    assert SECRET not in everything
