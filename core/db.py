"""Database engine and sessions.

Engines are created lazily, once per (process, URL): RQ forks work horses and a connection pool must
never cross a fork. Callers own transactions: `with session_scope() as s:` commits on success.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import ARRAY, Table, bindparam, event, func, select, text
from sqlalchemy.engine import Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings, scheme_of
from core.errors import ConfigError, ServiceUnavailable

_engines: dict[tuple[int, str], Engine] = {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the app read while a job writes; busy_timeout waits for the writer instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # the URL may hold a password: name only its scheme
        raise ConfigError(f"DATABASE_URL: cannot parse this {scheme_of(url)} URL") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a restarted Postgres costs one reconnect, not an error on the next action.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url)
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back on any exception."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise ServiceUnavailable(f"database unreachable: {str(exc.orig).splitlines()[0]}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_connection(url: str | None = None) -> None:
    """Fail with one line when the database cannot be reached (used at start-up and by the CLI)."""
    try:
        with get_engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise ServiceUnavailable(
            f"DATABASE_URL: cannot connect ({str(exc.orig).splitlines()[0]})"
        ) from None


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """INSERT rows (each with the same keys) as one statement per 10,000 on Postgres, each column
    one array (unnest): the statement triggers of core.models.dataset_aggregates then run once per
    10,000 rows, where an executemany ran them once a row (3x the insert's time). SQLite: executemany
    (its triggers are per row anyway)."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(table.insert(), rows)
        return
    # Python-side column defaults one value per row, as an executemany gives them (utcnow: rows added
    # together keep their order by added_at)
    defaults = {column.name: column.default for column in table.columns
                if column.name not in rows[0] and column.default is not None
                and (column.default.is_scalar or column.default.is_callable)}
    rows = [{**row, **{name: default.arg if default.is_scalar else default.arg(None)
                       for name, default in defaults.items()}} for row in rows]
    names = list(rows[0])
    for start in range(0, len(rows), 10_000):
        chunk = rows[start:start + 10_000]
        # set-returning functions side by side in a SELECT list are zipped (Postgres 10+)
        arrays = [func.unnest(bindparam(f"rows_{name}", [row[name] for row in chunk], type_=ARRAY(table.c[name].type)))
                  for name in names]
        session.execute(table.insert().from_select(names, select(*arrays), include_defaults=False))
