"""Every library pHash of one database in this process's memory (LibraryIndex), refreshed from the
rows created since the last look and rebuilt hourly: one image is checked against the library in
about 2 ms at 1,000,000 images instead of probing the indexed band columns in SQL."""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from core.library.crop_hashes import VIEW_NAMES, unpack_coarse
from core.library.hamming import (
    HashIndex,
    to_uint64,
)
from core.models import ClsImage

INDEX_LOOKBACK_SECONDS = 30
"""Rows created this recently (by this process's clock) may still be in uncommitted transactions: each
refresh of the in-memory index reads them again (adding the ones it has not seen), so a row whose
transaction commits up to this long after its created_at is still picked up. Ingest commits each batch
right after inserting it."""


INDEX_REBUILD_SECONDS = 3600
"""The in-memory index is rebuilt from scratch when older than this (catches anything a refresh missed)."""


class LibraryIndex:
    """Every library pHash of one database in this process's memory (core.library.hamming.HashIndex), for
    checking one image against the library without the band-index SQL (bench/bench_duplicates.py).

    Built on first use (seconds per 1,000,000 rows) and rebuilt every INDEX_REBUILD_SECONDS. In between
    it catches up as it is used: the caller reads the candidates back by id in one query that also
    returns every row created since `complete_before` (INDEX_LOOKBACK_SECONDS before the previous
    catch-up; normally none) and hands those to `absorb`. So images deleted since are dropped, distances
    are re-checked on the stored pHash, and images added since are both found and remembered.
    Thread-safe (Streamlit serves sessions from threads)."""

    def __init__(self) -> None:
        self.index: HashIndex | None = None
        self.views: HashIndex | None = None  # the sub-crop views' pHashes (core/library/crop_hashes.py)
        self.complete_before = None  # every row created before this is in the index
        self.recent: dict[uuid.UUID, Any] = {}  # ids in the index created at or after complete_before
        self.built_at = 0.0
        self.lock = threading.Lock()

    def search(self, session: Session, value: int, threshold: int) -> tuple[list[uuid.UUID], Any, Any]:
        """(ids whose pHash in memory is within `threshold` of `value`, since, now): the caller also
        reads the rows created at or after `since` and passes them to `absorb(rows, now)`."""
        now = _db_now(session)
        with self.lock:
            if self._stale():
                self._rebuild(session, now)
            keys, _distances = self.index.search(value, threshold)
            since = self.complete_before
        return [uuid.UUID(bytes=key.tobytes()) for key in keys], since, now

    def search_views(self, value: int, threshold: int) -> list[uuid.UUID]:
        """Ids of the images one of whose stored sub-crop views is within `threshold` of `value` (as of
        the last search or refresh: call after `search` has caught up)."""
        with self.lock:
            if self.views is None or not len(self.views):
                return []
            keys, _distances = self.views.search(value, threshold)
        return list(dict.fromkeys(uuid.UUID(bytes=key.tobytes()) for key in keys))

    def _stale(self) -> bool:
        return self.index is None or time.monotonic() - self.built_at > INDEX_REBUILD_SECONDS

    def absorb(self, rows: Iterable, now) -> None:
        """Take in rows (with id, phash, created_at; crop_phash if read) read with `created_at >= since`
        at time `now`."""
        with self.lock:
            fresh = [row for row in rows if row.phash and row.id not in self.recent]
            if fresh:
                self.index.add(*_hashes_and_keys([(row.id.hex, row.phash) for row in fresh]))
                self.views.add(*_view_hashes_and_keys([(row.id.hex, getattr(row, "crop_phash", None))
                                                      for row in fresh]))
            self.complete_before = max(self.complete_before, now - timedelta(seconds=INDEX_LOOKBACK_SECONDS))
            self.recent.update((row.id, row.created_at) for row in rows if row.phash and row.created_at is not None)
            self.recent = {key: stamp for key, stamp in self.recent.items() if stamp >= self.complete_before}

    def refresh(self, session: Session) -> None:
        """Build (or catch up) now, outside a query."""
        now = _db_now(session)
        with self.lock:
            if self._stale():
                self._rebuild(session, now)
                return
            since = self.complete_before
        self.absorb(session.execute(select(ClsImage.id, ClsImage.phash, ClsImage.crop_phash, ClsImage.created_at)
                                    .where(ClsImage.created_at >= since)).all(), now)

    def _rebuild(self, session: Session, now) -> None:
        since = now - timedelta(seconds=INDEX_LOOKBACK_SECONDS)
        # The recent ids first: a row committed between the two reads is then read again by the next
        # catch-up (a harmless second entry), never skipped.
        recent = session.execute(select(ClsImage.id, ClsImage.created_at)
                                 .where(ClsImage.phash.is_not(None), ClsImage.created_at >= since)).all()
        everything = select(cast(ClsImage.id, String), ClsImage.phash).where(ClsImage.phash.is_not(None))
        self.index, self.built_at = HashIndex(), time.monotonic()
        self.index.add(*_hashes_and_keys(_raw_rows(session, everything)))
        views = select(cast(ClsImage.id, String), ClsImage.crop_phash).where(ClsImage.crop_phash.is_not(None))
        self.views = HashIndex()
        self.views.add(*_view_hashes_and_keys(_raw_rows(session, views)))
        self.complete_before = since
        self.recent = {row.id: row.created_at for row in recent}


def _db_now(session: Session):
    """Now, as created_at values come back from this database (naive UTC on SQLite)."""
    now = datetime.now(UTC)
    return now.replace(tzinfo=None) if session.get_bind().dialect.name == "sqlite" else now


def _raw_rows(session: Session, query) -> list[tuple]:
    """All rows of a parameterless query as the driver's plain tuples: a third of the time of result
    rows for the million-row read that builds the index."""
    connection = session.connection()
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled))
        return cursor.fetchall()
    finally:
        cursor.close()


def _hashes_and_keys(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """(id text, pHash hex) rows as a uint64 array and an array of 16-byte ids, without a Python object
    per row where the text allows (ids as 32 hex digits with or without dashes, pHashes as 16)."""
    if not rows:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype="V16")
    id_texts, phashes = [row[0] for row in rows], [row[1] for row in rows]
    keys = np.frombuffer(bytes.fromhex("".join(id_texts).replace("-", "")), dtype="V16")
    joined = "".join(phashes)
    if len(joined) == 16 * len(phashes):
        hashes = np.frombuffer(bytes.fromhex(joined), dtype=">u8").astype(np.uint64)
    else:
        hashes = to_uint64(phashes)
    return hashes, keys


def _view_hashes_and_keys(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """(id text, crop_phash bytes or None) rows as every view's uint64 hash and its image's 16-byte id."""
    rows = [(image_id, bytes(blob)) for image_id, blob in rows if blob]
    if not rows:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype="V16")
    keys = np.frombuffer(bytes.fromhex("".join(row[0] for row in rows).replace("-", "")), dtype="V16")
    return unpack_coarse([row[1] for row in rows]).reshape(-1), np.repeat(keys, len(VIEW_NAMES))


_library_indexes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_library_indexes_lock = threading.Lock()


def library_index(session: Session) -> LibraryIndex:
    """This process's in-memory index of the session's database (one per engine)."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    with _library_indexes_lock:
        found = _library_indexes.get(engine)
        if found is None:
            found = _library_indexes[engine] = LibraryIndex()
        return found
