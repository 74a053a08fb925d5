"""cls_datasets.unassigned_labeled_count: how many of a dataset's images have a label but no split
(split NULL or 'unassigned'), the images create_version assigns by the dataset's ratios. Counting it
joined the dataset's rows with its labels: 245-370 ms at 200,000 images (bench/bench_scale.py) on
the first read after each write. Database triggers keep it instead, so every write (a label saved,
a bulk label or split action, a fan-out chunk, COPY, a cascade) moves it in its own transaction.

Postgres: one statement trigger per table with its transition tables (a bulk action of 100,000 rows
is one join, not 100,000 updates). Each looks at the (dataset, image) pairs its statement changed,
in the state after the statement: a label statement moves the count by the pairs that went from no
label to some (or back) among unassigned images; a membership statement by the unassigned rows it
added or removed that carry a label. Postgres fires the triggers of cascaded deletes only when the
outer statement ends, when an image's membership and labels are both gone and neither trigger can
tell what was there, so deleting an image moves the count before its row goes (a row trigger on
cls_images); the cascades then find nothing. A dataset's own deletion needs nothing (its row is gone).
A trigger reads the state its statement left: writers of one dataset take its lock first
(core.datasets.locks), and statements that change no split or label pair (reservations) write nothing.
SQLite: row triggers, which fire at once, cascades included. The statements are frozen into
migration 0008."""

from __future__ import annotations

from sqlalchemy import DDL, event

from core.models.base import Base

_UNASSIGNED = "(split IS NULL OR split = 'unassigned')"

_LABEL_PAIRS = """
        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta
        FROM (SELECT pairs.dataset_id, sum((kept.labels > 0)::int - (kept.labels - pairs.added > 0)::int) AS delta
              FROM (SELECT dataset_id, image_id, sum(n) AS added FROM ({changes}) AS changes
                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs
              JOIN cls_dataset_images AS link ON link.dataset_id = pairs.dataset_id
                   AND link.image_id = pairs.image_id AND (link.split IS NULL OR link.split = 'unassigned')
              CROSS JOIN LATERAL (SELECT count(*) AS labels FROM cls_labels AS label
                                  WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id) AS kept
              GROUP BY pairs.dataset_id) AS moved
        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;"""

_MEMBER_ROWS = """
        UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count + moved.delta
        FROM (SELECT pairs.dataset_id, sum(pairs.n) AS delta
              FROM (SELECT dataset_id, image_id, sum(n) AS n FROM ({changes}) AS changes
                    GROUP BY dataset_id, image_id HAVING sum(n) <> 0) AS pairs
              WHERE EXISTS (SELECT 1 FROM cls_labels AS label
                            WHERE label.dataset_id = pairs.dataset_id AND label.image_id = pairs.image_id)
              GROUP BY pairs.dataset_id) AS moved
        WHERE cls_datasets.id = moved.dataset_id AND moved.delta <> 0;"""


def _statement_function(name: str, body: str, where: str = "") -> str:
    """A statement trigger function over the changed rows: +1 per new row, -1 per old row."""
    new = f"SELECT dataset_id, image_id, 1 AS n FROM new_rows{where}"
    old = f"SELECT dataset_id, image_id, -1 AS n FROM old_rows{where}"
    return f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN  -- no labels or no memberships left: nothing is labeled and unassigned
        UPDATE cls_datasets SET unassigned_labeled_count = 0 WHERE unassigned_labeled_count <> 0;
    ELSIF TG_OP = 'INSERT' THEN{body.format(changes=new)}
    ELSIF TG_OP = 'DELETE' THEN{body.format(changes=old)}
    ELSE{body.format(changes=f"{new} UNION ALL {old}")}
    END IF;
    RETURN NULL;
