"""The image library: ingest (decode, hash, thumbnail, store), library queries and bulk actions.

Every import path (upload, URL, archive, products, cutouts, OD images) ends in `ingest_bytes` or
`ingest_many`. Decoding happens under the configured pixel limit; the original bytes are stored
unchanged at `images/<uuid>.<ext>` and a 256 px JPEG at `thumbs/<uuid>.jpg`. A row never exists
without its objects and an object never outlives a rolled-back row (see `_objects_follow_transaction`).
"""

from __future__ import annotations

import hashlib
import io
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

from sqlalchemy import Text, cast, delete, event, exists, func, insert, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from core import limits
from core.errors import InvalidInput, NotFound
from core.image_decoding import draft_for, open_image, thumbnail_rgb
from core.models import IMAGE_SOURCES, IMAGE_STATUSES, ClsClass, ClsDataset, ClsDatasetImage, ClsImage, ClsLabel
from core.permissions import audit, require, requires
from core.users import User

log = logging.getLogger(__name__)

# Pillow format name -> extension of the stored original. Anything else is refused: a narrow list
# keeps rarely-used (and rarely-audited) Pillow parsers away from hostile uploads.
FORMAT_EXTENSIONS = {
    "JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif",
    "GIF": "gif", "HEIF": "heic", "AVIF": "avif",
}
CONTENT_TYPES = {
    "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp", "tif": "image/tiff",
    "gif": "image/gif", "heic": "image/heic", "avif": "image/avif",
}
_OPEN_FORMATS = [name for name in FORMAT_EXTENSIONS if name != "MPO"]  # JPEG's opener yields MPO
UPLOAD_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "heic", "heif", "avif"]
MAX_FILENAME_CHARS = 255
MAX_TAGS = 50
MAX_TAG_CHARS = 100
SORTS = {
    "date_desc": (ClsImage.created_at.desc(),), "date_asc": (ClsImage.created_at.asc(),),
    "name_asc": (ClsImage.original_filename.asc(),), "name_desc": (ClsImage.original_filename.desc(),),
    "size_desc": (ClsImage.file_size_bytes.desc(),), "size_asc": (ClsImage.file_size_bytes.asc(),),
}
_BATCH = 64  # rows per commit in ingest_many
_CHUNK = 8  # images per process-pool task in ingest_many


# ---------------------------------------------------------------- decoding (runs in worker processes)


@dataclass
class DecodedImage:
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str
    ext: str
    size: int
    sha256: str
    phash: str  # 64-bit imagehash.phash as 16 hex chars
    thumbnail: bytes  # JPEG, longest side THUMBNAIL_SIZE
    phash256: str | None = None  # 256-bit pHash of that JPEG: near duplicates' confirmation (core/duplicates.py)


def _register_plugins() -> None:
    try:  # HEIC through the maintained pillow-heif plugin; AVIF is built into Pillow ≥ 11.3
        from pillow_heif import register_heif_opener

        register_heif_opener()
    except ImportError:
        pass


