"""core/labeling/queue.py: queue modes, navigation, reservations, pins, and saves that are safe to repeat."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core import file_links
from core.errors import InvalidInput
from core.labeling import actions, labels
from core.labeling import queue as labeling
from core.models import ClsDataset, ClsDatasetImage, ClsLabel, utcnow
from tests.factories import ADMIN, add_to_space, make_class, make_dataset, make_image_row, person

ME, OTHER = uuid.UUID(int=1), uuid.UUID(int=2)  # reservation holders (one per open page)
ME_USER, OTHER_USER = person("me@acme.com"), person("other@acme.com")


def seed(session, storage, *, images: int = 6, classes: int = 3, task_type: str = "single_label", name="ds"):
    dataset = make_dataset(session, name, task_type=task_type)
    class_rows = [make_class(session, f"{name}-class-{i}") for i in range(classes)]
    base = utcnow()
    image_ids = []
    for i in range(images):
        image = make_image_row(session, storage, seed=i)
        session.add(ClsDatasetImage(dataset_id=dataset.id, image_id=image.id, added_at=base + timedelta(seconds=i)))
        image_ids.append(image.id)
    dataset.image_count = images
    session.flush()
    add_to_space(session, dataset.id, [c.id for c in class_rows])
    return dataset.id, image_ids, [c.id for c in class_rows]


def ai_label(session, dataset_id, image_id, class_id, confidence):
    labels.set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id],
                      confidence=confidence, is_ai_generated=True, ai_model="m1", reason="ai")


def test_queue_modes_walk_their_images_in_order(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage)
        labels.set_labels(session=s, dataset_id=ds, image_id=images[0], class_ids=[classes[0]], actor=ME_USER)
        labels.skip_image(session=s, dataset_id=ds, image_id=images[1], actor=ME_USER)
        ai_label(s, ds, images[2], classes[1], 0.9)
        ai_label(s, ds, images[3], classes[2], 0.2)
        ai_label(s, ds, images[4], classes[0], 0.4)
    with db_stack.session() as s:
        q = lambda mode, **kw: labeling.queue_ids(session=s, dataset_id=ds, mode=mode, limit=10, **kw)  # noqa: E731
        assert q("all") == images
        assert q("all", after=images[4]) == [images[5], *images[:4]]  # wraps round, never the current
        assert q("unlabeled") == [images[5]]
        assert q("review") == [images[2], images[3], images[4]]
        assert q("low_confidence") == [images[3], images[4]]  # below 0.5, lowest first
        assert q("low_confidence", threshold=0.95) == [images[3], images[4], images[2]]
        assert labeling.queue_size(session=s, dataset_id=ds, mode="review") == 3
        assert labeling.queue_size(session=s, dataset_id=ds, mode="low_confidence") == 2
        assert labeling.position(session=s, dataset_id=ds, image_id=images[3]) == 4
        assert labeling.previous_id(session=s, dataset_id=ds, before=images[3]) == images[2]
        assert labeling.previous_id(session=s, dataset_id=ds, before=images[0]) is None
        with pytest.raises(InvalidInput, match="unknown queue mode"):
            q("newest")


def test_random_mode_is_seeded_and_unlabeled_only(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage, images=20)
        labels.set_labels(actor=ADMIN, session=s, dataset_id=ds, image_id=images[0], class_ids=[classes[0]])
    with db_stack.session() as s:
        first = labeling.queue_ids(session=s, dataset_id=ds, mode="random", seed=7, limit=30)
        again = labeling.queue_ids(session=s, dataset_id=ds, mode="random", seed=7, limit=30)
        other = labeling.queue_ids(session=s, dataset_id=ds, mode="random", seed=8, limit=30)
    assert first == again and sorted(first) == sorted(images[1:]) and other != first


def test_two_labelers_get_different_images_and_reservations_expire(db_stack):
    """A page holds the image it shows and the ones it prefetched (its window of 4): the other page's
    queue skips all of them."""
    with db_stack.session() as s:
        ds, images, _ = seed(s, db_stack.storage, images=10)
    with db_stack.session() as s:
        mine, my_next = actions.next_image_and_upcoming(actor=ADMIN, session=s, dataset_id=ds, mode="unlabeled",
                                                         holder=ME)
        theirs, their_next = actions.next_image_and_upcoming(actor=ADMIN, session=s, dataset_id=ds, mode="unlabeled",
                                                              holder=OTHER)
    assert [mine, *my_next] == images[:4] and [theirs, *their_next] == images[4:8]
    with db_stack.session() as s:  # moving on: the window slides over the other page's images
        nxt, upcoming = actions.next_image_and_upcoming(actor=ADMIN, session=s, dataset_id=ds, mode="unlabeled",
                                                         holder=ME, after=mine)
        assert [nxt, *upcoming] == [images[1], images[2], images[3], images[8]]
        assert labeling.queue_ids(session=s, dataset_id=ds, mode="unlabeled", holder=OTHER, after=theirs,
                                  limit=10) == [*images[5:8], images[9], images[0]]
        assert labeling.queue_size(session=s, dataset_id=ds, mode="unlabeled", holder=OTHER) == 6
        assert labeling.queue_held_by_others(session=s, dataset_id=ds, mode="unlabeled", holder=OTHER) == 4
        later = utcnow() + timedelta(seconds=labeling.RESERVATION_S + 1)
        assert actions.reserve(actor=ADMIN, session=s, dataset_id=ds, image_id=nxt, holder=OTHER, now=later)
        assert not actions.reserve(actor=ADMIN, session=s, dataset_id=ds, image_id=nxt, holder=ME, now=later)
        # "all" mode shows every image, held or not
        assert labeling.queue_ids(session=s, dataset_id=ds, mode="all", holder=ME, limit=10) == images


def test_racing_pages_never_claim_the_same_image(postgres_stack):
    with postgres_stack.session() as s:
        ds, images, _ = seed(s, postgres_stack.storage, images=16)
    windows, barrier = [], threading.Barrier(4)

    def claim():
        barrier.wait()
        with postgres_stack.session() as s:
            first, upcoming = actions.next_image_and_upcoming(actor=ADMIN, session=s, dataset_id=ds,
                                                               mode="unlabeled", holder=uuid.uuid4())
            windows.append([first, *upcoming])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    shown = [window[0] for window in windows]
    held = [image_id for window in windows for image_id in window]
    assert None not in shown and len(set(held)) == len(held), windows


def test_save_is_idempotent_and_never_overwrites_silently(stack):
    with stack.session() as s:
        ds, images, classes = seed(s, stack.storage)
    image = images[0]
    with stack.session() as s:
        first = actions.save(session=s, dataset_id=ds, image_id=image, class_ids=[classes[1]], shown_revision=0,
                              actor=ME_USER)
    with stack.session() as s:  # the same press delivered twice: nothing written again
        again = actions.save(session=s, dataset_id=ds, image_id=image, class_ids=[classes[1]], shown_revision=0,
                              actor=ME_USER)
    assert (first.outcome, again.outcome) == ("saved", "unchanged")
    assert again.card.label_revision == 1
    with stack.session() as s:  # another labeler had the page open at revision 0 and picks another class
        stale = actions.save(session=s, dataset_id=ds, image_id=image, class_ids=[classes[2]], shown_revision=0,
                              actor=OTHER_USER)
    assert stale.outcome == "conflict" and "ds-class-1" in stale.message
    assert stale.card.class_ids == [classes[1]] and not stale.moves_on
    with stack.session() as s:  # told and shown, a second Enter replaces it knowingly
        replaced = actions.save(session=s, dataset_id=ds, image_id=image, class_ids=[classes[2]],
                                 shown_revision=stale.card.label_revision, actor=OTHER_USER)
        rows = s.scalars(select(ClsLabel).where(ClsLabel.image_id == image)).all()
        assert replaced.outcome == "saved" and [r.class_id for r in rows] == [classes[2]]
        assert s.get(ClsDataset, ds).labeled_image_count == 1


def test_bad_saves_are_refused_with_a_message(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage)
        with pytest.raises(InvalidInput, match="pick a class"):
            actions.save(session=s, dataset_id=ds, image_id=images[0], class_ids=[], shown_revision=0, actor=ME_USER)
        with pytest.raises(InvalidInput, match="single-label"):
            actions.save(session=s, dataset_id=ds, image_id=images[0], class_ids=classes[:2], shown_revision=0,
                          actor=ME_USER)


def test_multi_label_save_skip_and_clear(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage, task_type="multi_label")
    with db_stack.session() as s:
        saved = actions.save(session=s, dataset_id=ds, image_id=images[0], class_ids=classes[:2], shown_revision=0,
                              actor=ME_USER)
        assert sorted(saved.card.class_ids) == sorted(classes[:2])
        cleared = actions.clear(session=s, dataset_id=ds, image_id=images[0], shown_revision=saved.card.label_revision,
                                 actor=ME_USER)
        assert cleared.outcome == "cleared" and cleared.card.labels == ()
        assert actions.clear(session=s, dataset_id=ds, image_id=images[0], shown_revision=0,
                              actor=ME_USER).outcome == "unchanged"
        skipped = actions.skip(session=s, dataset_id=ds, image_id=images[1], actor=ME_USER)
        assert skipped.card.status == "skipped"
        assert actions.skip(session=s, dataset_id=ds, image_id=images[1], actor=ME_USER).card.label_revision == \
            skipped.card.label_revision  # skipping twice writes once
        assert images[1] not in labeling.queue_ids(session=s, dataset_id=ds, mode="unlabeled", limit=10)


def test_review_accept_marks_reviewed_and_a_change_records_a_manual_label(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage)
        ai_label(s, ds, images[0], classes[0], 0.3)
        ai_label(s, ds, images[1], classes[0], 0.4)
    with db_stack.session() as s:
        card = labeling.image_card(session=s, dataset_id=ds, image_id=images[0])
        assert card.awaiting_review and card.labels[0].confidence == 0.3 and card.labels[0].ai_model == "m1"
        accepted = actions.accept_review(session=s, dataset_id=ds, image_id=images[0],
                                          shown_revision=card.label_revision, actor=ME_USER)
        assert accepted.outcome == "reviewed"
        label = s.scalar(select(ClsLabel).where(ClsLabel.image_id == images[0]))
        assert label.is_reviewed and label.reviewed_by == ME_USER.id and label.reviewed_at is not None
        card = labeling.image_card(session=s, dataset_id=ds, image_id=images[1])
        changed = actions.save(session=s, dataset_id=ds, image_id=images[1], class_ids=[classes[2]],
                                shown_revision=card.label_revision, actor=ME_USER)
        label = s.scalar(select(ClsLabel).where(ClsLabel.image_id == images[1]))
        assert changed.outcome == "saved" and label.class_id == classes[2] and not label.is_ai_generated
        assert labeling.queue_ids(session=s, dataset_id=ds, mode="review") == []
        assert actions.accept_review(session=s, dataset_id=ds, image_id=images[2], shown_revision=0,
                                      actor=ME_USER).outcome == "unchanged"


def test_classes_pinned_first_get_the_number_keys(db_stack):
    with db_stack.session() as s:
        ds, _, _ = seed(s, db_stack.storage, classes=0)
        classes = [make_class(s, f"c{i:02d}").id for i in range(12)]
        make_class(s, "not-in-this-dataset")
        assert actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id) == []
        add_to_space(s, ds, classes)
        keys = actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id)
        assert [k.key for k in keys] == list("1234567890") + [None, None]
        assert [k.class_id for k in keys] == classes  # the space's order, not the workspace's
        actions.set_pins(session=s, dataset_id=ds, actor=ME_USER, class_ids=[classes[11], classes[5]])
        keys = actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id)
        assert [k.class_id for k in keys[:3]] == [classes[11], classes[5], classes[0]]
        assert keys[0].key == "1" and keys[0].pinned and keys[11].key is None
        # pins are per user
        assert actions.classes_for_labeling(session=s, dataset_id=ds, user_id=OTHER_USER.id)[0].class_id == classes[0]
        with pytest.raises(InvalidInput, match="at most 10"):
            actions.set_pins(session=s, dataset_id=ds, actor=ME_USER, class_ids=classes[:11])
        with pytest.raises(InvalidInput, match="outside this dataset's classes"):
            actions.set_pins(session=s, dataset_id=ds, actor=ME_USER, class_ids=[uuid.uuid4()])


def test_stable_url_is_reused_for_presigned_s3_and_absent_for_local(stack):
    key = "images/x.png"
    stack.storage.put(key, b"x")
    first, second = file_links.stable_url(stack.storage, key), file_links.stable_url(stack.storage, key)
    if stack.name == "production":
        assert first and first.startswith("http") and first == second
    else:
        assert first is None


def test_walk_is_complete_when_images_share_the_server_timestamp(db_stack):
    """add_images_to_dataset stamps a batch with one CURRENT_TIMESTAMP (SQLite: whole seconds)."""
    from core.datasets.dataset import add_images_to_dataset

    with db_stack.session() as s:
        dataset = make_dataset(s, "same-second")
        ids = [make_image_row(s, db_stack.storage, seed=i).id for i in range(5)]
        add_images_to_dataset(actor=ADMIN, session=s, dataset_id=dataset.id, image_ids=ids)
    seen, current = [], None
    with db_stack.session() as s:
        for _ in range(5):
            current = actions.next_image(actor=ADMIN, session=s, dataset_id=dataset.id, mode="all", holder=ME, after=current)
            seen.append(current)
        assert labeling.position(session=s, dataset_id=dataset.id, image_id=seen[-1]) == 5
        assert labeling.previous_id(session=s, dataset_id=dataset.id, before=seen[1]) == seen[0]
    assert sorted(seen) == sorted(ids)


def test_all_mode_shows_an_image_another_page_holds(db_stack):
    with db_stack.session() as s:
        ds, images, _ = seed(s, db_stack.storage, images=2)
        assert actions.reserve(actor=ADMIN, session=s, dataset_id=ds, image_id=images[0], holder=OTHER)
        assert actions.next_image(actor=ADMIN, session=s, dataset_id=ds, mode="all", holder=ME) == images[0]
        assert actions.next_image(actor=ADMIN, session=s, dataset_id=ds, mode="unlabeled", holder=ME) == images[1]


def test_confirming_a_label_someone_changed_meanwhile_is_a_conflict(db_stack):
    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage)
        labels.set_labels(session=s, dataset_id=ds, image_id=images[0], class_ids=[classes[0]], actor=ME_USER)
        shown = labeling.image_card(session=s, dataset_id=ds, image_id=images[0])
        labels.set_labels(session=s, dataset_id=ds, image_id=images[0], class_ids=[classes[1]], actor=OTHER_USER,
                          expected_revision=shown.label_revision)
        result = actions.save(session=s, dataset_id=ds, image_id=images[0], class_ids=[classes[0]],
                               shown_revision=shown.label_revision, actor=ME_USER, shown=shown)
        assert result.outcome == "conflict" and result.card.class_ids == [classes[1]]


def test_key_batches_apply_once_in_order_and_never_to_another_image(db_stack):
    from core.db import session_scope
    from core.labeling import keyboard_session as flow

    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage, images=5)
        keys = actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id)
    names = {k.key: k.class_id for k in keys}
    state = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    assert state.image_id == images[0]
    batch = {"load": "p1", "seq": 1, "image_id": str(images[0]), "keys": ["1", "enter", "2", "enter", "3"]}
    assert flow.apply_keys(session_scope, state, batch=batch, classes=keys) == 5
    assert flow.apply_keys(session_scope, state, batch=batch, classes=keys) == 0  # resent: ignored
    assert state.image_id == images[2] and state.selection == [names["3"]] and state.acks == {"p1": 1}
    stale = {"load": "p1", "seq": 2, "image_id": str(images[0]), "keys": ["enter"]}
    assert flow.apply_keys(session_scope, state, batch=stale, classes=keys) == 0
    assert "typed for another image" in state.message[1]
    # Enter with nothing picked: an error, the image stays, the keys after it are not applied
    state.selection = []
    bad = {"load": "p1", "seq": 3, "image_id": str(images[2]), "keys": ["enter", "1", "enter"]}
    assert flow.apply_keys(session_scope, state, batch=bad, classes=keys) == 1
    assert state.image_id == images[2] and state.message[0] == "error" and "not applied" in state.message[1]
    flow.apply_keys(session_scope, state, classes=keys,
                    batch={"load": "p1", "seq": 4, "image_id": str(images[2]), "keys": ["left", "left", "s", "escape"]})
    # ← ← went back to the first image; S on a labeled image keeps its label and moves on (history)
    assert state.leave and state.image_id == images[1]
    with db_stack.session() as s:
        saved = labels.labels_for_images(session=s, dataset_id=ds, image_ids=images[:3])
    assert [[label.class_id for label in saved[i]] for i in images[:3]] == [[names["1"]], [names["2"]], []]


def test_keys_typed_on_a_guessed_image_apply_only_where_the_guess_was_right(db_stack):
    """The browser shows `ahead` before Python answers and tags each key with the image it was typed
    on: a right guess applies in order; a wrong one (another page took that image) drops the keys."""
    from core.db import session_scope
    from core.labeling import keyboard_session as flow

    with db_stack.session() as s:
        ds, images, classes = seed(s, db_stack.storage, images=6)
        keys = actions.classes_for_labeling(session=s, dataset_id=ds, user_id=ME_USER.id)
    names = {k.key: k.class_id for k in keys}
    state = flow.start(session_scope, dataset_id=ds, actor=ME_USER, mode="unlabeled")
    assert state.image_id == images[0] and flow.ahead(state) == images[1:4]
    with db_stack.session() as s:
        cards = labeling.image_cards(session=s, dataset_id=ds, image_ids=flow.ahead(state))
    assert [c.image_id for c in cards] == images[1:4] and all(not c.labels for c in cards)
    tags = [str(images[0])] * 2 + [str(images[1])] * 2
    batch = {"load": "p", "seq": 1, "image_id": tags[0], "keys": ["1", "enter", "2", "enter"], "images": tags}
    assert flow.apply_keys(session_scope, state, batch=batch, classes=keys) == 4
    assert state.image_id == images[2] and state.message is None
    with db_stack.session() as s:  # this page's lease on the guessed image ran out and another page took it
        s.execute(update(ClsDatasetImage).where(ClsDatasetImage.dataset_id == ds, ClsDatasetImage.image_id == images[3])
                  .values(reserved_until=utcnow() - timedelta(seconds=1)))
        assert actions.reserve(actor=ADMIN, session=s, dataset_id=ds, image_id=images[3], holder=uuid.uuid4())
    tags = [str(images[2])] * 2 + [str(images[3])] * 2
    batch = {"load": "p", "seq": 2, "image_id": tags[0], "keys": ["3", "enter", "1", "enter"], "images": tags}
    assert flow.apply_keys(session_scope, state, batch=batch, classes=keys) == 2
    assert state.image_id == images[4] and "2 key(s) ignored" in state.message[1]
    with db_stack.session() as s:
        saved = labels.labels_for_images(session=s, dataset_id=ds, image_ids=images[:5])
    assert [[label.class_id for label in saved[i]] for i in images[:5]] == [
        [names["1"]], [names["2"]], [names["3"]], [], []]
    # back in history: `ahead` is the history in front of the shown image
    flow.apply_keys(session_scope, state, classes=keys, batch={"load": "p", "seq": 3, "keys": ["left", "left"]})
    assert state.image_id == images[1] and flow.ahead(state) == [images[2], images[4]]

    def held():
        with db_stack.session() as s:
            return len(s.scalars(select(ClsDatasetImage.image_id).where(
                ClsDatasetImage.dataset_id == ds, ClsDatasetImage.reserved_by == state.holder)).all())

    assert held() == 1
    flow.apply_keys(session_scope, state, classes=keys, batch={"load": "p", "seq": 4, "keys": ["escape"]})
    assert state.leave and held() == 0  # Esc gives the image back to the queue at once
