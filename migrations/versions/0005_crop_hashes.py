"""Near duplicates that survive crops: each library image's pHashes of its sub-crop views
(core/library/crop_hashes.py), 11 views of 8 bytes (crop_phash) and of 32 bytes (crop_phash256).
Existing rows stay NULL until `python -m core duplicates --backfill-crops` fills them.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('cls_images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crop_phash', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('crop_phash256', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cls_images', schema=None) as batch_op:
        batch_op.drop_column('crop_phash256')
        batch_op.drop_column('crop_phash')
