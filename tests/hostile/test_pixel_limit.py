"""Issue 14, pixel limit: the documented MAX_IMAGE_PIXELS (not Pillow's own 200 MP guard) refuses an
image from its header, before any pixel is decoded, at every decode (ingest and URL import, prediction
and Grad-CAM's preprocess, training reads); in a batch only that file is reported; and a 1-bit
10000×9999 PNG under the limit (the issue's ~570 MB case) decodes in bounded memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFile

from core.errors import InvalidInput
from tests.factories import ADMIN, drawn_image_bytes, one_bit_png
from tests.hostile.tally import TALLY
from tests.test_images import assert_consistent, png_header_only

ROOT = Path(__file__).resolve().parents[2]


def gif_header_only(width: int, height: int) -> bytes:
    """A GIF whose screen and one frame claim width×height, with one pixel of data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + frame + b"\x02\x02\x44\x01\x00;"


# Each: the bytes, and the message expected (the header's size against the 100 MP default).
OVER_LIMIT = {
    "png_20000x20000": (png_header_only(20000, 20000), "image is 20000×20000 = 400 MP, over the limit of 100 MP"),
    "png_one_row_over": (png_header_only(10000, 10001), "image is 10000×10001 = 100.01 MP, over the limit of 100 MP"),
    "png_150_mp": (png_header_only(15000, 10000), "image is 15000×10000 = 150 MP, over the limit of 100 MP"),
    # GIF's own opener checks Pillow's guard again while reading the header: no size to name then.
    "gif_20000x20000": (gif_header_only(20000, 20000), "over the limit of 100 MP"),
}


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails a test in which pixels of an image over the 100 MP default are decoded (ImageFile.load)."""
    original = ImageFile.ImageFile.load

    def load(self):
        assert self.size[0] * self.size[1] <= 100_000_000, f"decoded pixels of a {self.size} image"
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def tiny_predictor():
    import torch

    from core.ml.inference import Predictor

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()
    preprocessing = {"size": 32, "in_chans": 3, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
                     "crop_pct": 1.0}
    return Predictor(preprocessing=preprocessing, class_names=["a", "b"], multi_label=False, torch_model=model)


@pytest.mark.parametrize("case", sorted(OVER_LIMIT))
def test_every_decoder_refuses_from_the_header(no_decoding, case):
    from core.library.decode import decode_image as ingest_decode
    from core.ml.data import decode_image as model_decode

    data, message = OVER_LIMIT[case]
    with pytest.raises(InvalidInput, match=message) as ingest:
        ingest_decode(data, max_pixels=100_000_000)
    with pytest.raises(InvalidInput, match=message) as model:
        model_decode(data, mode="RGB", name="upload.png", shorter_side=256)
    with pytest.raises(InvalidInput, match=message):
        model_decode(data, mode="L", name="stored")  # label-error features and export samples: no reduction
    TALLY.tried += 3
    assert "\n" not in str(ingest.value) and str(model.value).startswith("upload.png: ")


def test_one_over_limit_file_in_an_ingest_batch_is_reported_alone(stack, no_decoding):
    from core.library.ingest import ingest_many

    bad = [(f"{case}.png", data) for case, (data, _message) in sorted(OVER_LIMIT.items())]
    good = [(f"good_{seed}.png", drawn_image_bytes(seed)) for seed in range(3)] + [("one_bit.png", one_bit_png(900, 700))]
    results = ingest_many(actor=ADMIN, items=good[:2] + bad + good[2:], storage=stack.storage, workers=1)
    TALLY.tried += len(results)
    by_name = {r.filename: r for r in results}
    for name, _data in bad:
        assert by_name[name].status == "rejected" and OVER_LIMIT[name[:-4]][1] in by_name[name].error
    lost = [name for name, _data in good if by_name[name].status != "imported"]
    TALLY.lost += lost
    assert not lost
    assert assert_consistent(stack) == len(good)


class _Images(BaseHTTPRequestHandler):
    bodies = {"/huge.png": OVER_LIMIT["png_20000x20000"][0], "/fine.png": drawn_image_bytes(40)}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.bodies[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_url_import_refuses_the_over_limit_image_and_keeps_the_other(embedded_stack, no_decoding):
    from core.imports.urls import import_urls

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        summary = import_urls(actor=ADMIN, urls=[f"{base}/huge.png", f"{base}/fine.png"], allow_list=["127.0.0.1"],
                              timeout_s=5)
    finally:
        httpd.shutdown()
    TALLY.tried += 2
    huge, fine = summary["results"]
    assert huge["status"] == "rejected" and OVER_LIMIT["png_20000x20000"][1] in huge["error"]
    assert fine["status"] == "imported"
    assert assert_consistent(embedded_stack) == 1


def test_prediction_reports_the_over_limit_item_and_predicts_the_rest(no_decoding):
    from core.prediction.predict import Item, probabilities

    items = [Item("a.png", drawn_image_bytes(1)), Item("huge.png", OVER_LIMIT["png_20000x20000"][0]),
             Item("one_bit.png", one_bit_png(900, 700)), Item("gif.gif", OVER_LIMIT["gif_20000x20000"][0])]
    probs, errors = probabilities(tiny_predictor(), items)
    TALLY.tried += len(items)
    assert errors[1] == OVER_LIMIT["png_20000x20000"][1] and "over the limit of 100 MP" in errors[3]
    assert errors[0] is None and errors[2] is None
    assert np.isfinite(probs[[0, 2]]).all() and np.isnan(probs[[1, 3]]).all()


def test_the_configured_limit_is_the_one_enforced(monkeypatch):
    """MAX_IMAGE_PIXELS from the environment, not Pillow's default, at prediction as at ingest."""
    from core.config import reset_settings_cache
    from core.prediction.predict import Item, probabilities

    monkeypatch.setenv("MAX_IMAGE_PIXELS", "5000")
    reset_settings_cache()
    try:
        _probs, errors = probabilities(tiny_predictor(), [Item("small.png", drawn_image_bytes(2, (100, 100))),
                                                          Item("smaller.png", drawn_image_bytes(3, (70, 70)))])
    finally:
        monkeypatch.delenv("MAX_IMAGE_PIXELS")
        reset_settings_cache()
    TALLY.tried += 2
    assert errors == ["image is 100×100 = 0.01 MP, over the limit of 0.005 MP", None]


