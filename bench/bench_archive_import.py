"""Benchmark: import a folder-per-class ZIP end to end (open, detect, decode, hash, thumbnail, store,
add to a dataset, label) and report images/s and the process's peak memory.

    python bench/bench_archive_import.py [--images 2000] [--classes 10] [--size 256]

Runs on a throwaway embedded stack (SQLite + local folder) in a temporary directory unless
DATABASE_URL / STORAGE_URL are set. The archive is written to disk one image at a time, so the peak
memory printed is the import's own (ru_maxrss of this process). Prints the machine load beside it.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def drawn_jpeg(seed: int, size: int) -> bytes:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.randrange(size), rng.randrange(size)
        draw.ellipse((x0, y0, x0 + rng.randrange(8, size), y0 + rng.randrange(8, size)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_archive(path: Path, images: int, classes: int, size: int) -> int:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not deflate
        for index in range(images):
            archive.writestr(f"dataset/class_{index % classes:02d}/img_{index:05d}.jpg", drawn_jpeg(index, size))
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    os.environ.setdefault("STORAGE_URL", f"file://{workdir / 'storage'}")
    archive = workdir / "dataset.zip"
    archive_bytes = write_archive(archive, args.images, args.classes, args.size)

    from core.archive_import import run_archive_import
    from core.datasets import create_dataset
    from core.db import session_scope
    from core.migrate import upgrade_head

    upgrade_head()
    with session_scope() as session:
        dataset_id = create_dataset(session=session, name=f"bench {time.time():.0f}").id
    load_before = os.getloadavg()
    start = time.perf_counter()
    summary = run_archive_import(source=archive, dataset_id=dataset_id)
    elapsed = time.perf_counter() - start
    load_after = os.getloadavg()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"archive: {args.images} images of {args.size}x{args.size} JPEG in {args.classes} class folders, "
          f"{archive_bytes / 1e6:.1f} MB")
    print(f"imported {summary['images_imported']}, labels {summary['labels_written']}, "
          f"errors {summary['error_count']} in {elapsed:.1f} s -> {summary['images_imported'] / elapsed:.1f} images/s")
    print(f"peak memory (ru_maxrss): {peak_mib:.0f} MiB")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
