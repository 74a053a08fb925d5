"""Alembic environment: metadata from core.models, URL from DATABASE_URL (or -x url=...)."""

import sqlalchemy as sa
from alembic import context

from core.db import get_engine
from core.models import Base

config = context.config
url = context.get_x_argument(as_dictionary=True).get("url") or config.attributes.get("url")


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with get_engine(url).connect() as connection:
        _run(connection)
        connection.commit()


def _render_item(type_, obj, autogen_context):
    """Render the JSON-with-JSONB-variant type as importable code (alembic's default misses `sa.`)."""
    if type_ == "type" and isinstance(obj, sa.JSON) and obj._variant_mapping:
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTER
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
