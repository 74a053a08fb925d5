"""Indexes for a 1,000,000-image library and 200,000-image datasets (bench/bench_scale.py): a
labeling page's own reservations by holder (partial: only held rows).

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('cls_dataset_images', schema=None) as batch_op:
        batch_op.create_index('idx_cls_dataset_images_holder', ['reserved_by'], unique=False,
                              postgresql_where=sa.text('reserved_by IS NOT NULL'),
                              sqlite_where=sa.text('reserved_by IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('cls_dataset_images', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_dataset_images_holder')
