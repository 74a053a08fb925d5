"""Decoding one image under the pixel limit: format allow-list, EXIF orientation, size, SHA-256,
pHash, the 256 px thumbnail and its fine hash. No database: this runs in ingest's worker processes."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import limits
from core.errors import InvalidInput
from core.image_decoding import draft_for, open_image, thumbnail_rgb
from core.library.crop_hashes import thumbnail_hashes

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
    phash256: str | None = None  # 256-bit pHash of that JPEG: near duplicates' confirmation (core/library/duplicates.py)
    crop_phash: bytes | None = None  # that JPEG's sub-crop views' pHashes (core/library/crop_hashes.py)
    crop_phash256: bytes | None = None


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

    thumbnail = buffer.getvalue()
    # From the stored JPEG's bytes, exactly as duplicate grouping (and the crop backfill) would compute
    # them later (so it never has to).
    phash256, crop_phash, crop_phash256 = thumbnail_hashes(thumbnail)
    return DecodedImage(width=width, height=height, format=fmt, ext=FORMAT_EXTENSIONS[fmt], size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), phash=phash, thumbnail=thumbnail,
                        phash256=phash256, crop_phash=crop_phash, crop_phash256=crop_phash256)


def image_phash(data: bytes, *, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> str:
    """pHash of an image exactly as ingest records it (for checking one image against the library)."""
    return decode_image(data, max_pixels=max_pixels).phash


def decode_source(source: bytes | str, max_pixels: int, max_bytes: int) -> tuple[str, Any]:
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


def decode_sources(sources: list, max_pixels: int, max_bytes: int) -> list[tuple[str, Any]]:
    """Worker-process entry for a chunk of items: one task and one result message for several images
    (per-item tasks cost the parent ~0.5 ms each in pickling and queue traffic, on the cores decoding needs)."""
    return [decode_source(source, max_pixels, max_bytes) for source in sources]
