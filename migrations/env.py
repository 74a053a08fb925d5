"""Alembic environment: metadata from core.models, URL from DATABASE_URL (or -x url=...)."""

import warnings

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


def _dialect_only(index) -> str | None:
    """The one dialect an index is created on (`Index(...).ddl_if(dialect=...)` in core/models/)."""
    condition = getattr(index, "_ddl_if", None)
    return condition.dialect if condition is not None and isinstance(condition.dialect, str) else None


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Compare a dialect-only index only on its dialect (so `alembic check` sees no drift on the other)."""
    if type_ == "index" and not reflected:
        only = _dialect_only(obj)
        return only is None or only == context.get_context().dialect.name
    return True


def _postgres_only_block(_context, _revision, directives) -> None:
    """Autogenerate runs on SQLite (`make schema`), which leaves Postgres-only indexes out (see
    _include_object). Add them, and the extensions they need, as a second list of operations that the
    template (script.py.mako) renders under `if dialect is postgresql`, for the tables this revision
    creates (a later revision adding one to an existing table would write it by hand)."""
    from alembic.operations import ops

    script = directives[0]
    if not script.upgrade_ops.ops:
        return
    created = {op.table_name for op in script.upgrade_ops.ops if isinstance(op, ops.CreateTableOp)}
    indexes = sorted((index for table in Base.metadata.sorted_tables if table.name in created
                      for index in table.indexes if _dialect_only(index) == "postgresql"), key=lambda i: i.name)
    upgrade = [ops.ExecuteSQLOp(f"CREATE EXTENSION IF NOT EXISTS {name}")
               for name in Base.metadata.info.get("postgres_extensions", ())] if indexes else []
    upgrade += [ops.CreateIndexOp.from_index(index) for index in indexes]
    script.upgrade_ops_list.append(ops.UpgradeOps(ops=upgrade, upgrade_token="postgres_upgrades"))
    script.downgrade_ops_list.append(ops.DowngradeOps(ops=[ops.DropIndexOp.from_index(index) for index in indexes],
                                                      downgrade_token="postgres_downgrades"))


def _run(connection) -> None:
    if connection.dialect.name != "postgresql":  # alembic warns it cannot compare them; they are not here
        for index in (i for table in Base.metadata.tables.values() for i in table.indexes):
            if _dialect_only(index) == "postgresql":
                warnings.filterwarnings("ignore", message=f".*expression-based index '{index.name}'")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTER
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object,
        process_revision_directives=_postgres_only_block,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
