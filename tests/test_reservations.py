"""core/labeling/reservations.py with core/labeling/keyboard_session.py: a page's window (shown + prefetched) is its own
while it is active, comes back to the queue when the page goes idle, closes or is left, and the queue
count matches what a page can get."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from core.db import session_scope
from core.labeling import actions, reservations
from core.labeling import keyboard_session as flow
from core.labeling import queue as labeling
from core.models import ClsDatasetImage, utcnow
from tests.test_labeling import ME_USER, OTHER_USER, seed


def _held(dataset_id, holder) -> set:
    with session_scope() as session:
        return set(session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == dataset_id, ClsDatasetImage.reserved_by == holder,
            ClsDatasetImage.reserved_until > utcnow())))


def _lapse(dataset_id, holder) -> None:
    """The page's leases ran out (an idle or closed tab, LEASE_S later)."""
    with session_scope() as session:
        session.execute(update(ClsDatasetImage).where(ClsDatasetImage.dataset_id == dataset_id,
                                                      ClsDatasetImage.reserved_by == holder)
                        .values(reserved_until=utcnow() - timedelta(seconds=1)))


def test_heartbeat_keeps_an_active_window_and_lets_an_idle_one_lapse(db_stack):
    with db_stack.session() as s:
        ds, images, _ = seed(s, db_stack.storage, images=10)
    page = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    assert _held(ds, page.holder) == set(images[:4])
    with session_scope() as session:
        before = session.scalar(select(ClsDatasetImage.reserved_until).where(ClsDatasetImage.image_id == images[0]))
    flow.apply_keys(session_scope, page, classes=[], batch={"load": "p", "seq": 1, "keys": [], "idle_ms": 500})
    with session_scope() as session:
        after = session.scalar(select(ClsDatasetImage.reserved_until).where(ClsDatasetImage.image_id == images[0]))
    assert after >= before and page.beats == 1  # renewed
    flow.apply_keys(session_scope, page, classes=[],
                    batch={"load": "p", "seq": 2, "keys": [], "idle_ms": reservations.IDLE_S * 1000 + 1})
    with session_scope() as session:
        still = session.scalar(select(ClsDatasetImage.reserved_until).where(ClsDatasetImage.image_id == images[0]))
    assert still == after  # idle: not renewed, so the lease runs out LEASE_S after the last renewal
    _lapse(ds, page.holder)
    other = flow.start(session_scope, dataset_id=ds, actor=OTHER_USER, mode="unlabeled")
    assert other.image_id == images[0]  # the idle page's images are the other labeler's now


def test_a_page_back_from_idle_moves_on_when_its_image_was_taken_and_drops_the_keys(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage, images=10)
        keys = actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id)
    page = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    _lapse(ds, page.holder)
    page.held_at -= reservations.LEASE_S  # as if the tab had been idle that long
    other = flow.start(session_scope, dataset_id=ds, actor=OTHER_USER, mode="unlabeled")
    assert other.image_id == images[0]
    batch = {"load": "p", "seq": 1, "image_id": str(images[0]), "keys": ["1", "enter"],
             "images": [str(images[0])] * 2}
    assert flow.apply_keys(session_scope, page, batch=batch, classes=keys) == 0
    assert "took this image" in page.message[1] and "not applied" in page.message[1]
    assert page.image_id == images[4]  # the first image neither page holds
    with session_scope() as session:
        assert not session.scalars(select(ClsDatasetImage.image_id).where(
            ClsDatasetImage.dataset_id == ds, ClsDatasetImage.status == "labeled")).all()


def test_leaving_ends_the_window_and_coming_back_claims_it_again(db_stack):
    with db_stack.session() as s:
        ds, images, _ = seed(s, db_stack.storage, images=6)
    page = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    flow.end(session_scope, page)
    assert _held(ds, page.holder) == set() and page.held_at == 0
    assert flow.hold(session_scope, page) and _held(ds, page.holder) == set(images[:4])
    flow.apply_keys(session_scope, page, classes=[], batch={"load": "p", "seq": 1, "keys": [], "leave": True})
    assert _held(ds, page.holder) == set()  # the tab closed (pagehide)


def test_queue_count_and_nothing_left_agree_and_a_waiting_page_gets_freed_images(db_stack):
    with db_stack.session() as s:
        ds, images, _ = seed(s, db_stack.storage, images=4)
    first = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    second = flow.start(session_scope, dataset_id=ds, actor=OTHER_USER, mode="unlabeled")
    assert second.card is None and second.exhausted
    with session_scope() as session:
        assert labeling.queue_size(session=session, dataset_id=ds, mode="unlabeled", holder=second.holder) == 0
        assert labeling.queue_held_by_others(session=session, dataset_id=ds, mode="unlabeled",
                                             holder=second.holder) == 4
        assert labeling.queue_size(session=session, dataset_id=ds, mode="unlabeled", holder=first.holder) == 4
    flow.end(session_scope, first)  # the first tab is left
    flow.apply_keys(session_scope, second, classes=[], batch={"load": "q", "seq": 1, "keys": [], "idle_ms": 0})
    assert second.image_id == images[0] and not second.exhausted


def test_every_claim_is_single_winner_on_postgres(postgres_stack):
    """Claims are conditional UPDATEs: two holders claiming overlapping windows never share an image."""
    with postgres_stack.session() as s:
        ds, images, _ = seed(s, postgres_stack.storage, images=8)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    with session_scope() as a, session_scope() as b:
        got_a = reservations.claim(session=a, dataset_id=ds, image_ids=images[:6], holder=mine)
        a.commit()
        got_b = reservations.claim(session=b, dataset_id=ds, image_ids=images[2:], holder=theirs)
    assert got_a == set(images[:6]) and got_b == set(images[6:])
