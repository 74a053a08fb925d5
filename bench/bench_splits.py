"""Auto-split speed on synthetic units (no database): the stratification and minimum steps alone.

Usage: python bench/bench_splits.py [N ...]   prints seconds per N images (20 classes, 10% multi-label).
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.datasets.splits import DEFAULT_RATIOS, _split_units, _Unit  # noqa: E402


def units(n: int, classes: int = 20, seed: int = 0) -> list[_Unit]:
    rng = random.Random(seed)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(classes)]
    out = []
    for _ in range(n):
        labels = {ids[min(int(rng.expovariate(0.25)), classes - 1)]}
        if rng.random() < 0.1:
            labels.add(rng.choice(ids))
        out.append(_Unit(image_ids=[uuid.uuid4()], class_ids=labels))
    return out


if __name__ == "__main__":
    print("load:", os.getloadavg())
    _split_units(units(100), DEFAULT_RATIOS, seed=0, min_per_class=1)  # imports sklearn/iterstrat
    for n in [int(a) for a in sys.argv[1:]] or [1000, 10000, 50000]:
        batch = units(n)
        start = time.perf_counter()
        _split_units(batch, DEFAULT_RATIOS, seed=0, min_per_class=1)
        print(f"{n} images, 20 classes: auto-split {time.perf_counter() - start:.2f} s")