PEAK_CHILD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.factories import drawn_image_bytes
from tests.hostile.test_pixel_limit import tiny_predictor
from core.library.decode import decode_image
predictor = tiny_predictor()
decoders = {{"ingest": lambda data: decode_image(data, max_pixels=100_000_000),
             "predict": lambda data: predictor.preprocess([data])}}
peaks = {{}}
for name in sys.argv[2:]:
    decoders[name](drawn_image_bytes(1, (600, 400)))  # lazy imports and plugins before the baseline
data = Path(sys.argv[1]).read_bytes()
for name in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    decoders[name](data)
    peaks[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(peaks))
"""


@pytest.mark.parametrize("path", ["ingest", "predict"])
def test_one_bit_10000x9999_png_decodes_in_bounded_memory(tmp_path, path):
    """Peak RSS growth of one decode in a fresh process (ru_maxrss is a process-wide high-water mark).
    The old path converted to full-size RGB first: ~480 MB ingest, ~570 MB prediction; now ~100 MB,
    the decoded 1-byte-per-pixel image itself (bench/bench_pixel_memory.py)."""
    file = tmp_path / "one_bit.png"
    file.write_bytes(one_bit_png(10_000, 9_999))
    assert file.stat().st_size < 100_000
    run = subprocess.run([sys.executable, "-c", PEAK_CHILD.format(root=str(ROOT)), str(file), path],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    peak = json.loads(run.stdout.strip().splitlines()[-1])[path]
    TALLY.tried += 1
    assert peak < 300, f"{path}: peak RSS grew {peak:.0f} MB decoding a 1-bit 10000×9999 PNG"
