"""What the Images page reads about the whole library on every run, kept by database triggers on
cls_images so it is a few index probes at 1,000,000 images (bench/bench_scale.py), not a scan:

- cls_image_tags: each image's tags one row per tag, for the distinct tags (reading them out of every
  image's JSON list took 1.5-1.9 s);
- cls_library_counts (Postgres): how many images, as rows of +n/-n, one per INSERT or DELETE statement,
  summed on read and folded into one row now and then (core.stats.library_size); an exact COUNT(*)
  read the whole 1,000,000-entry index, 40-135 ms. Appended rows, not one counter row: concurrent
  imports never wait on each other's transactions.

Triggers, not the services, keep them: every write (ORM, bulk UPDATE, COPY, a migration) moves them
in its own transaction, so they are never behind the images they describe, in any snapshot. The
statements are frozen into migration 0005. SQLite counts the images directly (a small library)."""

from __future__ import annotations

import uuid

from sqlalchemy import DDL, BigInteger, ForeignKey, Identity, Index, Text, Uuid, event
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base

POSTGRES_DDL = (
    """CREATE OR REPLACE FUNCTION cls_images_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM cls_image_tags WHERE image_id = OLD.id;
    END IF;
    INSERT INTO cls_image_tags (image_id, tag)
    SELECT DISTINCT NEW.id, element #>> '{}'
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(NEW.tags) = 'array' THEN NEW.tags ELSE '[]'::jsonb END)
        AS element
    WHERE jsonb_typeof(element) = 'string';
    RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER cls_images_tags_insert AFTER INSERT ON cls_images "
    "FOR EACH ROW EXECUTE FUNCTION cls_images_tags_sync()",
    "CREATE OR REPLACE TRIGGER cls_images_tags_update AFTER UPDATE OF tags ON cls_images "
    "FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags) EXECUTE FUNCTION cls_images_tags_sync()",
    # deletes: the foreign key cascades
    """CREATE OR REPLACE FUNCTION cls_images_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM cls_library_counts;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO cls_library_counts (images) SELECT count(*) FROM new_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO cls_library_counts (images) SELECT -count(*) FROM old_rows HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END $$""",
    "CREATE OR REPLACE TRIGGER cls_images_count_insert AFTER INSERT ON cls_images "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()",
    "CREATE OR REPLACE TRIGGER cls_images_count_delete AFTER DELETE ON cls_images "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()",
    "CREATE OR REPLACE TRIGGER cls_images_count_truncate AFTER TRUNCATE ON cls_images "
    "FOR EACH STATEMENT EXECUTE FUNCTION cls_images_count_rows()",
    "INSERT INTO cls_library_counts (images) SELECT count(*) FROM cls_images "
    "WHERE NOT EXISTS (SELECT 1 FROM cls_library_counts) HAVING count(*) > 0",
    """INSERT INTO cls_image_tags (image_id, tag)
    SELECT DISTINCT cls_images.id, element #>> '{}' FROM cls_images,
        jsonb_array_elements(CASE WHEN jsonb_typeof(tags) = 'array' THEN tags ELSE '[]'::jsonb END) AS element
    WHERE jsonb_typeof(element) = 'string' AND NOT EXISTS (SELECT 1 FROM cls_image_tags)""",
)
"""The functions, their triggers, and the rows of the images already there when the tables are new."""

_SQLITE_TAGS_OF_NEW = ("INSERT OR IGNORE INTO cls_image_tags (image_id, tag) SELECT NEW.id, value FROM "
                       "json_each(CASE WHEN json_type(NEW.tags) = 'array' THEN NEW.tags ELSE '[]' END) "
                       "WHERE type = 'text';")
SQLITE_DDL = (
    f"CREATE TRIGGER IF NOT EXISTS cls_images_tags_insert AFTER INSERT ON cls_images BEGIN {_SQLITE_TAGS_OF_NEW} END",
    "CREATE TRIGGER IF NOT EXISTS cls_images_tags_update AFTER UPDATE OF tags ON cls_images BEGIN "
    f"DELETE FROM cls_image_tags WHERE image_id = OLD.id; {_SQLITE_TAGS_OF_NEW} END",
    # SQLite cascades only with its foreign_keys pragma, which an engine may not set
    "CREATE TRIGGER IF NOT EXISTS cls_images_tags_delete AFTER DELETE ON cls_images BEGIN "
    "DELETE FROM cls_image_tags WHERE image_id = OLD.id; END",
    "INSERT OR IGNORE INTO cls_image_tags (image_id, tag) SELECT cls_images.id, tag_each.value FROM cls_images, "
    "json_each(CASE WHEN json_type(cls_images.tags) = 'array' THEN cls_images.tags ELSE '[]' END) AS tag_each "
    "WHERE tag_each.type = 'text' AND NOT EXISTS (SELECT 1 FROM cls_image_tags)",
)


class ClsImageTag(Base):
    """One tag of one image (the string elements of cls_images.tags); written only by the triggers."""

    __tablename__ = "cls_image_tags"
    __table_args__ = (Index("idx_cls_image_tags_tag", "tag", "image_id"),)

    image_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("cls_images.id", ondelete="CASCADE"),
                                                primary_key=True)
    tag: Mapped[str] = mapped_column(Text, primary_key=True)


class ClsLibraryCount(Base):
    """+n or -n images, one row per statement that inserted or deleted images (Postgres; triggers only)."""

    __tablename__ = "cls_library_counts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    images: Mapped[int] = mapped_column(BigInteger)


# After every table (the triggers name three); each statement may run again on a kept database.
for _statement in POSTGRES_DDL:
    event.listen(Base.metadata, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
for _statement in SQLITE_DDL:
    event.listen(Base.metadata, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
