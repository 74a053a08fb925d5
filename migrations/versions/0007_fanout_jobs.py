"""Fan-out jobs: a chunk's cls_jobs row names its parent (cls_jobs.parent_id), and cls_job_items
records what a fanned-out job did to each item, once (primary key job_id, item_key).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('cls_jobs') as batch:
        batch.add_column(sa.Column('parent_id', sa.Uuid(), nullable=True))
        batch.create_foreign_key(op.f('fk_cls_jobs_parent_id_cls_jobs'), 'cls_jobs', ['parent_id'], ['id'],
                                 ondelete='CASCADE')
        batch.create_index('idx_cls_jobs_parent', ['parent_id'], unique=False)
    op.create_table('cls_job_items',
    sa.Column('job_id', sa.Uuid(), nullable=False),
    sa.Column('item_key', sa.Text(), nullable=False),
    sa.Column('image_id', sa.Uuid(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('added', sa.Integer(), server_default='0', nullable=False),
    sa.Column('labels', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['cls_jobs.id'], name=op.f('fk_cls_job_items_job_id_cls_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'item_key', name=op.f('pk_cls_job_items'))
    )


def downgrade() -> None:
    op.drop_table('cls_job_items')
    with op.batch_alter_table('cls_jobs') as batch:
        batch.drop_index('idx_cls_jobs_parent')
        batch.drop_constraint(op.f('fk_cls_jobs_parent_id_cls_jobs'), type_='foreignkey')
        batch.drop_column('parent_id')
