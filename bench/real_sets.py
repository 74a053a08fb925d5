"""Two real image sets assembled from photos and scans that ship inside installed packages
(scikit-image's `data`, scikit-learn's sample images, matplotlib's sample data): the task is which
source image a grayscale crop comes from.

- photos: 10 everyday photos (astronaut, cameraman, coffee, cat, rocket, motorcycle, coins, Chinese
  temple, flower, Grace Hopper).
- scans: 8 textures and scientific/medical scans (brick, grass, gravel, immunohistochemistry, retina,
  Hubble deep field, moon surface, cell microscopy).

Each source is scaled so its shorter side is 300 px and cut into a 5×5 grid of blocks; blocks are
assigned to train/val/test (15/5/5) at random, and crops (half to all of a block, random place)
are taken inside one block only, so test crops never overlap a training crop: the model must
recognise content it has not seen, and flat or similar regions (sky, background, dark space) make
it a task a model gets wrong.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

GRID = 5
SPLIT_BLOCKS = {"train": 15, "val": 5, "test": 5}
SHORT_SIDE = 300


def _site(module) -> Path:
    return Path(module.__file__).parent


def sources(kind: str) -> dict[str, Path]:
    import matplotlib
    import skimage
    import sklearn

    sk, sl, mpl = _site(skimage) / "data", _site(sklearn) / "datasets" / "images", _site(matplotlib)
    if kind == "photos":
        return {"astronaut": sk / "astronaut.png", "cameraman": sk / "camera.png", "coffee": sk / "coffee.png",
                "cat": sk / "chelsea.png", "rocket": sk / "rocket.jpg", "motorcycle": sk / "motorcycle_left.png",
                "coins": sk / "coins.png", "temple": sl / "china.jpg", "flower": sl / "flower.jpg",
                "hopper": mpl / "mpl-data" / "sample_data" / "grace_hopper.jpg"}
    if kind == "scans":
        return {"brick": sk / "brick.png", "grass": sk / "grass.png", "gravel": sk / "gravel.png",
                "ihc": sk / "ihc.png", "retina": sk / "retina.jpg", "hubble": sk / "hubble_deep_field.jpg",
                "moon": sk / "moon.png", "cell": sk / "cell.png"}
    raise ValueError(f"unknown set {kind!r}: photos or scans")


def crops(kind: str, *, per_block: int = 16, size: int = 48, seed: int = 0):
    """Yield (class name, split, PNG bytes, name) for every crop of the set."""
    rng = np.random.default_rng(seed)
    for label, path in sources(kind).items():
        image = Image.open(path).convert("L")
        scale = SHORT_SIDE / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        bw, bh = image.width // GRID, image.height // GRID
        order = rng.permutation(GRID * GRID)
        splits = ["train"] * SPLIT_BLOCKS["train"] + ["val"] * SPLIT_BLOCKS["val"] + ["test"] * SPLIT_BLOCKS["test"]
        for block, split in zip(order, splits, strict=True):
            bx, by = (block % GRID) * bw, (block // GRID) * bh
            for n in range(per_block):
                side = int(rng.uniform(0.5, 1.0) * min(bw, bh))
                x = bx + int(rng.integers(0, bw - side + 1))
                y = by + int(rng.integers(0, bh - side + 1))
                crop = image.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                crop.save(buffer, "PNG")
                yield label, split, buffer.getvalue(), f"{kind}-{label}-{block}-{n}.png"
