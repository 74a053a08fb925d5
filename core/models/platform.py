"""The platform's own source tables the imports read (products, their frames, cutouts, OD images); in a real deployment these already exist, here the migrations create them and the demo fills them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, in_values, utcnow
from core.vocabulary import PRODUCT_IMAGE_TYPES


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("idx_products_category", "category"),
        Index("idx_products_brand", "brand"),
        Index("idx_products_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    brand: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="matched", server_default="matched")
    barcode: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    images: Mapped[list[ProductImage]] = relationship(back_populates="product")


class ProductImage(Base):
    __tablename__ = "product_images"
    __table_args__ = (
        CheckConstraint(in_values("image_type", PRODUCT_IMAGE_TYPES), name="image_type"),
        Index("idx_product_images_product", "product_id", "image_type", "frame_index"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    product_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("products.id", ondelete="CASCADE"))
    image_type: Mapped[str] = mapped_column(String(16))
    frame_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    product: Mapped[Product] = relationship(back_populates="images")


class Cutout(Base):
    __tablename__ = "cutouts"
    __table_args__ = (Index("idx_cutouts_matched_product", "matched_product_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    storage_key: Mapped[str] = mapped_column(Text)
    matched_product_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class OdImage(Base):
    __tablename__ = "od_images"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    filename: Mapped[str] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    folder: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
