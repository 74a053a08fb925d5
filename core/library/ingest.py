"""Ingest: every import path (upload, URL, archive, products, cutouts, OD images) ends in
`ingest_bytes` or `ingest_many`. Decoding happens under the configured pixel limit (in worker
processes for many images); the original bytes are stored unchanged at `images/<uuid>.<ext>` and a
256 px JPEG at `thumbs/<uuid>.jpg`. A row never exists without its objects and an object never
outlives a rolled-back row (see `delete_on_rollback`)."""

from __future__ import annotations

import logging
import os
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.config import get_settings
from core.datasets.dataset import add_images_to_dataset
from core.db import session_scope
from core.errors import InvalidInput
from core.library.decode import (
    CONTENT_TYPES,
    DecodedImage,
    decode_source,
    decode_sources,
)
from core.library.hamming import band_values, hash_to_int
from core.library.images import MAX_FILENAME_CHARS, clean_folder, clean_tags
from core.library.object_hooks import delete_on_rollback
from core.models import ClsImage
from core.permissions import require, requires
from core.storage import get_storage
from core.users import User
from core.vocabulary import IMAGE_SOURCES

log = logging.getLogger(__name__)

_BATCH = 64  # rows per commit in ingest_many


_CHUNK = 8  # images per process-pool task in ingest_many


@dataclass
class IngestResult:
    status: str  # "imported" | "duplicate" | "rejected"
    filename: str
    image_id: uuid.UUID | None  # the new image, or the existing one it duplicates
    duplicate_of: uuid.UUID | None
    error: str | None  # clear, per-file reason when rejected

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "filename": self.filename,
                "image_id": str(self.image_id) if self.image_id else None,
                "duplicate_of": str(self.duplicate_of) if self.duplicate_of else None, "error": self.error}


def clean_filename(name: str | None) -> str:
    """The user's file name, safe to store and show: no folders, no control characters, ≤ 255 chars
    (the extension kept when a very long name is shortened)."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip() or "unnamed"
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = stem[: MAX_FILENAME_CHARS - len(ext) - 2] + "…" + (f".{ext}" if ext else "")
    return name


def _check_source(source: str) -> None:
    if source not in IMAGE_SOURCES:
        raise InvalidInput(f"unknown source {source!r}; one of {', '.join(IMAGE_SOURCES)}")



def _put_objects(storage, image_id: uuid.UUID, decoded: DecodedImage, original: bytes | str) -> tuple[str, str]:
    """Store original then thumbnail; on failure remove what was written and raise."""
    key, thumb_key = f"images/{image_id}.{decoded.ext}", f"thumbs/{image_id}.jpg"
    try:
        if isinstance(original, str):
            storage.put_file(key, original, content_type=CONTENT_TYPES[decoded.ext])
        else:
            storage.put(key, original, content_type=CONTENT_TYPES[decoded.ext])
        storage.put(thumb_key, decoded.thumbnail, content_type="image/jpeg")
    except Exception:
        for doomed in (key, thumb_key):
            try:
                storage.delete(doomed)
            except Exception:
                log.warning("could not remove %s after a failed store", doomed, exc_info=True)
        raise
    return key, thumb_key


def _row_values(image_id, decoded: DecodedImage, key: str, thumb_key: str, filename: str, *, user_id, source,
                folder, tags, source_type, source_id, meta, storage) -> dict[str, Any]:
    public = getattr(storage, "public_url", None)
    return dict(
        id=image_id, user_id=user_id, filename=f"{image_id}.{decoded.ext}", original_filename=filename,
        image_url=storage.url(key) if public else None, storage_path=key, thumbnail_path=thumb_key,
        width=decoded.width, height=decoded.height, file_size_bytes=decoded.size, format=decoded.format,
        source=source, folder=folder, tags=list(tags), status="pending", file_hash=decoded.sha256,
        phash=decoded.phash, phash256=decoded.phash256, crop_phash=decoded.crop_phash,
        crop_phash256=decoded.crop_phash256, source_type=source_type, source_id=source_id,
        meta=dict(meta or {}),
    )


def _new_row(*args, **kwargs) -> ClsImage:
    return ClsImage(**_row_values(*args, **kwargs))


def _with_phash_bands(values: dict[str, Any]) -> dict[str, Any]:
    """A Core insert skips the ORM validator that keeps the indexed pHash bands (core/library/hamming.py) in
    step, so set them here the same way. Core rather than ORM: 5x less CPU per row in the main process,
    which shares the two cores with the decoding workers."""
    values["phash_band0"], values["phash_band1"], values["phash_band2"] = band_values(hash_to_int(values["phash"]))
    return values


def _existing_by_hash(session: Session, hashes: list[str]) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    for start in range(0, len(hashes), 500):
        rows = session.execute(
            select(ClsImage.file_hash, ClsImage.id).where(ClsImage.file_hash.in_(hashes[start:start + 500]))
            .order_by(ClsImage.created_at)
        )
        for file_hash, image_id in rows:
            found.setdefault(file_hash, image_id)
    return found


@requires("admin", "importing")
def ingest_bytes(*, session: Session, actor: User, storage, data: bytes, filename: str, source="upload",
                 folder=None, tags=None, skip_duplicates=True, source_type=None, source_id=None,
                 meta=None) -> IngestResult:
    """Ingest one image in the caller's transaction. Bad bytes give a "rejected" result, not an error."""
    _check_source(source)
    name, folder, tags = clean_filename(filename), clean_folder(folder), clean_tags(tags)
    settings = get_settings()
    status, decoded = decode_source(data, settings.max_image_pixels, settings.max_upload_bytes)
    if status == "rejected":
        return IngestResult("rejected", name, None, None, decoded)
    if skip_duplicates:
        existing = _existing_by_hash(session, [decoded.sha256]).get(decoded.sha256)
        if existing is not None:
            return IngestResult("duplicate", name, existing, existing, None)
    image_id = uuid.uuid4()
    try:
        key, thumb_key = _put_objects(storage, image_id, decoded, data)
    except Exception as exc:
        return IngestResult("rejected", name, None, None, f"could not store the image ({exc})")
    delete_on_rollback(session, storage, [key, thumb_key])
    session.add(_new_row(image_id, decoded, key, thumb_key, name, user_id=actor.id, source=source, folder=folder,
                         tags=tags, source_type=source_type, source_id=source_id, meta=meta, storage=storage))
    session.flush()
    return IngestResult("imported", name, image_id, None, None)


