"""A dataset's label space (cls_dataset_classes), its revision (cls_datasets.revision), and an index
on live reservations (the Labeling page's "held by others" count).

Existing datasets get the classes their labels use, in name order (the order the Labeling page
offered them before), so keys and training mappings start where they were.

Revision ID: 0002
Revises: 0001
"""
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cls_dataset_classes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('class_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.ForeignKeyConstraint(['class_id'], ['cls_classes.id'], name=op.f('fk_cls_dataset_classes_class_id_cls_classes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dataset_id'], ['cls_datasets.id'], name=op.f('fk_cls_dataset_classes_dataset_id_cls_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cls_dataset_classes')),
    sa.UniqueConstraint('dataset_id', 'class_id', name='uq_cls_dataset_classes_dataset_class')
    )
    with op.batch_alter_table('cls_dataset_classes', schema=None) as batch_op:
        batch_op.create_index('idx_cls_dataset_classes_class', ['class_id'], unique=False)

    with op.batch_alter_table('cls_datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.BigInteger(), server_default='0', nullable=False))

    with op.batch_alter_table('cls_dataset_images', schema=None) as batch_op:
        batch_op.create_index('idx_cls_dataset_images_reserved', ['dataset_id', 'reserved_until'], unique=False)

    _fill_label_spaces()


def _fill_label_spaces() -> None:
    """Each dataset's space: the classes its labels use, by name (ids made here: portable SQL has no
    UUID generator that SQLite shares)."""
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT l.dataset_id, l.class_id, c.name, COUNT(*) FROM cls_labels l "
        "JOIN cls_classes c ON c.id = l.class_id GROUP BY l.dataset_id, l.class_id, c.name")).all()
    by_dataset: dict = {}
    for dataset_id, class_id, name, count in rows:
        by_dataset.setdefault(dataset_id, []).append((name, str(class_id), class_id, count))
    table = sa.table('cls_dataset_classes', sa.column('id', sa.Uuid()), sa.column('dataset_id', sa.Uuid()),
                     sa.column('class_id', sa.Uuid()), sa.column('position', sa.Integer()),
                     sa.column('image_count', sa.Integer()))
    values = []
    for dataset_id, classes in by_dataset.items():
        for position, (_name, _key, class_id, count) in enumerate(sorted(classes)):
            values.append({"id": uuid.uuid4(), "dataset_id": _as_uuid(dataset_id), "class_id": _as_uuid(class_id),
                           "position": position, "image_count": count})
    for start in range(0, len(values), 1000):
        op.bulk_insert(table, values[start:start + 1000])


def _as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def downgrade() -> None:
    with op.batch_alter_table('cls_dataset_images', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_dataset_images_reserved')

    with op.batch_alter_table('cls_datasets', schema=None) as batch_op:
        batch_op.drop_column('revision')

    with op.batch_alter_table('cls_dataset_classes', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_dataset_classes_class')

    op.drop_table('cls_dataset_classes')
