"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


<%
    postgres_up = context.get("postgres_upgrades", "")
    postgres_down = context.get("postgres_downgrades", "")
    def nested(body):
        return body.replace("\n", "\n    ")
%>\
def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
% if postgres_up and "op." in postgres_up:

    if op.get_bind().dialect.name == "postgresql":  # Postgres-only indexes (migrations/env.py)
        ${nested(postgres_up)}
% endif


def downgrade() -> None:
% if postgres_down and "op." in postgres_down:
    if op.get_bind().dialect.name == "postgresql":
        ${nested(postgres_down)}

% endif
    ${downgrades if downgrades else "pass"}
