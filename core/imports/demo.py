"""Demo data: the platform's source tables (products, their frames, cutouts, OD shelf images) and a
labeled dataset, all drawn by code (no downloads). Running it twice adds nothing: rows have stable
ids derived from their names and are skipped when present.
"""

from __future__ import annotations

import io
import math
import random
import uuid

from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.datasets.classes import get_or_create_class
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.datasets.label_space import _fill_from_import
from core.db import session_scope
from core.jobs.queue import enqueue
from core.labeling.labels import set_labels
from core.library.ingest import ingest_bytes
from core.models import ClsDataset, Cutout, OdImage, Product, ProductImage
from core.permissions import requires
from core.storage import Storage, get_storage
from core.users import User

DEMO_NAMESPACE = uuid.UUID("0e4bb0d4-7a3c-4d55-b1a8-0b4d7c9f3e21")
CATEGORIES = {
    "Beverages": ((200, 40, 40), "bottle"),
    "Snacks": ((230, 160, 20), "bag"),
    "Dairy": ((40, 110, 210), "carton"),
    "Bakery": ((150, 90, 40), "loaf"),
}
BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
DEMO_DATASET = "Demo product categories"


def demo_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(DEMO_NAMESPACE, "/".join(str(p) for p in parts))


def draw_product(category: str, brand: str, variant: int, angle: float, size: int = 160,
                 background: tuple[int, int, int] = (245, 245, 245)) -> Image.Image:
    """A packshot: the category's shape and color, the brand's stripe, rotated by `angle` degrees."""
    color, shape = CATEGORIES[category]
    rng = random.Random(f"{category}{brand}{variant}")
    tint = tuple(max(0, min(255, c + rng.randint(-35, 35))) for c in color)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    squeeze = abs(math.cos(math.radians(angle))) * 0.6 + 0.4  # a turning product looks narrower
    half_w = int(size * 0.28 * squeeze)
    cx, top, bottom = size // 2, int(size * 0.12), int(size * 0.9)
    if shape == "bottle":
        draw.rectangle((cx - half_w // 3, top, cx + half_w // 3, top + size // 6), fill=tint)
        draw.rounded_rectangle((cx - half_w, top + size // 6, cx + half_w, bottom), radius=12, fill=tint)
    elif shape == "bag":
        draw.polygon([(cx - half_w, top + 10), (cx + half_w, top), (cx + half_w + 6, bottom),
                      (cx - half_w - 6, bottom)], fill=tint)
    elif shape == "carton":
        draw.polygon([(cx - half_w, top + 20), (cx, top), (cx + half_w, top + 20)], fill=tint)
        draw.rectangle((cx - half_w, top + 20, cx + half_w, bottom), fill=tint)
    else:
        draw.ellipse((cx - int(half_w * 1.4), top + 30, cx + int(half_w * 1.4), bottom), fill=tint)
    stripe = BRANDS.index(brand) if brand in BRANDS else 0
    stripe_color = ((stripe * 70) % 255, (stripe * 130) % 255, (stripe * 200) % 255)
    y = top + (bottom - top) // 2
    draw.rectangle((cx - half_w + 4, y - 8, cx + half_w - 4, y + 8), fill=stripe_color)
    draw.text((cx - half_w + 6, y - 6), brand[:6], fill=(255, 255, 255), font=ImageFont.load_default())
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def _ensure_products(session: Session, storage: Storage, count: int) -> list[Product]:
    products = []
    names = list(CATEGORIES)
    for index in range(count):
        category = names[index % len(names)]
        brand = BRANDS[(index // len(names)) % len(BRANDS)]
        product_id = demo_id("product", index)
        product = session.get(Product, product_id)
        if product is None:
            product = Product(id=product_id, name=f"{brand} {category} {index + 1}", brand=brand,
                              category=category, status="matched" if index % 7 else "pending",
                              barcode=f"869{index:010d}")
            session.add(product)
            frames = [("synthetic", f, f * 36.0) for f in range(5)]
            frames += [("real", 0, 10.0), ("augmented", 0, 25.0)]
            for image_type, frame, angle in frames:
                key = f"platform/products/{product_id}/{image_type}_{frame}.png"
                background = (245, 245, 245) if image_type != "real" else (200, 205, 190)
                storage.put(key, png_bytes(draw_product(category, brand, index, angle, background=background)),
                            "image/png")
                session.add(ProductImage(id=demo_id("product_image", index, image_type, frame),
                                         product_id=product_id, image_type=image_type, frame_index=frame,
                                         storage_key=key))
        products.append(product)
    session.flush()
    return products


def _ensure_cutouts(session: Session, storage: Storage, products: list[Product]) -> int:
    created = 0
    for index, product in enumerate(products):
        cutout_id = demo_id("cutout", index)
        if session.get(Cutout, cutout_id) is not None:
            continue
        image = draw_product(product.category, product.brand, index, 15.0, size=120, background=(180, 180, 170))
        key = f"platform/cutouts/{cutout_id}.jpg"
        storage.put(key, png_bytes(image, "JPEG"), "image/jpeg")
        # Every fourth cutout is not matched to a product yet (the import skips those by default).
        matched = product.id if index % 4 else None
        session.add(Cutout(id=cutout_id, storage_key=key, matched_product_id=matched))
        created += 1
    return created


def _ensure_od_images(session: Session, storage: Storage, products: list[Product], count: int = 6) -> int:
    created = 0
    for index in range(count):
        od_id = demo_id("od", index)
        if session.get(OdImage, od_id) is not None:
            continue
        shelf = Image.new("RGB", (480, 320), (120, 95, 70))
        rng = random.Random(index)
        for slot in range(6):
            product = products[rng.randrange(len(products))]
            packshot = draw_product(product.category, product.brand, slot, rng.uniform(0, 60), size=110)
            shelf.paste(packshot, (10 + slot * 78, 20 + (slot % 2) * 150))
        key = f"platform/od/{od_id}.jpg"
        storage.put(key, png_bytes(shelf, "JPEG"), "image/jpeg")
        session.add(OdImage(id=od_id, filename=f"shelf_{index + 1}.jpg", storage_key=key, width=480, height=320,
                            folder="store-42"))
        created += 1
    return created


def _ensure_library(session: Session, storage: Storage, products: list[Product], actor: User) -> dict:
    """Classes per category and a labeled demo dataset built from the products' first frames."""
    dataset = session.scalar(select(ClsDataset).where(ClsDataset.name == DEMO_DATASET))
    if dataset is None:
        dataset = create_dataset(session=session, actor=actor, name=DEMO_DATASET, task_type="single_label",
                                 description="Packshots of the demo products, labeled by category.")
    colors = {"Beverages": "#EF4444", "Snacks": "#F59E0B", "Dairy": "#3B82F6", "Bakery": "#92400E"}
    classes = {name: get_or_create_class(session=session, actor=actor, name=name, color=colors[name])
               for name in CATEGORIES}
    _fill_from_import(session, dataset.id, [classes[name].id for name in CATEGORIES],  # the dataset's classes, in order
                     user_id=actor.id)
    imported = 0
    for index, product in enumerate(products):
        for frame in (0, 2):
            key = f"platform/products/{product.id}/synthetic_{frame}.png"
            result = ingest_bytes(session=session, actor=actor, storage=storage, data=storage.get(key),
                                  filename=f"{product.name} frame {frame}.png",
                                  source="products_import", folder="demo", tags=["demo", product.brand.lower()],
                                  source_type="product", source_id=product.id)
            if result.image_id is None:
                continue
            imported += result.status == "imported"
            add_images_to_dataset(session=session, actor=actor, dataset_id=dataset.id, image_ids=[result.image_id])
            # Leave a quarter unlabeled so the labeling queue has work.
            if index % 5 != 4:
                set_labels(session=session, actor=actor, dataset_id=dataset.id, image_id=result.image_id,
                           class_ids=[classes[product.category].id])
    return {"dataset": dataset.name, "classes": len(classes), "library_images_imported": imported}


@requires("admin", "loading demo data")
def load_demo(*, actor: User, products: int = 24, progress=None) -> dict:
    """`progress(done, total, message)`: the job's bar when loaded from the Dashboard."""
    report = progress or (lambda *args: None)
    storage = get_storage()
    report(0, 2, "drawing products, cutouts and shelf images")
    with session_scope() as session:
        before = session.scalar(select(Product.id).limit(1)) is not None
        rows = _ensure_products(session, storage, products)
        cutouts = _ensure_cutouts(session, storage, rows)
        od_images = _ensure_od_images(session, storage, rows)
    report(1, 2, "importing the demo dataset")
    with session_scope() as session:
        rows = list(session.scalars(select(Product).order_by(Product.barcode).limit(products)))
        library = _ensure_library(session, storage, rows, actor)
    report(2, 2, "done")
    return {"products": len(rows), "already_present": before, "cutouts_created": cutouts,
            "od_images_created": od_images, **library}


DEMO_JOB_KIND = "demo_data"


@requires("admin", "loading demo data")
def start_demo(*, actor: User, products: int = 24) -> uuid.UUID:
    """Load the demo data as a job (the Dashboard's one click; the same as `python -m core demo`); the
    job runs as the actor who asked (its role checked again then)."""
    return enqueue(actor=actor, kind=DEMO_JOB_KIND, params={"products": int(products)})
