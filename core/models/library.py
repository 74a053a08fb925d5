"""The image library's table: every image once (original and thumbnail keys, hashes, pHash bands)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, LargeBinary, String, Text, Uuid, cast, column, text
from sqlalchemy.orm import Mapped, mapped_column, validates

from core.library.hamming import band_values, hash_to_int
from core.models.base import Base, TimestampMixin, in_values
from core.vocabulary import IMAGE_SOURCES, IMAGE_STATUSES


class ClsImage(TimestampMixin, Base):
    __tablename__ = "cls_images"
    __table_args__ = (
        CheckConstraint(in_values("source", IMAGE_SOURCES), name="source"),
        CheckConstraint(in_values("status", IMAGE_STATUSES), name="status"),
        Index("idx_cls_images_user", "user_id"),
        Index("idx_cls_images_status", "status"),
        Index("idx_cls_images_source", "source"),
        # folder, then source: "folder + source" counted from the index alone (the two one-column
        # bitmaps ANDed read 200,000 source entries: 52-70 ms at 1,000,000 images); folder alone and the
        # distinct-folder walk use its first column.
        Index("idx_cls_images_folder_source", "folder", "source"),
        Index("idx_cls_images_file_hash", "file_hash"),
        Index("idx_cls_images_phash", "phash"),
        Index("idx_cls_images_phash_band0", "phash_band0"),
        Index("idx_cls_images_phash_band1", "phash_band1"),
        Index("idx_cls_images_phash_band2", "phash_band2"),
        Index("idx_cls_images_created", "created_at"),
        Index("idx_cls_images_source_ref", "source_type", "source_id"),
        # Beyond the plan, for the Images page at 100k+ rows (bench/bench_images_page.py): the tag
        # filter (`?|`, GIN on Postgres) and the name/size sorts use an index, not a scan and sort.
        Index("idx_cls_images_tags", "tags", postgresql_using="gin"),
        Index("idx_cls_images_name", "original_filename"),
        Index("idx_cls_images_size", "file_size_bytes"),
        # The page's text search (ILIKE '%term%' on the name and on the tags as text, core/library/images.py)
        # through trigrams: Postgres only (pg_trgm, see POSTGRES_EXTENSIONS); SQLite scans.
        # migrations/env.py renders Postgres-only indexes into a block of the migration that runs on
        # Postgres alone. 100,000 images: search 114 ms → ≈ 35 ms (bench/bench_images_page.py).
        Index("idx_cls_images_name_trgm", "original_filename", postgresql_using="gin",
              postgresql_ops={"original_filename": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        Index("idx_cls_images_tags_trgm", cast(column("tags"), Text).label("tags_text"), postgresql_using="gin",
              postgresql_ops={"tags_text": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    filename: Mapped[str] = mapped_column(Text)  # <uuid>.<ext>
    original_filename: Mapped[str | None] = mapped_column(Text)
    # The plan's Supabase public URL; here set only when storage has a public base URL.
    image_url: Mapped[str | None] = mapped_column(Text)
    storage_path: Mapped[str] = mapped_column(Text)  # storage key of the original bytes
    thumbnail_path: Mapped[str | None] = mapped_column(Text)  # storage key of the 256 px JPEG
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    file_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))  # Pillow's format name: JPEG, PNG…
    source: Mapped[str] = mapped_column(String(32), default="upload", server_default="upload")
    folder: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    file_hash: Mapped[str | None] = mapped_column(String(64))  # SHA-256 hex of the original bytes
    phash: Mapped[str | None] = mapped_column(String(16))  # 64-bit pHash, hex
    # Beyond the plan, for near duplicates (core/library/duplicates.py, core/library/hamming.py): the pHash cut into
    # three indexed bands of 21/21/22 bits, so a Hamming-radius query is a few hundred index probes, not
    # a scan; and a 256-bit pHash of the thumbnail that confirms (or rejects) each pHash candidate.
    phash_band0: Mapped[int | None] = mapped_column(Integer)
    phash_band1: Mapped[int | None] = mapped_column(Integer)
    phash_band2: Mapped[int | None] = mapped_column(Integer)
    phash256: Mapped[str | None] = mapped_column(String(64))
    # Near duplicates that survive crops (core/library/crop_hashes.py): the pHashes of 11 sub-crop
    # views of the thumbnail, 8 bytes (64-bit) and 32 bytes (256-bit) a view, in VIEW_NAMES order.
    crop_phash: Mapped[bytes | None] = mapped_column(LargeBinary)
    crop_phash256: Mapped[bytes | None] = mapped_column(LargeBinary)
    source_type: Mapped[str | None] = mapped_column(String(32))  # product, cutout, od_image
    source_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict, server_default=text("'{}'"))

    @validates("phash")
    def _set_phash_bands(self, _key: str, value: str | None) -> str | None:
        """Every ORM write of the pHash keeps its indexed bands in step."""
        bands = band_values(hash_to_int(value)) if value else (None, None, None)
        self.phash_band0, self.phash_band1, self.phash_band2 = bands
        return value
