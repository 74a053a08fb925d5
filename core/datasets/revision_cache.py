"""A dataset's slow aggregates (counts over its 200,000 rows: 250-600 ms at load) kept in this process
under the dataset's write key, so a page that reruns reads them once per change to the dataset.

Never stale: the key is the dataset's (revision, updated_at), which every write to the dataset moves
in its own transaction (core.datasets.locks.lock_dataset). A value is kept only when the caller's
transaction has written nothing (Postgres assigns it no transaction id) and the key read before and
after computing it is the same: the value is then the committed state at that key. A writer's own
uncommitted count is never kept (its key could come back after a rollback on another state).
Postgres only (SQLite's datasets are small)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.models import ClsDataset

MAX_ENTRIES = 256
_values: OrderedDict[tuple, tuple[tuple, int]] = OrderedDict()
_lock = threading.Lock()


def _key_query(dataset_id: uuid.UUID):
    return select(ClsDataset.revision, ClsDataset.updated_at).where(ClsDataset.id == dataset_id)


def cached_count(session: Session, dataset_id: uuid.UUID, name: str, compute: Callable[[], int]) -> int:
    """compute(), or the value it gave at the dataset's current committed key."""
    if session.get_bind().dialect.name != "postgresql":
        return compute()
    before = tuple(session.execute(_key_query(dataset_id)).first() or ())
    with _lock:
        kept = _values.get((dataset_id, name))
    if kept is not None and before and kept[0] == before:
        return kept[1]
    value = compute()
    after = tuple(session.execute(_key_query(dataset_id)).first() or ())
    untouched = session.scalar(text("SELECT pg_current_xact_id_if_assigned() IS NULL"))
    if before and before == after and untouched:
        with _lock:
            _values[(dataset_id, name)] = (before, value)
            _values.move_to_end((dataset_id, name))
            while len(_values) > MAX_ENTRIES:
                _values.popitem(last=False)
    return value
