"""A dataset's slow aggregates (counts over its 200,000 rows: 250-600 ms at load) kept in this process
under the dataset's write key, so a page that reruns reads them once per change to the dataset.

Never stale: the key is the dataset's (revision, updated_at), which every write to the dataset moves
in its own transaction (core.datasets.locks.lock_dataset); a value is kept only when the committed
key, read on a connection of its own, is the same before and after computing it and equals the key
the caller's transaction sees, so the value is the committed state at that key (not a writer's own
uncommitted one, whose key a rollback could hand to a different state later). Postgres only (SQLite:
a second connection could wait on the caller's write lock; its datasets are small)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ClsDataset

MAX_ENTRIES = 256
_values: OrderedDict[tuple, tuple[tuple, int]] = OrderedDict()
_lock = threading.Lock()


def _key_query(dataset_id: uuid.UUID):
    return select(ClsDataset.revision, ClsDataset.updated_at).where(ClsDataset.id == dataset_id)


def cached_count(session: Session, dataset_id: uuid.UUID, name: str, compute: Callable[[], int]) -> int:
    """compute(), or the value it gave at the dataset's current committed key."""
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        return compute()
    seen = tuple(session.execute(_key_query(dataset_id)).first() or ())
    with _lock:
        kept = _values.get((dataset_id, name))
    if kept is not None and seen and kept[0] == seen:
        return kept[1]
    with session.connection().engine.connect() as own:
        before = tuple(own.execute(_key_query(dataset_id)).first() or ())
        value = compute()
        own.rollback()  # a fresh snapshot for the second read
        after = tuple(own.execute(_key_query(dataset_id)).first() or ())
    if seen and before == after == seen:
        with _lock:
            _values[(dataset_id, name)] = (seen, value)
            _values.move_to_end((dataset_id, name))
            while len(_values) > MAX_ENTRIES:
                _values.popitem(last=False)
    return value
