"""Object factories for tests: images drawn by code, rows made through the same storage layout."""

from __future__ import annotations

import io
import random
import uuid

from PIL import Image, ImageDraw

from core.datasets.label_space import _include_classes
from core.models import ClsClass, ClsDataset, ClsImage
from core.users import operator_user


def drawn_image_bytes(seed: int = 0, size: tuple[int, int] = (96, 96), fmt: str = "PNG") -> bytes:
    """A small image with random shapes: distinct seeds give visually distinct images."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(8, size[0]), y0 + rng.randrange(8, size[1])
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_image_row(session, storage, *, seed: int = 0, folder: str | None = None,
                   tags: list[str] | None = None) -> ClsImage:
    """A library image stored without the ingest pipeline (for tests of other features)."""
    import hashlib

    data = drawn_image_bytes(seed)
    image_id = uuid.uuid4()
    key = f"images/{image_id}.png"
    storage.put(key, data)
    row = ClsImage(id=image_id, filename=f"{image_id}.png", original_filename=f"img_{seed}.png",
                   storage_path=key, width=96, height=96, file_size_bytes=len(data), format="PNG",
                   folder=folder, tags=tags or [], file_hash=hashlib.sha256(data).hexdigest())
    session.add(row)
    session.flush()
    return row


def make_class(session, name: str, color: str = "#3B82F6") -> ClsClass:
    row = ClsClass(name=name, color=color)
    session.add(row)
    session.flush()
    return row


def add_to_space(session, dataset_id, class_ids) -> None:
    """Put classes in a dataset's label space (in this order), as an admin's Settings edit would."""
    _include_classes(session, dataset_id, list(class_ids))
    session.flush()


def make_dataset(session, name: str, task_type: str = "single_label") -> ClsDataset:
    row = ClsDataset(name=name, task_type=task_type)
    session.add(row)
    session.flush()
    return row


def near_copy_bytes(seed: int) -> bytes:
    """The drawn image of `seed` re-encoded as a JPEG: other bytes, same picture (a near duplicate)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(drawn_image_bytes(seed))).convert("RGB").save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def make_dataset_image(session, storage, dataset: ClsDataset, *, seed: int = 0, classes: list[ClsClass] = (),
                       split: str = "unassigned", near_copy: bool = False, phash: bool = False) -> ClsImage:
    """A library image added to a dataset, labeled with `classes` (label rows written directly).
    near_copy: the JPEG re-encode of the seed's image; near_copy or phash: its pHash recorded as
    ingest would."""
    from core.library.decode import image_phash
    from core.models import ClsDatasetImage, ClsLabel

    image = make_image_row(session, storage, seed=seed)
    if near_copy:
        import hashlib

        data = near_copy_bytes(seed)
        image.storage_path = f"images/{image.id}.jpg"
        storage.put(image.storage_path, data)
        image.format, image.file_size_bytes = "JPEG", len(data)
        image.file_hash, image.phash = hashlib.sha256(data).hexdigest(), image_phash(data)
    elif phash:
        image.phash = image_phash(drawn_image_bytes(seed))
    session.add(ClsDatasetImage(dataset_id=dataset.id, image_id=image.id, split=split,
                                status="labeled" if classes else "pending"))
    session.flush()
    _include_classes(session, dataset.id, [cls.id for cls in classes])  # labels' classes are in the space
    for cls in classes:
        session.add(ClsLabel(dataset_id=dataset.id, image_id=image.id, class_id=cls.id))
    session.flush()
    return image


ADMIN = operator_user()
"""Who tests act as unless a test is about roles: the operator (always admin, as the CLI)."""


def person(email: str):
    """A signed-in user (core.users.oidc_user); their role comes from ROLES / DEFAULT_ROLE."""
    from core.users import oidc_user

    return oidc_user(email)


def one_bit_png(width: int = 10_000, height: int = 9_999) -> bytes:
    """A 1-bit PNG written row by row (a diagonal band and a filled square): small on disk, width ×
    height bytes once Pillow decodes it, four times that as RGB. The issue's memory case at the default."""
    import struct
    import zlib

    import numpy as np

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, rows, band = zlib.compressobj(9), [], max(1, width // 25)
    for y in range(height):
        row = np.zeros(width, dtype=bool)
        start = y * width // height
        row[start:start + band] = True
        if height // 4 <= y < height // 2:
            row[width // 4:width // 2] = True
        rows.append(packer.compress(b"\0" + np.packbits(row).tobytes()))
    rows.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(rows)) + chunk(b"IEND", b""))
