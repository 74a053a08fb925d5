"""What a labeling page does (labeler role): hold the image it shows and its prefetched window, move to
the next or a chosen image, pin classes, and save, skip, clear or accept a review at the revision it
showed (a stale save is refused, never merged). Label writes go through core.labeling.labels."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select

from core.datasets.label_space import KEYED_CLASSES, ClassKey, keyed_classes, space_class_ids
from core.errors import Conflict, InvalidInput
from core.labeling import labels, reservations
from core.labeling.queue import (
    LOW_CONFIDENCE,
    RESERVATION_S,
    ActionResult,
    ImageCard,
    image_card,
    labeling_dataset,
    queue_ids,
)
from core.models import ClsClass, ClsDatasetImage, ClsLabelingPin, utcnow
from core.permissions import requires
from core.users import User


@requires("labeler", "reserving images to label")
def reserve(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID, holder: uuid.UUID,
            ttl_s: int = RESERVATION_S, now: datetime | None = None) -> bool:
    """Claim an image for one labeling page unless another page holds it; True when claimed."""
    return reservations.reserve(session=session, dataset_id=dataset_id, image_id=image_id, holder=holder,
                                ttl_s=ttl_s, now=now)


@requires("labeler", "reserving images to label")
def release(*, session, actor: User, dataset_id: uuid.UUID, holder: uuid.UUID,
            keep: tuple[uuid.UUID, ...] | list[uuid.UUID] = ()) -> int:
    """Let go of every image this page holds in the dataset (except `keep`)."""
    return reservations.release(session=session, dataset_id=dataset_id, holder=holder, keep=keep)


@requires("labeler", "reserving images to label")
def hold_window(*, session, actor: User, dataset_id: uuid.UUID, image_ids: list[uuid.UUID],
                holder: uuid.UUID) -> set[uuid.UUID]:
    """Claim again (or renew) a page's window where no other page holds it; the ids it holds now."""
    return reservations.claim(session=session, dataset_id=dataset_id, image_ids=image_ids, holder=holder)


@requires("labeler", "reserving images to label")
def next_image(*, session, actor: User, dataset_id: uuid.UUID, mode: str, holder: uuid.UUID,
               after: uuid.UUID | None = None, seed: int = 0, threshold: float = LOW_CONFIDENCE,
               exclude: tuple[uuid.UUID, ...] = (), now: datetime | None = None) -> uuid.UUID | None:
    """The next image of the queue, reserved for this page; None when the queue is empty."""
    return next_image_and_upcoming(session=session, actor=actor, dataset_id=dataset_id, mode=mode, holder=holder,
                                   after=after,
                                   seed=seed, threshold=threshold, exclude=exclude, now=now)[0]


@requires("labeler", "reserving images to label")
def next_image_and_upcoming(*, session, actor: User, dataset_id: uuid.UUID, mode: str, holder: uuid.UUID,
                            after: uuid.UUID | None = None, seed: int = 0, threshold: float = LOW_CONFIDENCE,
                            exclude: tuple[uuid.UUID, ...] = (), now: datetime | None = None,
                            lookahead: int = 3) -> tuple[uuid.UUID | None, list[uuid.UUID]]:
    """next_image, plus the images after it that the page prefetches: all of them reserved for this
    page (its window), so no other labeler receives them while the browser may show them next. The
    page's other reservations in the dataset end here."""
    now = now or utcnow()
    for _attempt in range(5):  # another page may claim a candidate between our read and our claim
        candidates = queue_ids(session=session, dataset_id=dataset_id, mode=mode, after=after, holder=holder,
                               limit=lookahead + 1, seed=seed, threshold=threshold, exclude=exclude, now=now)
        if not candidates:
            reservations.release(session=session, dataset_id=dataset_id, holder=holder)
            return None, []
        held = reservations.claim(session=session, dataset_id=dataset_id, image_ids=candidates, holder=holder,
                                  now=now)
        if mode == "all":  # browsing everything: a held image is shown too (saves still check revisions)
            reservations.release(session=session, dataset_id=dataset_id, holder=holder, keep=list(held))
            return candidates[0], candidates[1:]
        window = [image_id for image_id in candidates if image_id in held]
        if window:
            reservations.release(session=session, dataset_id=dataset_id, holder=holder, keep=window)
            return window[0], window[1:]
        exclude = (*exclude, *candidates)
    return None, []


@requires("labeler", "reserving images to label")
def open_image(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID, holder: uuid.UUID,
               reserved: bool = False, now: datetime | None = None) -> ImageCard:
    """Show a chosen image (URL, ←/→ history): reserve it when free, release the page's others
    (`reserved`: next_image already reserved the window)."""
    card = image_card(session=session, dataset_id=dataset_id, image_id=image_id)
    if not reserved and reservations.reserve(session=session, dataset_id=dataset_id, image_id=image_id,
                                             holder=holder, now=now):
        reservations.release(session=session, dataset_id=dataset_id, holder=holder, keep=[image_id])
    return card


def classes_for_labeling(*, session, dataset_id: uuid.UUID, user_id: uuid.UUID) -> list[ClassKey]:
    """The dataset's label space in this user's key order (core.datasets.label_space.keyed_classes): the same
    keys as the dataset grid and the bulk actions."""
    return keyed_classes(session=session, dataset_id=dataset_id, user_id=user_id)


