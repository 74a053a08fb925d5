"""Peak memory of decoding one large, tiny-on-disk image: the 1-bit 10000×9999 PNG of issue 14 (~37 KB
here with a band and a square drawn; the issue's blank one is 12 KB), under the 100 MP limit.

    python bench/bench_pixel_memory.py [--width 10000] [--height 9999]

Each path runs in its own fresh process; the figure is the growth of its peak RSS (ru_maxrss) over
the same process after imports and a small warm-up decode, so it is the decode alone:
  ingest       core.library.decode.decode_image (what every import's worker runs: thumbnail, pHash, 256-bit hash)
  predict      core.ml.inference.Predictor.preprocess (prediction and Grad-CAM decode), 224 px model
  full_rgb     reference: Pillow's plain open → convert("RGB") → thumbnail, the shape of the old path
The issue measured ~570 MB for the old ingest path. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("ingest", "predict", "full_rgb")
PREPROCESSING = {"size": 224, "in_chans": 3, "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225], "crop_pct": 0.875}


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def decoder(path: str):
    """The decode of one named path, warmed up on a small image (lazy imports, plugin registration)."""
    from tests.factories import drawn_image_bytes

    if path == "ingest":
        from core.library.decode import decode_image

        def run(data: bytes):
            return decode_image(data, max_pixels=100_000_000)
    elif path == "predict":
        from core.ml.inference import Predictor

        # preprocess never calls the model: any object stands in for one.
        predictor = Predictor(preprocessing=PREPROCESSING, class_names=["a", "b"], multi_label=False,
                              torch_model=object())

        def run(data: bytes):
            return predictor.preprocess([data])
    else:
        import io

        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None

        def run(data: bytes):
            with Image.open(io.BytesIO(data)) as image:
                shown = image.convert("RGB")
                shown.thumbnail((256, 256), Image.Resampling.BILINEAR, reducing_gap=2.0)
                return shown
    run(drawn_image_bytes(1, (600, 400)))
    return run


def child(path: str, file: str) -> None:
    run = decoder(path)
    data = Path(file).read_bytes()
    before, started = peak_kib(), time.perf_counter()
    run(data)
    print(json.dumps({"path": path, "peak_growth_mb": round((peak_kib() - before) / 1024, 1),
                      "seconds": round(time.perf_counter() - started, 2), "rss_before_mb": round(before / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=10_000)
    parser.add_argument("--height", type=int, default=9_999)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from tests.factories import one_bit_png

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "one_bit.png"
        file.write_bytes(one_bit_png(args.width, args.height))
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", path, str(file)], check=True,
                                          capture_output=True, text=True, cwd=ROOT).stdout)
                for path in PATHS]
        print(json.dumps({"image": {"width": args.width, "height": args.height, "mode": "1",
                                    "png_bytes": file.stat().st_size},
                          "issue_old_ingest_peak_mb": 570, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
