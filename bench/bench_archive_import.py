"""Benchmark: import a folder-per-class ZIP end to end (open, detect, decode, hash, thumbnail, store,
add to a dataset, label) and report images/s and the process's peak memory.

    python bench/bench_archive_import.py [--images 2000] [--classes 10] [--drawn --size 256]

The images are bench/bench_ingest.py's real photos (scikit-learn's two photographs cut into distinct
JPEGs), or with --drawn small synthetic JPEGs; beside the end-to-end rate it prints that script's
machine limit (decode + SHA-256 + pHash + thumbnail on every core, no I/O or database). Runs on a throwaway embedded stack (SQLite + local folder) in a temporary directory unless
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

from core.users import operator_user  # noqa: E402  (after the path: run as a script)

ADMIN = operator_user()  # benches act as the operator, like the CLI


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


def write_archive(path: Path, images: int, classes: int, size: int, photos: list[Path] | None) -> int:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not deflate
        for index in range(images):
            data = photos[index].read_bytes() if photos else drawn_jpeg(index, size)
            archive.writestr(f"dataset/class_{index % classes:02d}/img_{index:05d}.jpg", data)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--drawn", action="store_true", help="synthetic images instead of the real photos")
    parser.add_argument("--size", type=int, default=256, help="side of the --drawn images in pixels")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_ingest  # the image library's benchmark: same photos, same machine-limit measure

    photos = None if args.drawn else bench_ingest.make_photos(args.images)

    workdir = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    os.environ.setdefault("STORAGE_URL", f"file://{workdir / 'storage'}")
    archive = workdir / "dataset.zip"
    archive_bytes = write_archive(archive, args.images, args.classes, args.size, photos)

    from core.datasets.dataset import create_dataset
    from core.db import session_scope
    from core.imports.archive import run_archive_import
    from core.migrate import upgrade_head

    upgrade_head()
    with session_scope() as session:
        dataset_id = create_dataset(actor=ADMIN, session=session, name=f"bench {time.time():.0f}").id
    load_before = os.getloadavg()
    start = time.perf_counter()
    with bench_ingest.RssSampler() as sampler:  # this process and its decode workers, every 0.2 s
        summary = run_archive_import(actor=ADMIN, source=archive, dataset_id=dataset_id)
    elapsed = time.perf_counter() - start
    tree_peak_mb = max((mb for _, mb in sampler.samples), default=0)
    load_after = os.getloadavg()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    limit = bench_ingest.machine_limit(photos or [], os.cpu_count() or 1)[0] if photos else None
    kind = "real photos" if photos else f"drawn {args.size}x{args.size} JPEGs"
    print(f"archive: {args.images} {kind} in {args.classes} class folders, {archive_bytes / 1e6:.1f} MB")
    print(f"imported {summary['images_imported']}, labels {summary['labels_written']}, "
          f"errors {summary['error_count']} in {elapsed:.1f} s -> {summary['images_imported'] / elapsed:.1f} images/s")
    if limit:
        print(f"machine limit (bench_ingest.machine_limit, all cores): {limit:.1f} images/s -> end to end is "
              f"{summary['images_imported'] / elapsed / limit:.0%} of it")
    print(f"peak memory: this process {peak_mib:.0f} MiB (ru_maxrss), with its decode workers "
          f"{tree_peak_mb} MB (sampled RSS of the process tree)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