@requires("labeler", "pinning classes")
def set_pins(*, session, actor: User, dataset_id: uuid.UUID, class_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Pin up to ten classes of the dataset's label space (in key order) for the actor on one dataset:
    they take keys 1, 2, … wherever this user labels this dataset (grid, Labeling, bulk actions)."""
    labeling_dataset(session, dataset_id)
    unique = list(dict.fromkeys(class_ids))
    if len(unique) > KEYED_CLASSES:
        raise InvalidInput(f"pin at most {KEYED_CLASSES} classes (keys 1–9 and 0); got {len(unique)}")
    space = set(space_class_ids(session, dataset_id))
    known = set(session.scalars(select(ClsClass.id).where(ClsClass.id.in_(unique), ClsClass.is_active.is_(True))))
    missing = [str(class_id) for class_id in unique if class_id not in known or class_id not in space]
    if missing:
        raise InvalidInput(f"cannot pin class(es) outside this dataset's classes or inactive: {', '.join(missing)}")
    row = session.scalar(select(ClsLabelingPin).where(ClsLabelingPin.user_id == actor.id,
                                                      ClsLabelingPin.dataset_id == dataset_id))
    if row is None:
        row = ClsLabelingPin(user_id=actor.id, dataset_id=dataset_id)
        session.add(row)
    row.class_ids = [str(class_id) for class_id in unique]
    session.flush()
    return unique


@requires("labeler", "labeling")
def save(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID, class_ids: list[uuid.UUID],
         shown_revision: int, shown: ImageCard | None = None) -> ActionResult:
    """Save & next for the image the page showed at `shown_revision`.

    Same labels as stored → nothing written ("unchanged"), so a repeated press never writes twice.
    Labelers and admins only.
    Unreviewed AI labels saved as they are → accepted (marked reviewed). A different label that
    someone saved since the page loaded → "conflict" with the new label; nothing overwritten."""
    if not class_ids:
        raise InvalidInput("pick a class first (number keys or the class list)")
    task_type = labeling_dataset(session, dataset_id).task_type
    if task_type == "single_label" and len(set(class_ids)) > 1:
        raise InvalidInput("this dataset is single-label: pick one class")
    # `shown`: the card the page rendered at shown_revision spares a read; set_labels still checks
    # the revision under the row lock, so a stale card can only cost a conflict, never an overwrite.
    fresh = shown is None or shown.label_revision != shown_revision or shown.image_id != image_id
    card = image_card(session=session, dataset_id=dataset_id, image_id=image_id) if fresh else shown
    if not fresh and set(card.class_ids) == set(class_ids) and _revision(session, dataset_id, image_id) != shown_revision:
        return _conflict(image_card(session=session, dataset_id=dataset_id, image_id=image_id))
    if set(card.class_ids) == set(class_ids):
        if card.awaiting_review:
            labels.mark_reviewed(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id)
            return ActionResult("reviewed", image_card(session=session, dataset_id=dataset_id, image_id=image_id))
        return ActionResult("unchanged", card)
    if card.label_revision != shown_revision:
        return _conflict(card)
    reason = "review" if card.awaiting_review else "manual"
    try:
        labels.set_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id,
                          class_ids=list(class_ids), expected_revision=shown_revision, reason=reason)
    except Conflict:
        return _conflict(image_card(session=session, dataset_id=dataset_id, image_id=image_id))
    if not fresh:  # the page moves on; the shown card is not read again
        return ActionResult("saved", card)
    return ActionResult("saved", image_card(session=session, dataset_id=dataset_id, image_id=image_id))


def _revision(session, dataset_id: uuid.UUID, image_id: uuid.UUID) -> int | None:
    return session.scalar(select(ClsDatasetImage.label_revision).where(
        ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.image_id == image_id))


def _conflict(card: ImageCard) -> ActionResult:
    names = ", ".join(label.class_name for label in card.labels) or "no label"
    return ActionResult("conflict", card, f"Someone else changed this image's label to: {names}. "
                                          "It is shown now; press Enter again to replace it.")


@requires("labeler", "skipping images")
def skip(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID) -> ActionResult:
    card = image_card(session=session, dataset_id=dataset_id, image_id=image_id)
    if card.status != "skipped" and not card.labels:
        labels.skip_image(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id)
        card = image_card(session=session, dataset_id=dataset_id, image_id=image_id)
    return ActionResult("skipped", card)


@requires("labeler", "clearing labels")
def clear(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID, shown_revision: int) -> ActionResult:
    card = image_card(session=session, dataset_id=dataset_id, image_id=image_id)
    if not card.labels:
        return ActionResult("unchanged", card)
    if card.label_revision != shown_revision:
        return _conflict(card)
    try:
        labels.clear_labels(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id,
                            expected_revision=shown_revision)
    except Conflict:
        return _conflict(image_card(session=session, dataset_id=dataset_id, image_id=image_id))
    return ActionResult("cleared", image_card(session=session, dataset_id=dataset_id, image_id=image_id))


@requires("labeler", "reviewing labels")
def accept_review(*, session, actor: User, dataset_id: uuid.UUID, image_id: uuid.UUID,
                  shown_revision: int) -> ActionResult:
    """Accept the AI label as it is (marks it reviewed); nothing to accept is a clear message."""
    card = image_card(session=session, dataset_id=dataset_id, image_id=image_id)
    if not card.awaiting_review:
        return ActionResult("unchanged", card, "This image has no AI label awaiting review.")
    return save(session=session, actor=actor, dataset_id=dataset_id, image_id=image_id, class_ids=card.class_ids,
                shown_revision=shown_revision)