@dataclass
class _Item:
    filename: str
    source: bytes | str  # bytes, or a file path the worker reads
    extra: dict[str, Any] = field(default_factory=dict)


def _items(items: Iterable) -> Iterator[_Item]:
    for item in items:
        if isinstance(item, dict):
            body = item.get("data", item.get("path"))
            extra = {k: item.get(k) for k in ("source_type", "source_id", "meta") if item.get(k) is not None}
            filename = item.get("filename") or (Path(body).name if isinstance(body, (str, Path)) else "unnamed")
        else:
            filename, body = item
            extra = {}
        source = str(body) if isinstance(body, Path) else body
        yield _Item(clean_filename(filename), source if isinstance(source, (bytes, str)) else bytes(source), extra)


def _process_pool(workers: int):
    """Decode/hash/thumbnail in separate processes (CPU-bound: the GIL would serialise threads).
    forkserver: never fork a process that holds DB pools, boto3 clients or the Streamlit server."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    # Imported once in the fork server, inherited by every worker (and every later pool) for free.
    # scipy.fftpack (imagehash's DCT, imported at its first call) alone costs each worker 0.3 s of CPU.
    # Missing optional modules (pillow_heif) are skipped by the fork server.
    context.set_forkserver_preload(["core.library.decode", "core.library.fingerprints", "PIL.Image", "PIL.JpegImagePlugin",
                                    "PIL.PngImagePlugin", "imagehash", "scipy.fftpack", "pillow_heif"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


@requires("admin", "importing")
def ingest_many(*, items, actor: User, storage=None, source="upload", folder=None, tags=None,
                skip_duplicates=True, progress: Callable[[int, int | None], None] | None = None,
                dataset_id: uuid.UUID | None = None, workers: int | None = None) -> list[IngestResult]:
    """Ingest many images: decoding in a process pool, storing and committing in batches of 64.

    Streams: at most a few batches of items are in flight, so memory stays flat for any count.
    `dataset_id` also adds each imported (or duplicate-matched) image to that dataset. The actor's
    role is checked again before each batch is committed, so a role removed meanwhile stops it.
    """
    _check_source(source)
    storage = storage or get_storage()
    folder, tags = clean_folder(folder), clean_tags(tags)
    settings = get_settings()
    total = len(items) if hasattr(items, "__len__") else None
    workers = workers or max(1, os.cpu_count() or 1)
    batch_writer = _BatchWriter(actor=actor, storage=storage, skip_duplicates=skip_duplicates, dataset_id=dataset_id,
                                row_kwargs={"user_id": actor.id, "source": source, "folder": folder, "tags": tags})
    results: list[IngestResult] = []
    inline = workers == 1 or (total is not None and total < 16)
    pool = None if inline else _process_pool(workers)
    limits_args = (settings.max_image_pixels, settings.max_upload_bytes)
    window: deque = deque()
    chunk: list[_Item] = []  # items waiting to go to the pool together (one task, one pickle round trip)

    def submit_chunk() -> None:
        nonlocal pool
        future = None
        if pool is not None and chunk:
            try:
                future = pool.submit(decode_sources, [item.source for item in chunk], *limits_args)
            except (BrokenProcessPool, OSError, RuntimeError):  # pool unusable: carry on in this process
                log.warning("ingest process pool broke; decoding the rest in-process")
                pool = None
        for index, item in enumerate(chunk):
            window.append((item, _Pending(future, index) if future is not None
                           else decode_source(item.source, *limits_args)))
        chunk.clear()

    try:
        for item in _items(items):
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                submit_chunk()
            if len(window) >= _BATCH * 2:
                _drain(window, _BATCH, batch_writer, results, progress, total, limits_args)
        submit_chunk()
        _drain(window, len(window), batch_writer, results, progress, total, limits_args)
    finally:
        batch_writer.threads.shutdown()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


@dataclass
class _Pending:
    """An item's place in a chunk sent to the pool: result `index` of `future`."""

    future: Any
    index: int


