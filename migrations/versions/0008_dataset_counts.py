"""A dataset's labeled images without a split (cls_datasets.unassigned_labeled_count), kept by
triggers on cls_labels, cls_dataset_images and (Postgres) cls_images: the Versions tab read it with a
join of the dataset's rows and labels, 180-370 ms at 200,000 images on the first read after each
write (bench/bench_scale.py). The trigger statements are core/models/dataset_aggregates.py's, frozen
here; the column is filled from the rows already there. For the dataset grid: idx_cls_labels_class
with dataset and image (a rare class's images from the index alone), and a partial index of the AI
labels not reviewed (their total where each image has one label).

Plain ALTER TABLE, not batch mode: on SQLite a batch rebuild of a table drops its triggers (those of
0005 and these), so a later migration that rebuilds cls_labels, cls_dataset_images or cls_images in
batch mode must create them again.

Revision ID: 0008
Revises: 0007
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_DDL = (
    "CREATE OR REPLACE FUNCTION cls_labels_unassigned_count() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF TG_OP = 'TRUNCATE' THEN  -- no labels or no memberships left: nothing is labeled and unassigned\n        UPDATE cls_datasets SET unassigned_labeled_count = 0 WHERE unassigned_labeled_count <> 0;\n    ELSIF TG_OP = 'INSERT' THEN\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum((kept.labels > 0)::int - (kept.labels - pairs.added > 0)::int) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS added FROM (SELECT dataset_id, image_id, 1 AS n FROM new_rows) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              JOIN cls_dataset_images AS link ON link.dataset_id = pairs.dataset_id\n                   AND link.image_id = pairs.image_id AND (link.split IS NULL OR link.split = 'unassigned')\n              CROSS JOIN LATERAL (SELECT count(*) AS labels FROM cls_labels AS label\n                                  WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id) AS kept\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    ELSIF TG_OP = 'DELETE' THEN\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum((kept.labels > 0)::int - (kept.labels - pairs.added > 0)::int) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS added FROM (SELECT dataset_id, image_id, -1 AS n FROM old_rows) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              JOIN cls_dataset_images AS link ON link.dataset_id = pairs.dataset_id\n                   AND link.image_id = pairs.image_id AND (link.split IS NULL OR link.split = 'unassigned')\n              CROSS JOIN LATERAL (SELECT count(*) AS labels FROM cls_labels AS label\n                                  WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id) AS kept\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    ELSE\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum((kept.labels > 0)::int - (kept.labels - pairs.added > 0)::int) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS added FROM (SELECT dataset_id, image_id, 1 AS n FROM new_rows UNION ALL SELECT dataset_id, image_id, -1 AS n FROM old_rows) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              JOIN cls_dataset_images AS link ON link.dataset_id = pairs.dataset_id\n                   AND link.image_id = pairs.image_id AND (link.split IS NULL OR link.split = 'unassigned')\n              CROSS JOIN LATERAL (SELECT count(*) AS labels FROM cls_labels AS label\n                                  WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id) AS kept\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    END IF;\n    RETURN NULL;\nEND $$",
    'CREATE OR REPLACE TRIGGER cls_labels_unassigned_insert AFTER INSERT ON cls_labels REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_labels_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_labels_unassigned_update AFTER UPDATE ON cls_labels REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_labels_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_labels_unassigned_delete AFTER DELETE ON cls_labels REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_labels_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_labels_unassigned_truncate AFTER TRUNCATE ON cls_labels FOR EACH STATEMENT EXECUTE FUNCTION cls_labels_unassigned_count()',
    "CREATE OR REPLACE FUNCTION cls_dataset_images_unassigned_count() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF TG_OP = 'TRUNCATE' THEN  -- no labels or no memberships left: nothing is labeled and unassigned\n        UPDATE cls_datasets SET unassigned_labeled_count = 0 WHERE unassigned_labeled_count <> 0;\n    ELSIF TG_OP = 'INSERT' THEN\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum(pairs.n) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS n FROM (SELECT dataset_id, image_id, 1 AS n FROM new_rows WHERE (split IS NULL OR split = 'unassigned')) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              WHERE EXISTS (SELECT 1 FROM cls_labels AS label\n                            WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id)\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    ELSIF TG_OP = 'DELETE' THEN\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum(pairs.n) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS n FROM (SELECT dataset_id, image_id, -1 AS n FROM old_rows WHERE (split IS NULL OR split = 'unassigned')) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              WHERE EXISTS (SELECT 1 FROM cls_labels AS label\n                            WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id)\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    ELSE\n        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta\n        FROM (SELECT pairs.dataset_id, sum(pairs.n) AS delta\n              FROM (SELECT dataset_id, image_id, sum(n) AS n FROM (SELECT dataset_id, image_id, 1 AS n FROM new_rows WHERE (split IS NULL OR split = 'unassigned') UNION ALL SELECT dataset_id, image_id, -1 AS n FROM old_rows WHERE (split IS NULL OR split = 'unassigned')) AS changes\n                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs\n              WHERE EXISTS (SELECT 1 FROM cls_labels AS label\n                            WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id)\n              GROUP BY pairs.dataset_id) AS moved\n        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;\n    END IF;\n    RETURN NULL;\nEND $$",
    'CREATE OR REPLACE TRIGGER cls_dataset_images_unassigned_insert AFTER INSERT ON cls_dataset_images REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_dataset_images_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_dataset_images_unassigned_update AFTER UPDATE ON cls_dataset_images REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_dataset_images_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_dataset_images_unassigned_delete AFTER DELETE ON cls_dataset_images REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_dataset_images_unassigned_count()',
    'CREATE OR REPLACE TRIGGER cls_dataset_images_unassigned_truncate AFTER TRUNCATE ON cls_dataset_images FOR EACH STATEMENT EXECUTE FUNCTION cls_dataset_images_unassigned_count()',
    "CREATE OR REPLACE FUNCTION cls_images_unassigned_count() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    IF NOT EXISTS (SELECT 1 FROM cls_dataset_images WHERE image_id = OLD.id) THEN\n        RETURN OLD;  -- the usual case: the service took the image out of its datasets first\n    END IF;\n    UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1\n    FROM cls_dataset_images AS link\n    WHERE link.image_id = OLD.id AND cls_datasets.id = link.dataset_id\n        AND (link.split IS NULL OR link.split = 'unassigned')\n        AND EXISTS (SELECT 1 FROM cls_labels AS label WHERE label.dataset_id = link.dataset_id\n                    AND label.image_id = OLD.id);\n    RETURN OLD;\nEND $$",
    'CREATE OR REPLACE TRIGGER cls_images_unassigned_delete BEFORE DELETE ON cls_images FOR EACH ROW EXECUTE FUNCTION cls_images_unassigned_count()',
)

SQLITE_DDL = (
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_insert AFTER INSERT ON cls_labels BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + 1 WHERE id = NEW.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id AND (split IS NULL OR split = 'unassigned')) AND (SELECT count(*) FROM cls_labels WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id) = 1; END",
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_delete AFTER DELETE ON cls_labels BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1 WHERE id = OLD.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id AND (split IS NULL OR split = 'unassigned')) AND NOT EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id); END",
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_update AFTER UPDATE OF dataset_id, image_id ON cls_labels WHEN OLD.dataset_id IS NOT NEW.dataset_id OR OLD.image_id IS NOT NEW.image_id BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1 WHERE id = OLD.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id AND (split IS NULL OR split = 'unassigned')) AND NOT EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id); UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + 1 WHERE id = NEW.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id AND (split IS NULL OR split = 'unassigned')) AND (SELECT count(*) FROM cls_labels WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id) = 1; END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_insert AFTER INSERT ON cls_dataset_images BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + 1 WHERE id = NEW.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id AND (split IS NULL OR split = 'unassigned')) AND EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id); END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_delete BEFORE DELETE ON cls_dataset_images BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1 WHERE id = OLD.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id AND (split IS NULL OR split = 'unassigned')) AND EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id); END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_unset BEFORE UPDATE OF split, dataset_id, image_id ON cls_dataset_images BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1 WHERE id = OLD.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id AND (split IS NULL OR split = 'unassigned')) AND EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = OLD.dataset_id AND image_id = OLD.image_id); END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_set AFTER UPDATE OF split, dataset_id, image_id ON cls_dataset_images BEGIN UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + 1 WHERE id = NEW.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id AND (split IS NULL OR split = 'unassigned')) AND EXISTS (SELECT 1 FROM cls_labels WHERE dataset_id = NEW.dataset_id AND image_id = NEW.image_id); END",
)

FILL = "UPDATE cls_datasets SET unassigned_labeled_count = (SELECT count(*) FROM cls_dataset_images AS link WHERE link.dataset_id = cls_datasets.id AND (link.split IS NULL OR link.split = 'unassigned') AND EXISTS (SELECT 1 FROM cls_labels AS label WHERE label.dataset_id = link.dataset_id AND label.image_id = link.image_id))"


def upgrade() -> None:
    op.add_column('cls_datasets', sa.Column('unassigned_labeled_count', sa.Integer(), server_default='0',
                                            nullable=False))
    op.execute(FILL)  # before the triggers: the count of what is there, then every write moves it
    for statement in POSTGRES_DDL if op.get_bind().dialect.name == 'postgresql' else SQLITE_DDL:
        op.execute(statement)
    op.drop_index('idx_cls_labels_class', table_name='cls_labels')
    op.create_index('idx_cls_labels_class', 'cls_labels', ['class_id', 'dataset_id', 'image_id'], unique=False)
    op.create_index('idx_cls_labels_ai_unreviewed', 'cls_labels', ['dataset_id', 'image_id'], unique=False,
                    postgresql_where=sa.text('is_ai_generated AND NOT is_reviewed'),
                    sqlite_where=sa.text('is_ai_generated AND NOT is_reviewed'))


def downgrade() -> None:
    op.drop_index('idx_cls_labels_ai_unreviewed', table_name='cls_labels')
    op.drop_index('idx_cls_labels_class', table_name='cls_labels')
    op.create_index('idx_cls_labels_class', 'cls_labels', ['class_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        for table in ('cls_labels', 'cls_dataset_images'):
            for name in ('insert', 'update', 'delete', 'truncate'):
                op.execute(f'DROP TRIGGER IF EXISTS {table}_unassigned_{name} ON {table}')
            op.execute(f'DROP FUNCTION IF EXISTS {table}_unassigned_count()')
        op.execute('DROP TRIGGER IF EXISTS cls_images_unassigned_delete ON cls_images')
        op.execute('DROP FUNCTION IF EXISTS cls_images_unassigned_count()')
    else:
        for name in ('cls_labels_unassigned_insert', 'cls_labels_unassigned_delete', 'cls_labels_unassigned_update',
                     'cls_dataset_images_unassigned_insert', 'cls_dataset_images_unassigned_delete',
                     'cls_dataset_images_unassigned_unset', 'cls_dataset_images_unassigned_set'):
            op.execute(f'DROP TRIGGER IF EXISTS {name}')
    op.drop_column('cls_datasets', 'unassigned_labeled_count')