END $$"""


def _statement_triggers(table: str, function: str) -> tuple[str, ...]:
    return tuple(
        f"CREATE OR REPLACE TRIGGER {table}_unassigned_{op.lower()} AFTER {op} ON {table} "
        f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        for op, refs in (("INSERT", "NEW TABLE AS new_rows"), ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                         ("DELETE", "OLD TABLE AS old_rows"))
    ) + (f"CREATE OR REPLACE TRIGGER {table}_unassigned_truncate AFTER TRUNCATE ON {table} "
         f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",)


POSTGRES_DDL = (
    _statement_function("cls_labels_unassigned_count", _LABEL_PAIRS),
    *_statement_triggers("cls_labels", "cls_labels_unassigned_count"),
    _statement_function("cls_dataset_images_unassigned_count", _MEMBER_ROWS, where=f" WHERE {_UNASSIGNED}"),
    *_statement_triggers("cls_dataset_images", "cls_dataset_images_unassigned_count"),
    """CREATE OR REPLACE FUNCTION cls_images_unassigned_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cls_dataset_images WHERE image_id = OLD.id) THEN
        RETURN OLD;  -- the usual case: the service took the image out of its datasets first
    END IF;
    UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count - 1
    FROM cls_dataset_images AS link
    WHERE link.image_id = OLD.id AND cls_datasets.id = link.dataset_id
        AND (link.split IS NULL OR link.split = 'unassigned')
        AND EXISTS (SELECT 1 FROM cls_labels AS label WHERE label.dataset_id = link.dataset_id
                    AND label.image_id = OLD.id);
    RETURN OLD;
END $$""",
    "CREATE OR REPLACE TRIGGER cls_images_unassigned_delete BEFORE DELETE ON cls_images "
    "FOR EACH ROW EXECUTE FUNCTION cls_images_unassigned_count()",
)
"""The functions and their triggers (each statement may run again on a kept database)."""


def _sqlite_move(sign: str, row: str, labeled: str) -> str:
    """Move the count of row's dataset by sign when row's pair is unassigned and `labeled` holds."""
    pair = f"dataset_id = {row}.dataset_id AND image_id = {row}.image_id"
    return (f"UPDATE cls_datasets SET unassigned_labeled_count = unassigned_labeled_count {sign} 1 "
            f"WHERE id = {row}.dataset_id AND EXISTS (SELECT 1 FROM cls_dataset_images WHERE {pair} "
            f"AND {_UNASSIGNED}) AND {labeled.format(pair=pair)};")


_FIRST_LABEL = "(SELECT count(*) FROM cls_labels WHERE {pair}) = 1"
_NO_LABEL = "NOT EXISTS (SELECT 1 FROM cls_labels WHERE {pair})"
_SOME_LABEL = "EXISTS (SELECT 1 FROM cls_labels WHERE {pair})"
SQLITE_DDL = (
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_insert AFTER INSERT ON cls_labels BEGIN "
    f"{_sqlite_move('+', 'NEW', _FIRST_LABEL)} END",
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_delete AFTER DELETE ON cls_labels BEGIN "
    f"{_sqlite_move('-', 'OLD', _NO_LABEL)} END",
    "CREATE TRIGGER IF NOT EXISTS cls_labels_unassigned_update AFTER UPDATE OF dataset_id, image_id ON cls_labels "
    "WHEN OLD.dataset_id IS NOT NEW.dataset_id OR OLD.image_id IS NOT NEW.image_id BEGIN "
    f"{_sqlite_move('-', 'OLD', _NO_LABEL)} {_sqlite_move('+', 'NEW', _FIRST_LABEL)} END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_insert AFTER INSERT ON cls_dataset_images BEGIN "
    f"{_sqlite_move('+', 'NEW', _SOME_LABEL)} END",
    # the row is gone when an AFTER DELETE trigger runs: BEFORE, while it can still be found
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_delete BEFORE DELETE ON cls_dataset_images BEGIN "
    f"{_sqlite_move('-', 'OLD', _SOME_LABEL)} END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_unset BEFORE UPDATE OF split, dataset_id, image_id "
    "ON cls_dataset_images BEGIN "
    f"{_sqlite_move('-', 'OLD', _SOME_LABEL)} END",
    "CREATE TRIGGER IF NOT EXISTS cls_dataset_images_unassigned_set AFTER UPDATE OF split, dataset_id, image_id "
    "ON cls_dataset_images BEGIN "
    f"{_sqlite_move('+', 'NEW', _SOME_LABEL)} END",
)
"""Row triggers: each looks for the changed row's membership, so a membership's own change is
counted around it (BEFORE the old row goes, AFTER the new one is there)."""

FILL = ("UPDATE cls_datasets SET unassigned_labeled_count = (SELECT count(*) FROM cls_dataset_images AS link "
        "WHERE link.dataset_id = cls_datasets.id AND (link.split IS NULL OR link.split = 'unassigned') "
        "AND EXISTS (SELECT 1 FROM cls_labels AS label WHERE label.dataset_id = link.dataset_id "
        "AND label.image_id = link.image_id))")
"""The count from scratch (the migration's fill; tests compare the kept count with it)."""

for _statement in POSTGRES_DDL:
    event.listen(Base.metadata, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
for _statement in SQLITE_DDL:
    event.listen(Base.metadata, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