def _drain(window: deque, count: int, writer: _BatchWriter, results: list, progress, total, limits_args) -> None:
    batch = []
    for _ in range(min(count, len(window))):
        item, outcome = window.popleft()
        if isinstance(outcome, _Pending):
            try:
                outcome = outcome.future.result()[outcome.index]
            except BrokenProcessPool:
                outcome = decode_source(item.source, *limits_args)
        batch.append((item, outcome))
    if batch:
        results.extend(writer.write(batch))
        if progress is not None:
            progress(len(results), total)


class _BatchWriter:
    """Stores one batch's objects (threads: storage is I/O) and commits its rows in one transaction."""

    def __init__(self, *, actor: User, storage, skip_duplicates: bool, dataset_id, row_kwargs: dict):
        self.actor, self.storage, self.skip_duplicates, self.dataset_id = actor, storage, skip_duplicates, dataset_id
        self.row_kwargs = row_kwargs
        self.seen: dict[str, uuid.UUID] = {}  # hashes imported earlier in this call
        self.threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-store")

    def write(self, batch: list[tuple[_Item, tuple[str, Any]]]) -> list[IngestResult]:
        require(self.actor, "admin", "importing")  # again per batch: a long import stops when the role goes
        results: list[IngestResult | None] = [None] * len(batch)
        hashes = [decoded.sha256 for _item, (status, decoded) in batch if status == "ok"]
        with session_scope() as session:
            known = _existing_by_hash(session, hashes) if self.skip_duplicates and hashes else {}
        to_store = []
        for index, (item, (status, decoded)) in enumerate(batch):
            if status != "ok":
                results[index] = IngestResult("rejected", item.filename, None, None, decoded)
                continue
            match = (known.get(decoded.sha256) or self.seen.get(decoded.sha256)) if self.skip_duplicates else None
            if match is not None:
                results[index] = IngestResult("duplicate", item.filename, match, match, None)
                continue
            image_id = uuid.uuid4()
            self.seen.setdefault(decoded.sha256, image_id)
            to_store.append((index, item, decoded, image_id))
        stored = list(self.threads.map(self._store, to_store))
        rows, keys = [], []
        for (index, item, decoded, image_id), outcome in zip(to_store, stored, strict=True):
            if isinstance(outcome, Exception):
                self.seen.pop(decoded.sha256, None)
                results[index] = IngestResult("rejected", item.filename, None, None,
                                              f"could not store the image ({outcome})")
                continue
            key, thumb_key = outcome
            keys += [key, thumb_key]
            rows.append(_row_values(image_id, decoded, key, thumb_key, item.filename, storage=self.storage,
                                 **self.row_kwargs, source_type=item.extra.get("source_type"),
                                 source_id=item.extra.get("source_id"), meta=item.extra.get("meta")))
            results[index] = IngestResult("imported", item.filename, image_id, None, None)
        try:
            with session_scope() as session:
                delete_on_rollback(session, self.storage, keys)
                if rows:
                    session.execute(insert(ClsImage), [_with_phash_bands(row) for row in rows])
                if self.dataset_id is not None:
                    ids = [r.image_id for r in results if r is not None and r.image_id is not None]
                    add_images_to_dataset(session=session, actor=self.actor, dataset_id=self.dataset_id, image_ids=ids)
        except Exception as exc:  # the whole batch failed to commit: its objects were removed
            log.exception("ingest batch failed")
            for row in rows:
                self.seen.pop(row["file_hash"], None)
            results = [IngestResult("rejected", r.filename, None, None, f"could not save the batch ({exc})")
                       if r is not None and r.status == "imported" else r for r in results]
        return results  # type: ignore[return-value]

    def _store(self, job):
        _index, item, decoded, image_id = job
        try:
            return _put_objects(self.storage, image_id, decoded, item.source)
        except Exception as exc:
            return exc
