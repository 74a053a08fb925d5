"""EXPLAIN (ANALYZE, BUFFERS) of every SELECT one page call makes, on bench_scale.py's database (build it
first): the plans behind its figures.

    python bench/scale_explain.py                      # every case
    python bench/scale_explain.py options rare_class   # some

Each call runs once through the real service with its statements captured, then each captured SELECT
runs again under EXPLAIN with the same parameters. Prints the plans and each one's execution time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_scale import DATASET, database_url  # noqa: E402


def cases(dataset_id, rare_class) -> dict:
    from core import limits
    from core.datasets.grid import GridFilters, dataset_grid
    from core.datasets.versions import unassigned_labeled_count
    from core.library.images import ImageFilters, count_ahead, image_filter_options, list_images

    def page(**filters):
        chosen = ImageFilters(**filters)
        return lambda s: list_images(session=s, filters=chosen, count_limit=count_ahead(chosen))

    def grid(**filters):
        return lambda s: dataset_grid(session=s, dataset_id=dataset_id, filters=GridFilters(**filters))

    return {
        "folder_source": page(folders=["folder_07"], sources=["upload"]),
        "tags": page(tags=["tag_005", "tag_150"]),
        "search": page(search="cat"),
        "status_page_20": lambda s: list_images(session=s, filters=ImageFilters(statuses=["pending"]),
                                                offset=19 * 48, count_limit=19 * 48 + limits.COUNT_AHEAD),
        "options": lambda s: image_filter_options(session=s),
        "rare_class": grid(class_id=rare_class),
        "ai_unreviewed": grid(source="ai", reviewed=False),
        "split_val": grid(split="val"),
        "unassigned_labeled": lambda s: unassigned_labeled_count(session=s, dataset_id=dataset_id),
    }


def explain(name: str, call) -> None:
    from sqlalchemy import event

    from core.db import get_engine, session_scope

    captured = []

    def grab(_conn, _cursor, statement, parameters, _context, _many):
        captured.append((statement, parameters))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", grab)
    try:
        with session_scope() as session:
            call(session)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    print(f"==================== {name}")
    for statement, parameters in captured:
        if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        raw = engine.raw_connection()
        try:
            with raw.driver_connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                print("\n".join(row[0] for row in cursor.fetchall()), "\n-----")
        finally:
            raw.close()


def main() -> None:
    os.environ["DATABASE_URL"] = database_url()
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import ClsDataset, ClsDatasetClass

    with session_scope() as session:
        dataset_id = session.scalar(select(ClsDataset.id).where(ClsDataset.name == DATASET))
        rare = session.scalar(select(ClsDatasetClass.class_id).where(ClsDatasetClass.dataset_id == dataset_id)
                              .order_by(ClsDatasetClass.image_count).limit(1))
    table = cases(dataset_id, rare)
    for name in sys.argv[1:] or table:
        explain(name, table[name])


if __name__ == "__main__":
    main()
