"""Real images for training tests and the benchmark: scikit-learn's digits (1,797 real 8×8 scans of
handwritten digits, 10 classes), upscaled, stored as PNGs and made into a dataset version through the
platform's own services (library rows → dataset → labels → version)."""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
from PIL import Image

from core.models import ClsImage
from tests.factories import ADMIN


def digit_png(pixels: np.ndarray, size: int) -> bytes:
    """An 8×8 digit (values 0–16) as a size×size grayscale PNG."""
    image = Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8), "L")
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


def digits(classes: int = 10, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = []
    for label in range(classes):
        indices = np.flatnonzero(bunch.target == label)
        keep.extend(indices[:per_class] if per_class else indices)
    keep = np.array(sorted(keep))
    return bunch.data[keep], bunch.target[keep]


def make_digits_version(session, storage, *, name: str = "digits", classes: int = 10, per_class: int | None = None,
                        size: int = 32, split_fractions=(0.6, 0.2, 0.2), multi_label: bool = False, seed: int = 0):
    """A dataset of digit images with a deterministic stratified split, and its first version.
    multi_label: each image also gets the label 'even'/'odd' (a real second attribute)."""
    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.datasets.label_space import _include_classes
    from core.datasets.versions import create_version
    from core.labeling.labels import set_labels

    data, target = digits(classes, per_class)
    dataset = create_dataset(actor=ADMIN, session=session, name=name, task_type="multi_label" if multi_label else "single_label")
    class_ids = {label: create_class(actor=ADMIN, session=session, name=f"{name}-{label}").id for label in range(classes)}
    if multi_label:
        class_ids["even"] = create_class(actor=ADMIN, session=session, name=f"{name}-even").id
        class_ids["odd"] = create_class(actor=ADMIN, session=session, name=f"{name}-odd").id
    # the dataset's classes in this order: the digits 0…, then even and odd (the version's indices)
    _include_classes(session, dataset.id, list(class_ids.values()))
    rng = np.random.default_rng(seed)
    for label in range(classes):
        indices = rng.permutation(np.flatnonzero(target == label))
        cut1 = int(len(indices) * split_fractions[0])
        cut2 = cut1 + max(1, int(len(indices) * split_fractions[1]))
        for position, index in enumerate(indices):
            split = "train" if position < cut1 else "val" if position < cut2 else "test"
            # ids from the dataset and the digit, not uuid4: the manifest (ordered by id), and so the
            # folds and batches built from it, are the same on every run
            image_id = store_image(session, storage, digit_png(data[index], size), f"digit_{index}.png",
                                   image_id=uuid.uuid5(uuid.NAMESPACE_URL, f"digits/{name}/{seed}/{index}"))
            add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=[image_id], split=split)
            labels = [class_ids[label]] + ([class_ids["even" if label % 2 == 0 else "odd"]] if multi_label else [])
            set_labels(actor=ADMIN, session=session, dataset_id=dataset.id, image_id=image_id, class_ids=labels)
    return create_version(actor=ADMIN, session=session, storage=storage, dataset_id=dataset.id)


def store_image(session, storage, data: bytes, filename: str, image_id: uuid.UUID | None = None) -> uuid.UUID:
    image_id = image_id or uuid.uuid4()
    key = f"images/{image_id}.png"
    storage.put(key, data)
    session.add(ClsImage(id=image_id, filename=f"{image_id}.png", original_filename=filename, storage_path=key,
                         width=None, height=None, file_size_bytes=len(data), format="PNG",
                         file_hash=hashlib.sha256(data).hexdigest()))
    session.flush()
    return image_id
