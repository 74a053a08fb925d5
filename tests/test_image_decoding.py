"""Bounded decoding (core/image_decoding.py): the band-by-band thumbnail is Pillow's own thumbnail of
the full-size RGB image (the old path), pixel for pixel, in every mode ingest meets; prediction's
reduced decode stays within a small tolerance of the full-size one; the size check and its message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core import image_decoding
from core.errors import InvalidInput
from core.image_decoding import check_pixels, over_limit_message, thumbnail_rgb, to_rgb
from tests.factories import drawn_image_bytes, one_bit_png


def old_thumbnail(image: Image.Image, side: int = 256) -> Image.Image:
    """What ingest did before: the whole image as RGB, then Pillow's thumbnail."""
    shown = to_rgb(image)
    shown = shown.copy() if shown is image else shown
    shown.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return shown


def picture(mode: str, size: tuple[int, int]) -> Image.Image:
    base = Image.open(io.BytesIO(drawn_image_bytes(7, size))).convert("RGB")
    ImageDraw.Draw(base).line((0, 0, size[0], size[1]), fill=(250, 250, 250), width=5)
    if mode in ("1", "L", "P", "RGB", "CMYK"):
        return base.convert(mode)
    if mode == "P_transparent":
        paletted = base.convert("P")
        paletted.info["transparency"] = paletted.getpixel((0, 0))
        return paletted
    if mode in ("RGBA", "LA"):
        alpha = Image.linear_gradient("L").resize(size)
        out = base.convert(mode[:-1])
        out.putalpha(alpha)
        return out
    grey = np.asarray(base.convert("L"), dtype=np.float64)
    if mode == "I;16":
        return Image.fromarray((grey * 200).astype(np.int32), "I").convert("I;16")
    return Image.fromarray((grey / 255.0 - 0.3).astype(np.float32), "F")


MODES = ["1", "L", "P", "P_transparent", "RGB", "RGBA", "LA", "CMYK", "I;16", "F"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(1503, 997), (997, 1503), (3001, 211), (300, 200), (200, 180)])
def test_band_thumbnail_is_the_old_thumbnail_pixel_for_pixel(monkeypatch, mode, size):
    import imagehash

    monkeypatch.setattr(image_decoding, "BAND_PIXELS", 40_000)  # many bands, odd last one, on small images
    image = picture(mode, size)
    new, old = thumbnail_rgb(image, 256), old_thumbnail(image)
    assert new.mode == "RGB" and new.size == old.size
    difference = np.abs(np.asarray(new, dtype=np.int16) - np.asarray(old, dtype=np.int16))
    assert difference.max() == 0, (mode, size, difference.max())
    assert str(imagehash.phash(new)) == str(imagehash.phash(old))


def test_one_bit_ingest_matches_the_old_path():
    import imagehash

    from core.library.decode import decode_image

    data = one_bit_png(2500, 1999)
    decoded = decode_image(data, max_pixels=100_000_000)
    with Image.open(io.BytesIO(data)) as image:
        old = old_thumbnail(image)
    assert (decoded.width, decoded.height) == (2500, 1999)
    assert decoded.phash == str(imagehash.phash(old))
    stored = Image.open(io.BytesIO(decoded.thumbnail)).convert("RGB")
    assert stored.size == old.size  # JPEG-encoded, so compared within the codec's error
    assert np.abs(np.asarray(stored, dtype=np.int16) - np.asarray(old, dtype=np.int16)).mean() < 2


def model_input(preprocessing, data: bytes, *, reduced: bool) -> np.ndarray:
    from core.ml.augment import eval_transform
    from core.ml.data import decode_image

    transform = eval_transform(preprocessing)
    side = 256 if reduced else None
    return transform(decode_image(data, mode="RGB", shorter_side=side)).numpy()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_prediction_decode_reduced_stays_close_to_full_size(fmt):
    preprocessing = {"size": 224, "in_chans": 3, "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225], "crop_pct": 0.875}
    data = drawn_image_bytes(3, (2400, 1800), fmt)
    reduced, full = model_input(preprocessing, data, reduced=True), model_input(preprocessing, data, reduced=False)
    assert reduced.shape == full.shape == (3, 224, 224)
    # Normalised units (1 ≈ 58 of 255 levels): measured 0.0002 (PNG) and 0.0004 (JPEG, DCT-scaled).
    assert np.abs(reduced - full).mean() < 0.005, np.abs(reduced - full).mean()


def test_one_bit_prediction_decode_is_reduced_in_grey_before_rgb():
    from core.ml.data import decode_image

    image = decode_image(one_bit_png(3000, 2000), mode="RGB", shorter_side=100)
    assert image.mode == "RGB" and image.size == (500, 334)  # factor 6: 2000 / 6 ≥ 3 × 100
    assert set(np.unique(np.asarray(image))) > {0, 255}  # box-averaged edges, not nearest-neighbour


def test_over_limit_message_names_size_and_limit():
    assert over_limit_message(20000, 20000, 100_000_000) == "image is 20000×20000 = 400 MP, over the limit of 100 MP"
    # Just over: enough digits that the two never read the same.
    assert over_limit_message(10000, 10001, 100_000_000) == "image is 10000×10001 = 100.01 MP, over the limit of 100 MP"
    assert over_limit_message(100, 100, 5000) == "image is 100×100 = 0.01 MP, over the limit of 0.005 MP"
    check_pixels(10000, 10000, 100_000_000)  # exactly at the limit is allowed
    with pytest.raises(InvalidInput, match="over the limit"):
        check_pixels(10000, 10001, 100_000_000)
