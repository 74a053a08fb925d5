"""Short reservations that keep labelers apart: a labeling page holds the image it shows *and* the ones
it prefetched (its window), so another labeler's queue never offers them and a guess typed ahead in
the browser is never taken away mid-stride.

A reservation is a lease on the `cls_dataset_images` row (`reserved_by` = the page's holder id,
`reserved_until`). Each action renews the page's window; between actions the page's heartbeat renews
it every HEARTBEAT_S while the labeler is active. A closed tab stops beating and an idle one (no key,
click or pointer move for IDLE_S, or hidden) stops renewing, so its images return to the queue at most
IDLE_S + LEASE_S (one minute) after the labeler's last move. Leaving the page releases them at once.

The functions here are the lease primitives; pages reach them only through core.labeling.queue's declared
services (reserve, release, hold_window, next_image…: a labeler's), so a viewer never holds images.
Claims are single conditional UPDATEs ("free, expired, or already mine"), so two pages racing for an
image cannot both win (proven on Postgres in tests/test_reservations.py). Reservations are not data
writes: they never bump a dataset's revision.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.models import ClsDatasetImage, utcnow

LEASE_S = 30
"""Seconds a page's reservations last without renewal (every action and heartbeat renews them)."""

HEARTBEAT_S = 10
"""Seconds between a labeling page's heartbeats (sent by the browser while the page is open)."""

IDLE_S = 30
"""Seconds without a key, click or pointer move (or with the tab hidden) after which heartbeats stop
renewing: an idle tab's images return to the queue within IDLE_S + LEASE_S."""


def unreserved(holder: uuid.UUID | None, now: datetime):
    """SQL: the row is free, its lease ran out, or `holder` holds it."""
    free = or_(ClsDatasetImage.reserved_by.is_(None), ClsDatasetImage.reserved_until < now)
    return or_(free, ClsDatasetImage.reserved_by == holder) if holder else free


def held_by_others(holder: uuid.UUID | None, now: datetime):
    """SQL: another page holds the row now."""
    condition = (ClsDatasetImage.reserved_by.is_not(None)) & (ClsDatasetImage.reserved_until >= now)
    return condition & (ClsDatasetImage.reserved_by != holder) if holder else condition


def claim(*, session: Session, dataset_id: uuid.UUID, image_ids: list[uuid.UUID], holder: uuid.UUID,
          ttl_s: int = LEASE_S, now: datetime | None = None) -> set[uuid.UUID]:
    """Claim (or renew) these images for one page where no other page holds them; returns the ids
    this page holds afterwards."""
    if not image_ids:
        return set()
    now = now or utcnow()
    session.execute(
        update(ClsDatasetImage)
        .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(image_ids),
               unreserved(holder, now))
        .values(reserved_by=holder, reserved_until=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(select(ClsDatasetImage.image_id).where(
        ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id.in_(image_ids),
        ClsDatasetImage.reserved_by == holder)))


def reserve(*, session: Session, dataset_id: uuid.UUID, image_id: uuid.UUID, holder: uuid.UUID,
            ttl_s: int = LEASE_S, now: datetime | None = None) -> bool:
    """Claim one image unless another page holds it; True when this page holds it now."""
    now = now or utcnow()
    result = session.execute(
        update(ClsDatasetImage)
        .where(ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id,
               unreserved(holder, now))
        .values(reserved_by=holder, reserved_until=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release(*, session: Session, dataset_id: uuid.UUID | None, holder: uuid.UUID,
            keep: tuple[uuid.UUID, ...] | list[uuid.UUID] = ()) -> int:
    """Let go of the images this page holds (in one dataset, or in every one), except `keep`."""
    conditions = [ClsDatasetImage.reserved_by == holder]
    if dataset_id is not None:
        conditions.append(ClsDatasetImage.dataset_id == dataset_id)
    if keep:
        conditions.append(ClsDatasetImage.image_id.not_in(list(keep)))
    result = session.execute(
        update(ClsDatasetImage).where(*conditions).values(reserved_by=None, reserved_until=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def holder_of(*, session: Session, dataset_id: uuid.UUID, image_id: uuid.UUID,
              now: datetime | None = None) -> uuid.UUID | None:
    """The page that holds the image now (None: free or expired)."""
    now = now or utcnow()
    return session.scalar(select(ClsDatasetImage.reserved_by).where(
        ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id,
        held_by_others(None, now)))


def count_held_by_others(session: Session, dataset_id: uuid.UUID, holder: uuid.UUID | None, conditions,
                         now: datetime) -> int:
    """How many rows matching `conditions` other pages hold now."""
    return session.scalar(select(func.count()).select_from(ClsDatasetImage).where(
        ClsDatasetImage.dataset_id == dataset_id, *conditions, held_by_others(holder, now))) or 0
