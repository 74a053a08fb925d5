"""Near duplicates that survive crops, on real photos: pair precision/recall of the whole-image pHash
(as the library checks today: 64-bit pHash ≤ 8, confirmed by the 256-bit mid-frequency hash) against
the multi-crop hashes (core.similarity.crop_hashes), per transform.

    python bench/bench_crop_duplicates.py [--seed 1] [--crop 0.03 0.10]

Bases: the photos of bench/bench_duplicates.py (skimage, sklearn samples) cut into 3×3 overlapping
tiles of half the photo each: 180-odd distinct images, where tiles of one photo overlap (hard
non-copies). Each base gets four copies: resize to 50 %, JPEG quality 40, brightness ×0.75 or ×1.3,
and a crop of 3-10 % per side drawn independently for each side. A duplicate pair is a base and one of
its copies, or two copies of one base; every other pair is a non-duplicate. Hashes are of the decoded
image (imagehash), the same for both methods.
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

from core.library.duplicates import CONFIRM_MAX_DISTANCE  # noqa: E402
from core.library.fingerprints import confirm_distances  # noqa: E402
from core.library.hamming import pairs_within  # noqa: E402
from core.similarity.crop_hashes import (  # noqa: E402
    CROP_CONFIRM_MAX_DISTANCE,
    CROP_THRESHOLD,
    EMBEDDING_RESCUE_MAX_DISTANCE,
    crop_duplicate_pairs,
    crop_hashes,
)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2, help="seed 1 chose CROP_CONFIRM_MAX_DISTANCE")
    parser.add_argument("--crop", type=float, nargs=2, default=(0.03, 0.10))
    parser.add_argument("--embed", metavar="FAMILY/SIZE", help="also the embedding second stage with this backbone "
                        "(random weights unless --weights; no hub access here)")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--min-cosine", type=float, default=0.95)
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


if __name__ == "__main__":
    main()
