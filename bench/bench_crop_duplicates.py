"""Near duplicates that survive crops, on real photos: pair precision/recall of the whole-image pHash
(as the library checks today: 64-bit pHash ≤ 8, confirmed by the 256-bit mid-frequency hash) against
the multi-crop hashes (core.similarity.crop_hashes), per transform.

    python bench/bench_crop_duplicates.py [--seed 1] [--crop 0.03 0.10]

Bases: the photos of bench/bench_duplicates.py (skimage, sklearn samples) cut into 3×3 overlapping
tiles of half the photo each: 180-odd distinct images, where tiles of one photo overlap (hard
non-copies). Each base gets four copies: resize to 50 %, JPEG quality 40, brightness ×0.75 or ×1.3,
and a crop of 3-10 % per side drawn independently for each side. A duplicate pair is a base and one of
its copies, or two copies of one base; every other pair is a non-duplicate. In the first table hashes
are of the decoded image, the same for both methods (the multi-crop views as
core/library/crop_hashes.py computes them).

The second table is the library as wired: every image ingested (ingest_many, PNG, into a scratch
SQLite database and local storage: hashes of each stored thumbnail, as ingest records them) and the
duplicate finder run (near_duplicate_groups at its default threshold, without and with the crop
hashes); its pairs are those its groups imply, as the Duplicates view shows them. Per transform:
recall of (base, copy) pairs, and precision of the found pairs that involve a copy of that kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_duplicates import encode, photos, tiles  # noqa: E402

from core.library.crop_hashes import (  # noqa: E402
    CROP_CONFIRM_MAX_DISTANCE,
    CROP_THRESHOLD,
    EMBEDDING_RESCUE_MAX_DISTANCE,
    crop_duplicate_pairs,
    crop_hashes,
)
from core.library.duplicates import CONFIRM_MAX_DISTANCE  # noqa: E402
from core.library.fingerprints import confirm_distances  # noqa: E402
from core.library.hamming import pairs_within  # noqa: E402

EDITS = ("resize", "jpeg", "bright", "crop")


def copies(image, rng, crop):
    import io

    from PIL import Image, ImageEnhance

    w, h = image.size
    left, top, right, bottom = rng.uniform(*crop, size=4)
    yield "resize", image.resize((w // 2, h // 2), Image.LANCZOS)
    yield "jpeg", Image.open(io.BytesIO(encode(image, "JPEG", quality=40))).convert("RGB")
    yield "bright", ImageEnhance.Brightness(image).enhance(float(rng.choice([0.75, 1.3])))
    yield "crop", image.crop((int(w * left), int(h * top), w - int(w * right), h - int(h * bottom)))


def build(seed: int, crop) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, list]:
    rng = np.random.default_rng(seed)
    group, edit, coarse, fine, images = [], [], [], [], []
    bases = [t for photo in photos().values() for t in tiles(photo)]
    for g, base in enumerate(bases):
        for name, image in [("base", base), *copies(base, rng, crop)]:
            hashes, fines = crop_hashes(image)
            group.append(g)
            edit.append(name)
            coarse.append(hashes)
            fine.append(fines)
            images.append(image)
    return np.array(group), np.array(edit), np.stack(coarse), fine, images


def report(label: str, found: set, truth: set, edit: np.ndarray) -> None:
    hit = found & truth
    precision, recall = len(hit) / max(1, len(found)), len(hit) / max(1, len(truth))
    per_edit = []
    for name in EDITS:
        wanted = {(a, b) for a, b in truth if {edit[a], edit[b]} == {"base", name}}
        per_edit.append(f"{name} {len(found & wanted) / len(wanted):.3f}")
    print(f"| {label} | {precision:.4f} | {recall:.4f} | {len(found) - len(hit)} | " + " | ".join(per_edit) + " |")


def library_pairs(images: list) -> tuple[set, set, float]:
    """(pairs found without crops, with crops, ingest seconds) by the wired library, as index pairs."""
    import io
    import tempfile

    from sqlalchemy import create_engine

    from core.config import reset_settings_cache
    from core.db import dispose_engines, session_scope
    from core.library.duplicates import near_duplicate_groups
    from core.library.ingest import ingest_many
    from core.models import Base
    from core.storage import get_storage, reset_storage_cache
    from core.users import operator_user

    workdir = Path(tempfile.mkdtemp(prefix="bench-crop-duplicates-"))
    url = f"sqlite:///{workdir / 'bench.db'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    os.environ.update(DATABASE_URL=url, STORAGE_URL=f"file://{workdir / 'storage'}")
    reset_settings_cache()
    dispose_engines()
    reset_storage_cache()
    items = []
    for k, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        items.append((f"{k:05d}.png", buffer.getvalue()))
    started = time.perf_counter()
    results = ingest_many(actor=operator_user(), items=items, skip_duplicates=False)
    ingest_s = time.perf_counter() - started
    position = {result.image_id: int(result.filename.split(".")[0]) for result in results}
    found = []
    with session_scope() as session:
        for crops in (False, True):
            groups = near_duplicate_groups(session=session, storage=get_storage(), crops=crops)
            found.append({(min(position[a], position[b]), max(position[a], position[b]))
                          for group in groups for a in group for b in group if position[a] < position[b]})
    return found[0], found[1], ingest_s


def report_per_transform(label: str, found: set, truth: set, edit: np.ndarray) -> None:
    hit = found & truth
    cells = []
    for name in EDITS:
        wanted = {(a, b) for a, b in truth if {edit[a], edit[b]} == {"base", name}}
        involving = {(a, b) for a, b in found if name in (edit[a], edit[b])}
        cells.append(f"{len(found & wanted) / len(wanted):.3f} / {len(involving & truth) / max(1, len(involving)):.3f}")
    print(f"| {label} | {len(hit) / max(1, len(found)):.4f} | {len(hit) / max(1, len(truth)):.4f} | "
          f"{len(found) - len(hit)} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2, help="seed 1 chose CROP_CONFIRM_MAX_DISTANCE")
    parser.add_argument("--crop", type=float, nargs=2, default=(0.03, 0.10))
    parser.add_argument("--embed", metavar="FAMILY/SIZE", help="also the embedding second stage with this backbone "
                        "(random weights unless --weights; no hub access here)")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--min-cosine", type=float, default=0.95)
    parser.add_argument("--no-library", action="store_true", help="skip the wired library run (ingest + finder)")
    args = parser.parse_args()
    started = time.perf_counter()
    group, edit, coarse, fine, images = build(args.seed, tuple(args.crop))
    n = len(group)
    upper_i, upper_j = np.triu_indices(n, 1)
    same = group[upper_i] == group[upper_j]
    truth = set(zip(upper_i[same].tolist(), upper_j[same].tolist(), strict=True))
    print(f"# {n} images ({len(set(group.tolist()))} bases × 5), {len(truth)} duplicate pairs, "
          f"{n * (n - 1) // 2 - len(truth):,} non-duplicate pairs; crops {args.crop[0]:.0%}-{args.crop[1]:.0%} per "
          f"side; seed {args.seed}; built in {time.perf_counter() - started:.0f} s; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| method | pair precision | pair recall | false pairs | recall: " + " | ".join(EDITS) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in EDITS) + " |")
    full = coarse[:, 0]
    pi, pj, _ = pairs_within(full, 8)
    keep = confirm_distances([fine[k][0] for k in pi], [fine[k][0] for k in pj]) <= CONFIRM_MAX_DISTANCE
    before = set(zip(pi[keep].tolist(), pj[keep].tolist(), strict=True))
    report(f"before: whole-image pHash ≤ 8 + confirm ≤ {CONFIRM_MAX_DISTANCE}", before, truth, edit)
    report(f"after: multi-crop pHash ≤ {CROP_THRESHOLD} + confirm ≤ {CONFIRM_MAX_DISTANCE} "
           f"(view pairs ≤ {CROP_CONFIRM_MAX_DISTANCE})", crop_duplicate_pairs(coarse, fine), truth, edit)
    if args.embed:
        from core.similarity.embedder import Embedder, backbone

        embedder = Embedder(*backbone(*args.embed.split("/"), weights=args.weights))
        vectors = np.concatenate([embedder.embed(images[k:k + 32]) for k in range(0, len(images), 32)])
        found = crop_duplicate_pairs(coarse, fine, embeddings=vectors, min_cosine=args.min_cosine)
        report(f"after + {args.embed} ({args.weights} weights) cosine ≥ {args.min_cosine} for view pairs ≤ "
               f"{EMBEDDING_RESCUE_MAX_DISTANCE}", found, truth, edit)
    if not args.no_library:
        without, with_crops, ingest_s = library_pairs(images)
        print(f"\n# the library as wired: {n} images ingested in {ingest_s:.0f} s ({n / ingest_s:.1f}/s), duplicate "
              f"finder at its defaults; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print("| library | pair precision | pair recall | false pairs | " + " | ".join(
            f"{name}: recall / precision" for name in EDITS) + " |")
        print("| --- | --- | --- | --- | " + " | ".join("---" for _ in EDITS) + " |")
        report_per_transform("near_duplicate_groups(crops=False)", without, truth, edit)
        report_per_transform("near_duplicate_groups (crops: stored sub-crop hashes)", with_crops, truth, edit)


if __name__ == "__main__":
    main()
