"""Decoding images under the pixel limit, with bounded memory.

Every place that decodes an image (ingest, thumbnails and hashes, prediction, Grad-CAM, training
reads) opens it here: `open_image` reads only the header (Pillow's open is lazy) and refuses a size
over `MAX_IMAGE_PIXELS` before a single pixel is decoded. `reduced` then shrinks by whole factors in
horizontal bands, converting each band on its own, so a 1-bit, grey or palette image is never held as
full-size RGB (a 12 KB 1-bit 10000×9999 PNG peaked at ~570 MB that way); JPEGs are reduced while
decoding (`draft`, DCT scaling) instead.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable

from core.errors import InvalidInput

BAND_PIXELS = 1 << 20
"""Source pixels converted at once while reducing (one band: ~4 MB as RGB)."""

THUMBNAIL_REDUCING_GAP = 2.0
"""As Pillow's thumbnail: the box reduce stops at twice the final size, bilinear does the rest."""

_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def over_limit_message(width: int, height: int, max_pixels: int) -> str:
    digits = 2  # more only where the two would read the same (an image a few pixels over the limit)
    while _megapixels(width * height, digits) == _megapixels(max_pixels, digits) and digits < 6:
        digits += 1
    return (f"image is {width}×{height} = {_megapixels(width * height, digits)} MP, "
            f"over the limit of {_megapixels(max_pixels, digits)} MP")


def _megapixels(pixels: int, digits: int) -> str:
    return f"{pixels / 1e6:.{digits}f}".rstrip("0").rstrip(".")


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InvalidInput(over_limit_message(width, height, max_pixels))


def open_image(data: bytes, *, max_pixels: int, formats: list[str] | None = None):
    """The image with only its header read, its size checked against `max_pixels`. Raises
    InvalidInput for an over-limit size; Pillow's own errors (not an image, broken header) pass up."""
    from PIL import Image

    # Pillow's own guard stays as a backstop (it refuses at twice this); ours refuses at the limit itself.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError:
        size = _header_size(data, formats)
        if size is None:
            raise InvalidInput(f"image is larger than {_megapixels(2 * max_pixels, 2)} MP, over the limit of "
                               f"{_megapixels(max_pixels, 2)} MP") from None
        raise InvalidInput(over_limit_message(*size, max_pixels)) from None
    try:
        check_pixels(*image.size, max_pixels)
    except InvalidInput:
        image.close()
        raise
    return image


def _header_size(data: bytes, formats: list[str] | None) -> tuple[int, int] | None:
    """Width and height from the header alone, through the format's own opener, for the message when
    Pillow's guard refused the image before we saw its size."""
    from PIL import Image

    Image.init()
    for name in formats or list(Image.OPEN):
        factory, accept = Image.OPEN.get(name.upper(), (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # a header this opener cannot read: try the next
            continue
    return None


def draft_for(image, shortest: int) -> None:
    """Let a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) that keeps both sides ≥ `shortest`."""
    if image.format in ("JPEG", "MPO"):
        image.draft(None, (shortest, shortest))


def to_rgb(image, extrema: tuple | None = None):
    """Any Pillow mode to 8-bit RGB: 16-bit and float scaled, alpha on white. `extrema` (of the whole
    image) keeps the scaling of one band the same as the whole image's."""
    from PIL import Image

    if image.mode in _HIGH_DEPTH_MODES:
        image = Image.fromarray(_scaled_to_bytes(image, extrema or image.getextrema()), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _scaled_to_bytes(image, extrema: tuple):
    import numpy as np

    low, high = (float(value) for value in extrema)
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values, top = values - low, max(high - low, 1e-9)
    else:
        top = 65535.0 if high > 255 else max(high, 1.0)
    return np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)


def reduced(image, factor: tuple[int, int], convert: Callable):
    """`convert(image).reduce(factor)`, done in bands of rows (a multiple of the vertical factor, so
    the result is the same pixel for pixel) so the converted image never exists at full size."""
    from PIL import Image

    width, height = image.size
    fx, fy = factor
    if (fx, fy) == (1, 1) or width * height <= BAND_PIXELS:
        whole = convert(image)
        return whole if (fx, fy) == (1, 1) else whole.reduce((fx, fy))
    rows = max(fy, BAND_PIXELS // width // fy * fy)
    out = None
    for top in range(0, height, rows):
        band = convert(image.crop((0, top, width, min(top + rows, height)))).reduce((fx, fy))
        if out is None:
            out = Image.new(band.mode, (math.ceil(width / fx), math.ceil(height / fy)))
        out.paste(band, (0, top // fy))
    return out


def thumbnail_rgb(image, side: int):
    """The RGB thumbnail (longest side `side`) of a loaded image: Pillow's `thumbnail` with bilinear
    and its reducing gap, the same pixels, with the RGB conversion done band by band."""
    from PIL import Image

    final = _thumbnail_size(image.size, side)
    extrema = image.getextrema() if image.mode in _HIGH_DEPTH_MODES else None
    if final is None:
        return to_rgb(image, extrema)
    width, height = image.size
    factor = (int(width / final[0] / THUMBNAIL_REDUCING_GAP) or 1, int(height / final[1] / THUMBNAIL_REDUCING_GAP) or 1)
    small = reduced(image, factor, lambda band: to_rgb(band, extrema))
    return small.resize(final, Image.Resampling.BILINEAR, box=(0, 0, width / factor[0], height / factor[1]))


def _thumbnail_size(size: tuple[int, int], side: int) -> tuple[int, int] | None:
    """Pillow's `Image.thumbnail` size rule (its nested `preserve_aspect_ratio`), None when no resize."""
    width, height = size
    if side >= width and side >= height:
        return None
    aspect = width / height

    def round_aspect(number: float, key) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    if 1 >= aspect:
        return round_aspect(side * aspect, key=lambda n: abs(aspect - n / side)), side
    return side, round_aspect(side / aspect, key=lambda n: 0 if n == 0 else abs(aspect - side / n))


def shrunk_for_model(image, *, mode: str, shorter_side: int, gap: float):
    """A loaded image in `mode`, box-reduced by the largest whole factor that keeps its shorter side
    ≥ `gap` × `shorter_side` (what the model's resize then brings to `shorter_side`)."""
    factor = max(1, int(min(image.size) / (shorter_side * gap)))
    return reduced(image, (factor, factor), lambda band: band.convert(mode))