def decode_image(data: bytes, *, max_pixels: int, thumb_size: int = limits.THUMBNAIL_SIZE) -> DecodedImage:
    """Decode, check and summarise one image; raise InvalidInput with a reason a user understands."""
    import imagehash
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidInput("empty file (0 bytes)")
    _register_plugins()
    try:
        with open_image(data, max_pixels=max_pixels, formats=_OPEN_FORMATS) as image:
            fmt, (width, height) = image.format, image.size
            orientation = image.getexif().get(0x0112, 1)
            # Decode at a reduced DCT scale (never below the thumbnail size): up to 8x faster.
            draft_for(image, thumb_size)
            image.load()
            shown = thumbnail_rgb(ImageOps.exif_transpose(image) if orientation != 1 else image, thumb_size)
            buffer = io.BytesIO()
            shown.save(buffer, format="JPEG", quality=85, optimize=False)
            phash = str(imagehash.phash(shown))
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:  # a frame past the first claiming more than the limit
        raise InvalidInput(f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidInput("not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF, GIF, "
                           "HEIC, AVIF)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise InvalidInput(f"corrupt or truncated image ({exc})") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    from core.duplicates import fine_hash_of_bytes

    thumbnail = buffer.getvalue()
    # From the stored JPEG's bytes, exactly as duplicate grouping would compute it later (so it never has to).
    return DecodedImage(width=width, height=height, format=fmt, ext=FORMAT_EXTENSIONS[fmt], size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), phash=phash, thumbnail=thumbnail,
                        phash256=fine_hash_of_bytes(thumbnail))


def image_phash(data: bytes, *, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> str:
    """pHash of an image exactly as ingest records it (for checking one image against the library)."""
    return decode_image(data, max_pixels=max_pixels).phash


def _decode_source(source: bytes | str, max_pixels: int, max_bytes: int) -> tuple[str, Any]:
    """Worker-process entry: ("ok", DecodedImage) or ("rejected", reason). Paths are read here so
    large originals never cross the process boundary."""
    try:
        if isinstance(source, str):
            size = os.path.getsize(source)
            if size > max_bytes:
                raise InvalidInput(f"file is {size:,} bytes, over the limit of {max_bytes:,}")
            data = Path(source).read_bytes()
        else:
            data = source
            if len(data) > max_bytes:
                raise InvalidInput(f"file is {len(data):,} bytes, over the limit of {max_bytes:,}")
        return "ok", decode_image(data, max_pixels=max_pixels)
    except InvalidInput as exc:
        return "rejected", str(exc)
    except OSError as exc:
        return "rejected", f"cannot read file ({exc.strerror or exc})"


def _decode_sources(sources: list, max_pixels: int, max_bytes: int) -> list[tuple[str, Any]]:
    """Worker-process entry for a chunk of items: one task and one result message for several images
    (per-item tasks cost the parent ~0.5 ms each in pickling and queue traffic, on the cores decoding needs)."""
    return [_decode_source(source, max_pixels, max_bytes) for source in sources]


# ---------------------------------------------------------------- storing


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


def clean_tags(tags: Iterable[str] | str | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    cleaned: list[str] = []
    for tag in tags:
        tag = "".join(ch for ch in str(tag) if unicodedata.category(ch)[0] != "C").strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(f"tag {tag[:30]!r}… is longer than {MAX_TAG_CHARS} characters")
        if tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"{len(cleaned)} tags given; at most {MAX_TAGS}")
    return cleaned


def clean_folder(folder: str | None) -> str | None:
    if folder is None:
        return None
    folder = "".join(ch for ch in str(folder) if unicodedata.category(ch)[0] != "C").strip().strip("/")
    if len(folder) > MAX_FILENAME_CHARS:
        raise InvalidInput(f"folder name is longer than {MAX_FILENAME_CHARS} characters")
    return folder or None


def _check_source(source: str) -> None:
    if source not in IMAGE_SOURCES:
        raise InvalidInput(f"unknown source {source!r}; one of {', '.join(IMAGE_SOURCES)}")


def _objects_follow_transaction(session: Session, storage, keys: list[str]) -> None:
    """Objects stored for rows of this transaction are deleted if it rolls back."""
    pending = session.info.get("cls_new_objects")
    if pending is None:
        pending = session.info["cls_new_objects"] = []

        def _rolled_back(_session) -> None:
            for store, key in pending:
                try:
                    store.delete(key)
                except Exception:
                    log.warning("could not remove %s after a rollback", key, exc_info=True)
            pending.clear()

        event.listen(session, "after_rollback", _rolled_back)
        event.listen(session, "after_commit", lambda _session: pending.clear())
    pending.extend((storage, key) for key in keys)


def _delete_after_commit(session: Session, storage, keys: list[str]) -> None:
    """Objects of deleted rows go only once the deletion is committed (a rollback keeps both)."""
    doomed = session.info.get("cls_doomed_objects")
    if doomed is None:
        doomed = session.info["cls_doomed_objects"] = []

        def _committed(_session) -> None:
            for store, key in doomed:
                try:
                    store.delete(key)
                except Exception:
                    log.warning("could not remove %s after its row was deleted", key, exc_info=True)
            doomed.clear()

        event.listen(session, "after_commit", _committed)
        event.listen(session, "after_rollback", lambda _session: doomed.clear())
    doomed.extend((storage, key) for key in keys)


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
        phash=decoded.phash, phash256=decoded.phash256, source_type=source_type, source_id=source_id,
        meta=dict(meta or {}),
    )


def _new_row(*args, **kwargs) -> ClsImage:
    return ClsImage(**_row_values(*args, **kwargs))


def _with_phash_bands(values: dict[str, Any]) -> dict[str, Any]:
    """A Core insert skips the ORM validator that keeps the indexed pHash bands (core/hamming.py) in
    step, so set them here the same way. Core rather than ORM: 5x less CPU per row in the main process,
    which shares the two cores with the decoding workers."""
    from core.hamming import band_values, hash_to_int

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
    from core.config import get_settings

    _check_source(source)
    name, folder, tags = clean_filename(filename), clean_folder(folder), clean_tags(tags)
    settings = get_settings()
    status, decoded = _decode_source(data, settings.max_image_pixels, settings.max_upload_bytes)
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
    _objects_follow_transaction(session, storage, [key, thumb_key])
    session.add(_new_row(image_id, decoded, key, thumb_key, name, user_id=actor.id, source=source, folder=folder,
                         tags=tags, source_type=source_type, source_id=source_id, meta=meta, storage=storage))
    session.flush()
    return IngestResult("imported", name, image_id, None, None)


# ---------------------------------------------------------------- batch ingest


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
    context.set_forkserver_preload(["core.images", "core.duplicates", "PIL.Image", "PIL.JpegImagePlugin",
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
    from core.config import get_settings
    from core.storage import get_storage

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
                future = pool.submit(_decode_sources, [item.source for item in chunk], *limits_args)
            except (BrokenProcessPool, OSError, RuntimeError):  # pool unusable: carry on in this process
                log.warning("ingest process pool broke; decoding the rest in-process")
                pool = None
        for index, item in enumerate(chunk):
            window.append((item, _Pending(future, index) if future is not None
                           else _decode_source(item.source, *limits_args)))
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
                outcome = _decode_source(item.source, *limits_args)
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
        from core.db import session_scope

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
                _objects_follow_transaction(session, self.storage, keys)
                if rows:
                    session.execute(insert(ClsImage), [_with_phash_bands(row) for row in rows])
                if self.dataset_id is not None:
                    ids = [r.image_id for r in results if r is not None and r.image_id is not None]
                    add_to_dataset(session=session, actor=self.actor, dataset_id=self.dataset_id, image_ids=ids)
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


@requires("admin", "adding images to a dataset")
def add_to_dataset(*, session: Session, actor: User, dataset_id: uuid.UUID, image_ids: list[uuid.UUID]) -> int:
    """Add images to a dataset (skipping ones already in it), counts kept exact: the datasets service."""
    from core.datasets import add_images_to_dataset

    return add_images_to_dataset(session=session, actor=actor, dataset_id=dataset_id, image_ids=list(image_ids))


# ---------------------------------------------------------------- library queries


@dataclass
class ImageFilters:
    """What the Images page filters by; `to_params`/`from_params` round-trip it through a URL."""

    search: str | None = None
    statuses: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # any of these

    def to_params(self) -> dict[str, str]:
        params = {"q": self.search or "", "status": ",".join(self.statuses), "source": ",".join(self.sources),
                  "folder": "|".join(self.folders), "tag": "|".join(self.tags)}
        return {key: value for key, value in params.items() if value}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ImageFilters:
        def split(key: str, sep: str) -> list[str]:
            return [part for part in str(params.get(key) or "").split(sep) if part]

        return cls(search=(params.get("q") or None), statuses=[s for s in split("status", ",") if s in IMAGE_STATUSES],
                   sources=[s for s in split("source", ",") if s in IMAGE_SOURCES], folders=split("folder", "|"),
                   tags=split("tag", "|"))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _like_pattern(text_: str) -> str:
    escaped = text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _tags_any(session: Session, tags: list[str]):
    if _dialect(session) == "postgresql":
        from sqlalchemy import type_coerce
        from sqlalchemy.dialects.postgresql import ARRAY, JSONB, array

        return type_coerce(ClsImage.tags, JSONB).has_any(array(tags, type_=ARRAY(Text)))
    each = func.json_each(ClsImage.tags).table_valued("value").alias("tag_each")
    return exists().select_from(each).where(each.c.value.in_(tags))


def _tags_like(session: Session, pattern: str):
    if _dialect(session) == "postgresql":
        return cast(ClsImage.tags, Text).ilike(pattern, escape="\\")
    each = func.json_each(ClsImage.tags).table_valued("value").alias("tag_like")
    return exists().select_from(each).where(literal_column("tag_like.value").ilike(pattern, escape="\\"))


def filter_clauses(session: Session, filters: ImageFilters) -> list:
    clauses = []
    if filters.search and filters.search.strip():
        pattern = _like_pattern(filters.search.strip())
        clauses.append(or_(ClsImage.original_filename.ilike(pattern, escape="\\"), _tags_like(session, pattern)))
    if filters.statuses:
        clauses.append(ClsImage.status.in_(filters.statuses))
    if filters.sources:
        clauses.append(ClsImage.source.in_(filters.sources))
    if filters.folders:
        clauses.append(ClsImage.folder.in_(filters.folders))
    if filters.tags:
        clauses.append(_tags_any(session, filters.tags))
    return clauses


def list_images(*, session: Session, filters: ImageFilters, sort: str = "date_desc", limit: int = limits.PAGE_SIZE,
                offset: int = 0, count_limit: int | None = None) -> tuple[list[ClsImage], int]:
    """One page of the library and the number of images matching the filters. With `count_limit` the
    counting stops there: the number is count_limit + 1 when more match."""
    if sort not in SORTS:
        raise InvalidInput(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    if limit < 1 or limit > 1000 or offset < 0:
        raise InvalidInput("limit must be 1–1000 and offset ≥ 0")
    clauses = filter_clauses(session, filters)
    rows = session.scalars(select(ClsImage).where(*clauses).order_by(*SORTS[sort], ClsImage.id)
                           .limit(limit).offset(offset)).all()
    if count_limit is None:
        total = session.scalar(select(func.count()).select_from(ClsImage).where(*clauses))
    else:
        matching = select(ClsImage.id).where(*clauses).limit(count_limit + 1).subquery()
        total = session.scalar(select(func.count()).select_from(matching))
    return list(rows), int(total or 0)


def matching_image_ids(*, session: Session, filters: ImageFilters) -> list[uuid.UUID]:
    """Every image matching the filters ("select all matching")."""
    return list(session.scalars(select(ClsImage.id).where(*filter_clauses(session, filters))))


def image_filter_options(*, session: Session) -> dict[str, Any]:
    """The plan's get_cls_image_filter_options: the values present in the library."""
    def distinct(column) -> list[str]:
        return sorted(v for v in session.scalars(select(column).where(column.is_not(None)).distinct()) if v)

    if _dialect(session) == "postgresql":
        tag_values = session.scalars(select(func.jsonb_array_elements_text(ClsImage.tags)).distinct())
    else:
        tag_values = session.scalars(text("SELECT DISTINCT tag_all.value FROM cls_images, "
                                          "json_each(cls_images.tags) AS tag_all"))
    return {"statuses": distinct(ClsImage.status), "sources": distinct(ClsImage.source),
            "folders": distinct(ClsImage.folder), "tags": sorted(str(t) for t in tag_values if t),
            "total_count": int(session.scalar(select(func.count()).select_from(ClsImage)) or 0)}


def get_image(*, session: Session, image_id: uuid.UUID) -> ClsImage:
    image = session.get(ClsImage, image_id)
    if image is None:
        raise NotFound(f"no image {image_id}")
    return image


def image_detail(*, session: Session, image_id: uuid.UUID) -> dict[str, Any]:
    """An image with the datasets it is in and its labels there."""
    image = get_image(session=session, image_id=image_id)
    datasets = session.execute(
        select(ClsDataset.id, ClsDataset.name, ClsDatasetImage.split, ClsDatasetImage.status)
        .join(ClsDatasetImage, ClsDatasetImage.dataset_id == ClsDataset.id)
        .where(ClsDatasetImage.image_id == image_id).order_by(ClsDataset.name)).all()
    labels = session.execute(
        select(ClsDataset.name, ClsClass.name, ClsLabel.confidence, ClsLabel.is_ai_generated)
        .join(ClsDataset, ClsDataset.id == ClsLabel.dataset_id).join(ClsClass, ClsClass.id == ClsLabel.class_id)
        .where(ClsLabel.image_id == image_id).order_by(ClsDataset.name, ClsClass.name)).all()
    return {
        "image": image,
        "datasets": [{"id": d[0], "name": d[1], "split": d[2], "status": d[3]} for d in datasets],
        "labels": [{"dataset": lb[0], "class": lb[1], "confidence": lb[2], "ai": lb[3]} for lb in labels],
    }


# ---------------------------------------------------------------- edits and bulk actions

_UNSET: Any = object()


@requires("admin", "editing images")
def update_image(*, session: Session, actor: User, image_id: uuid.UUID, folder=_UNSET, tags=_UNSET,
                 status=_UNSET) -> ClsImage:
    image = get_image(session=session, image_id=image_id)
    if folder is not _UNSET:
        image.folder = clean_folder(folder)
    if tags is not _UNSET:
        image.tags = clean_tags(tags)
    if status is not _UNSET:
        if status not in IMAGE_STATUSES:
            raise InvalidInput(f"unknown status {status!r}; one of {', '.join(IMAGE_STATUSES)}")
        image.status = status
    session.flush()
    return image


def _chunks(ids: Iterable[uuid.UUID], size: int = 500) -> Iterator[list[uuid.UUID]]:
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


@requires("admin", "setting folders")
def set_folder(*, session: Session, actor: User, image_ids: Iterable[uuid.UUID], folder: str | None) -> int:
    folder, count = clean_folder(folder), 0
    for chunk in _chunks(image_ids):
        count += session.execute(update(ClsImage).where(ClsImage.id.in_(chunk)).values(folder=folder)).rowcount
    return count


@requires("admin", "tagging images")
def update_tags(*, session: Session, actor: User, image_ids: Iterable[uuid.UUID], add: Iterable[str] = (),
                remove: Iterable[str] = (), replace: Iterable[str] | None = None) -> int:
    """Add and remove tags, or replace them all; returns how many images changed."""
    add, remove = clean_tags(list(add)), set(clean_tags(list(remove)))
    replacement = clean_tags(list(replace)) if replace is not None else None
    changed = 0
    for chunk in _chunks(image_ids):
        for image in session.scalars(select(ClsImage).where(ClsImage.id.in_(chunk))):
            tags = list(replacement) if replacement is not None else [t for t in image.tags or [] if t not in remove]
            tags += [t for t in add if t not in tags]
            if len(tags) > MAX_TAGS:
                raise InvalidInput(f"image {image.original_filename!r} would have {len(tags)} tags; at most {MAX_TAGS}")
            if tags != list(image.tags or []):
                image.tags, changed = tags, changed + 1
    session.flush()
    return changed


@requires("admin", "deleting images")
def delete_images(*, session: Session, actor: User, storage, image_ids: Iterable[uuid.UUID]) -> int:
    """Delete images: their rows now (dataset memberships and labels cascade, counts moved by what was removed), their
    original and thumbnail objects once the transaction commits. Admins only; audited."""
    deleted = _delete_images(session=session, actor=actor, storage=storage, image_ids=image_ids)
    if deleted:
        audit(session=session, actor=actor, action="delete_images", target_type="image", row_count=deleted)
    return deleted


def _delete_images(*, session: Session, actor: User, storage, image_ids: Iterable[uuid.UUID]) -> int:
    from core.datasets import detach_images_everywhere

    ids = list(dict.fromkeys(image_ids))
    # Dataset memberships and their labels go through the datasets service first: it locks the
    # datasets and classes and keeps every denormalized count exact.
    detach_images_everywhere(session=session, actor=actor, image_ids=ids)
    deleted = 0
    for chunk in _chunks(ids):
        rows = session.execute(select(ClsImage.id, ClsImage.storage_path, ClsImage.thumbnail_path)
                               .where(ClsImage.id.in_(chunk))).all()
        if not rows:
            continue
        found = [row[0] for row in rows]
        # Explicit delete rather than ON DELETE CASCADE: SQLite cascades only with its foreign_keys
        # pragma, which a foreign engine may not set.
        session.execute(delete(ClsLabel).where(ClsLabel.image_id.in_(found)))
        deleted += session.execute(delete(ClsImage).where(ClsImage.id.in_(found))).rowcount
        _delete_after_commit(session, storage, [key for row in rows for key in row[1:] if key])
    session.flush()
    return deleted

