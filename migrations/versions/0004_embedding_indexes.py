"""Embedding indexes (cls_embedding_indexes): one row per embedding model over the library; the
vectors are float16 shards in object storage (core/similarity/).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 18:02:03.434827
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cls_embedding_indexes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('model_id', sa.Uuid(), nullable=True),
    sa.Column('timm_name', sa.String(length=128), nullable=False),
    sa.Column('preprocessing', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=True),
    sa.Column('count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('shards', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), server_default=sa.text("'[]'"), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='empty', nullable=False),
    sa.Column('job_id', sa.Uuid(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.CheckConstraint("status IN ('empty', 'building', 'ready', 'failed')", name=op.f('ck_cls_embedding_indexes_status')),
    sa.ForeignKeyConstraint(['job_id'], ['cls_jobs.id'], name=op.f('fk_cls_embedding_indexes_job_id_cls_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['cls_trained_models.id'], name=op.f('fk_cls_embedding_indexes_model_id_cls_trained_models'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cls_embedding_indexes')),
    sa.UniqueConstraint('source', name=op.f('uq_cls_embedding_indexes_source'))
    )


def downgrade() -> None:
    op.drop_table('cls_embedding_indexes')
