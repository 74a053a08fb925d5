"""Near duplicates that survive crops: each library image's pHashes of its sub-crop views
(core/library/crop_hashes.py), 11 views of 8 bytes (crop_phash) and of 32 bytes (crop_phash256).
Existing rows stay NULL until `python -m core duplicates --backfill-crops` fills them.

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not batch mode: on SQLite a batch rebuild of cls_images would drop the tag
# triggers of 0005 (SQLite >= 3.35 drops a column in place).


def upgrade() -> None:
    op.add_column('cls_images', sa.Column('crop_phash', sa.LargeBinary(), nullable=True))
    op.add_column('cls_images', sa.Column('crop_phash256', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column('cls_images', 'crop_phash256')
    op.drop_column('cls_images', 'crop_phash')
