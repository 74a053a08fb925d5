"""The library at 1,000,000 images (bench/bench_scale.py): cls_image_tags (each image's tags one row per
tag: the Images page's tag list from an index, not from every image's JSON) and cls_library_counts
(the image count as +n/-n rows, Postgres), both kept by triggers on cls_images; folder and source in
one index. The trigger statements are core/models/library_aggregates.py's, frozen here; each table is
filled from the images already there. For the dataset grid: partial label indexes for its AI and
not-reviewed totals; on Postgres, (dataset, image) with added_at included, for a rare class's page.

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

POSTGRES_DDL = (
    "CREATE OR REPLACE FUNCTION cls_images_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF TG_OP = 'UPDATE' THEN\n        DELETE FROM cls_image_tags WHERE image_id = OLD.id;\n    END IF;\n    INSERT INTO cls_image_tags (image_id, tag)\n    SELECT DISTINCT NEW.id, element #>> '{}'\n    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(NEW.tags) = 'array' THEN NEW.tags ELSE '[]'::jsonb END)\n        AS element\n    WHERE jsonb_typeof(element) = 'string';\n    RETURN NULL;\nEND $$",
    'CREATE OR REPLACE TRIGGER cls_images_tags_insert AFTER INSERT ON cls_images FOR EACH ROW EXECUTE FUNCTION cls_images_tags_sync()',
    'CREATE OR REPLACE TRIGGER cls_images_tags_update AFTER UPDATE OF tags ON cls_images FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags) EXECUTE FUNCTION cls_images_tags_sync()',
    "CREATE OR REPLACE FUNCTION cls_images_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF TG_OP = 'TRUNCATE' THEN\n        DELETE FROM cls_library_counts;\n    ELSIF TG_OP = 'INSERT' THEN\n        INSERT INTO cls_library_counts (images) SELECT count(*) FROM new_rows HAVING count(*) > 0;\n    ELSE\n        INSERT INTO cls_library_counts (images) SELECT -count(*) FROM old_rows HAVING count(*) > 0;\n    END IF;\n    RETURN NULL;\nEND $$",
    'CREATE OR REPLACE TRIGGER cls_images_count_insert AFTER INSERT ON cls_images REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()',
    'CREATE OR REPLACE TRIGGER cls_images_count_delete AFTER DELETE ON cls_images REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()',
    'CREATE OR REPLACE TRIGGER cls_images_count_truncate AFTER TRUNCATE ON cls_images FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()',
    'INSERT INTO cls_library_counts (images) SELECT count(*) FROM cls_images WHERE NOT EXISTS (SELECT 1 FROM cls_library_counts) HAVING count(*) > 0',
    "INSERT INTO cls_image_tags (image_id, tag)\n    SELECT DISTINCT cls_images.id, element #>> '{}' FROM cls_images,\n        jsonb_array_elements(CASE WHEN jsonb_typeof(tags) = 'array' THEN tags ELSE '[]'::jsonb END) AS element\n    WHERE jsonb_typeof(element) = 'string' AND NOT EXISTS (SELECT 1 FROM cls_image_tags)",
)

SQLITE_DDL = (
    "CREATE TRIGGER IF NOT EXISTS cls_images_tags_insert AFTER INSERT ON cls_images BEGIN INSERT OR IGNORE INTO cls_image_tags (image_id, tag) SELECT NEW.id, value FROM json_each(CASE WHEN json_type(NEW.tags) = 'array' THEN NEW.tags ELSE '[]' END) WHERE type = 'text'; END",
    "CREATE TRIGGER IF NOT EXISTS cls_images_tags_update AFTER UPDATE OF tags ON cls_images BEGIN DELETE FROM cls_image_tags WHERE image_id = OLD.id; INSERT OR IGNORE INTO cls_image_tags (image_id, tag) SELECT NEW.id, value FROM json_each(CASE WHEN json_type(NEW.tags) = 'array' THEN NEW.tags ELSE '[]' END) WHERE type = 'text'; END",
    'CREATE TRIGGER IF NOT EXISTS cls_images_tags_delete AFTER DELETE ON cls_images BEGIN DELETE FROM cls_image_tags WHERE image_id = OLD.id; END',
    "INSERT OR IGNORE INTO cls_image_tags (image_id, tag) SELECT cls_images.id, tag_each.value FROM cls_images, json_each(CASE WHEN json_type(cls_images.tags) = 'array' THEN cls_images.tags ELSE '[]' END) AS tag_each WHERE tag_each.type = 'text' AND NOT EXISTS (SELECT 1 FROM cls_image_tags)",
)


def upgrade() -> None:
    op.create_table('cls_library_counts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('images', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cls_library_counts'))
    )
    op.create_table('cls_image_tags',
    sa.Column('image_id', sa.Uuid(), nullable=False),
    sa.Column('tag', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['cls_images.id'], name=op.f('fk_cls_image_tags_image_id_cls_images'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'tag', name=op.f('pk_cls_image_tags'))
    )
    for statement in POSTGRES_DDL if op.get_bind().dialect.name == 'postgresql' else SQLITE_DDL:
        op.execute(statement)  # the triggers, then the rows of the images there (before the index: faster)
    with op.batch_alter_table('cls_image_tags', schema=None) as batch_op:
        batch_op.create_index('idx_cls_image_tags_tag', ['tag', 'image_id'], unique=False)
    with op.batch_alter_table('cls_images', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_images_folder')
        batch_op.create_index('idx_cls_images_folder_source', ['folder', 'source'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':  # Postgres-only (migrations/env.py)
        op.create_index('idx_cls_dataset_images_image_order', 'cls_dataset_images', ['dataset_id', 'image_id'],
                        unique=False, postgresql_include=['added_at'])
    with op.batch_alter_table('cls_labels', schema=None) as batch_op:
        batch_op.create_index('idx_cls_labels_ai', ['dataset_id', 'image_id'], unique=False,
                              postgresql_where=sa.text('is_ai_generated'), sqlite_where=sa.text('is_ai_generated'))
        batch_op.create_index('idx_cls_labels_unreviewed', ['dataset_id', 'image_id'], unique=False,
                              postgresql_where=sa.text('NOT is_reviewed'), sqlite_where=sa.text('NOT is_reviewed'))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS cls_images_tags_insert ON cls_images')
        op.execute('DROP TRIGGER IF EXISTS cls_images_tags_update ON cls_images')
        op.execute('DROP FUNCTION IF EXISTS cls_images_tags_sync()')
        for name in ('insert', 'delete', 'truncate'):
            op.execute(f'DROP TRIGGER IF EXISTS cls_images_count_{name} ON cls_images')
        op.execute('DROP FUNCTION IF EXISTS cls_images_count_rows()')
    else:
        for name in ('insert', 'update', 'delete'):
            op.execute(f'DROP TRIGGER IF EXISTS cls_images_tags_{name}')
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('idx_cls_dataset_images_image_order', table_name='cls_dataset_images')
    with op.batch_alter_table('cls_labels', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_labels_unreviewed')
        batch_op.drop_index('idx_cls_labels_ai')
    with op.batch_alter_table('cls_images', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_images_folder_source')
        batch_op.create_index('idx_cls_images_folder', ['folder'], unique=False)
    with op.batch_alter_table('cls_image_tags', schema=None) as batch_op:
        batch_op.drop_index('idx_cls_image_tags_tag')
    op.drop_table('cls_image_tags')
    op.drop_table('cls_library_counts')
