"""Storage objects that follow a database transaction: an object stored for a row of the transaction
goes if it rolls back (a row never exists without its objects, an object never outlives a
rolled-back row), and the objects of deleted rows go only once the deletion commits."""

from __future__ import annotations

import logging

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


def _delete_when(session: Session, *, outcome: str, storage, keys: list[str]) -> None:
    """Delete `keys` from `storage` when the session's transaction ends in `outcome` ("commit" or
    "rollback"); forget them when it ends the other way."""
    info_key = f"cls_objects_deleted_on_{outcome}"
    pending = session.info.get(info_key)
    if pending is None:
        pending = session.info[info_key] = []

        def _delete(_session) -> None:
            for store, key in pending:
                try:
                    store.delete(key)
                except Exception:
                    log.warning("could not remove %s after a %s", key, outcome, exc_info=True)
            pending.clear()

        other = "rollback" if outcome == "commit" else "commit"
        event.listen(session, f"after_{outcome}", _delete)
        event.listen(session, f"after_{other}", lambda _session: pending.clear())
    pending.extend((storage, key) for key in keys)


def delete_on_rollback(session: Session, storage, keys: list[str]) -> None:
    """Objects stored for rows of this transaction are deleted if it rolls back."""
    _delete_when(session, outcome="rollback", storage=storage, keys=keys)


def delete_on_commit(session: Session, storage, keys: list[str]) -> None:
    """Objects of deleted rows go only once the deletion is committed (a rollback keeps both)."""
    _delete_when(session, outcome="commit", storage=storage, keys=keys)
