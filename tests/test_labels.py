"""Labels: single- and multi-label writes, revisions, bulk actions, review, skip, counts; two users
saving the same image at once on Postgres."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from core.datasets.classes import create_class
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.errors import Conflict, InvalidInput, NotFound
from core.labeling.bulk_labels import bulk_clear_labels, bulk_set_label
from core.labeling.counts import count_mismatches
from core.labeling.labels import clear_labels, labels_for_images, mark_reviewed, set_labels, skip_image, toggle_label
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsLabel, ClsLabelChange
from tests.factories import ADMIN, make_image_row


def _world(stack, *, task_type="single_label", images=3, classes=("cat", "dog", "bird")):
    with stack.session() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name=f"ds-{task_type}", task_type=task_type)
        class_ids = [create_class(actor=ADMIN, session=session, name=name).id for name in classes]
        image_ids = [make_image_row(session, stack.storage, seed=i).id for i in range(images)]
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=image_ids)
        return dataset.id, class_ids, image_ids


def _label_rows(session, dataset_id, image_id):
    return session.scalars(select(ClsLabel.class_id).where(
        ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == image_id)).all()


def test_single_label_replaces_and_counts_follow(stack):
    dataset_id, (cat, dog, _), images = _world(stack)
    with stack.session() as session:
        link = set_labels(session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat], actor=ADMIN)
        assert link.status == "labeled" and link.label_revision == 1
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[dog])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1], class_ids=[dog])
    with stack.session() as session:
        assert _label_rows(session, dataset_id, images[0]) == [dog]
        dataset = session.get(ClsDataset, dataset_id)
        assert (dataset.image_count, dataset.labeled_image_count, dataset.class_count) == (3, 2, 1)
        assert session.get(ClsClass, cat).image_count == 0
        assert session.get(ClsClass, dog).image_count == 2
        assert session.scalar(select(func.count()).select_from(ClsLabelChange)) == 3
        assert count_mismatches(session=session) == []


def test_single_label_refuses_two_classes(stack):
    dataset_id, (cat, dog, _), images = _world(stack)
    with pytest.raises(InvalidInput, match="single-label"), stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat, dog])


def test_multi_label_set_becomes_exactly_the_given_classes(stack):
    dataset_id, (cat, dog, bird), images = _world(stack, task_type="multi_label")
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat, dog, cat])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[dog, bird])
        toggle_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_id=dog)
    with stack.session() as session:
        assert _label_rows(session, dataset_id, images[0]) == [bird]
        assert session.get(ClsDataset, dataset_id).class_count == 1
        assert count_mismatches(session=session) == []


def test_class_image_count_counts_an_image_once_across_datasets(stack):
    dataset_id, (cat, *_), images = _world(stack)
    with stack.session() as session:
        other = create_dataset(actor=ADMIN, session=session, name="other", task_type="multi_label")
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=other.id, image_ids=images[:1])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat])
        set_labels(actor=ADMIN, session=session, dataset_id=other.id, image_id=images[0], class_ids=[cat])
        assert session.get(ClsClass, cat).image_count == 1
        clear_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0])
        assert session.get(ClsClass, cat).image_count == 1
        clear_labels(actor=ADMIN, session=session, dataset_id=other.id, image_id=images[0])
        assert session.get(ClsClass, cat).image_count == 0
        assert count_mismatches(session=session) == []


def test_stale_revision_is_a_conflict(stack):
    dataset_id, (cat, dog, _), images = _world(stack)
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat], expected_revision=0)
    with pytest.raises(Conflict, match="someone else"), stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[dog], expected_revision=0)
    with stack.session() as session:
        assert _label_rows(session, dataset_id, images[0]) == [cat]


def test_bad_references(stack):
    dataset_id, (cat, *_), images = _world(stack)
    with stack.session() as session:
        stranger = make_image_row(session, stack.storage, seed=99).id
    cases = [
        (dict(image_id=stranger, class_ids=[cat]), NotFound, "not in dataset"),
        (dict(image_id=images[0], class_ids=["not-a-uuid"]), InvalidInput, "not a valid id"),
        (dict(image_id=images[0], class_ids=[stranger]), NotFound, "class"),
        (dict(image_id=images[0], class_ids=[cat], confidence=1.5), InvalidInput, "confidence"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message), stack.session() as session:
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, **kwargs)
    with stack.session() as session:
        session.get(ClsClass, cat).is_active = False
    with pytest.raises(InvalidInput, match="deactivated"), stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat])


def test_bulk_modes(stack):
    dataset_id, (cat, dog, _), images = _world(stack, task_type="multi_label", images=4)
    with stack.session() as session:
        assert bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=cat) == 4
        assert bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[:2], class_id=dog,
                              mode="add") == 2
        assert bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=cat,
                              mode="remove") == 4
        assert bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=cat,
                              mode="remove") == 0
        labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=images)
        assert [[label.class_id for label in labels[i]] for i in images] == [[dog], [dog], [], []]
        assert bulk_clear_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images) == 2
        assert count_mismatches(session=session) == []
        with pytest.raises(InvalidInput, match="mode"):
            bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=cat, mode="swap")


def test_bulk_add_on_single_label_replaces(stack):
    dataset_id, (cat, dog, _), images = _world(stack)
    with stack.session() as session:
        bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=cat)
        bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, class_id=dog, mode="add")
        labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=images)
        assert all([label.class_id for label in labels[i]] == [dog] for i in images)
        assert count_mismatches(session=session) == []


def test_review_and_skip(stack):
    dataset_id, (cat, *_), images = _world(stack)
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat], confidence=0.7,
                   is_ai_generated=True, ai_model="m1", reason="prediction")
        mark_reviewed(session=session, dataset_id=dataset_id, image_id=images[0], actor=ADMIN)
        label = labels_for_images(session=session, dataset_id=dataset_id, image_ids=[images[0]])[images[0]][0]
        assert label.is_ai_generated and label.is_reviewed and label.reviewed_at is not None
        with pytest.raises(InvalidInput, match="no label"):
            mark_reviewed(session=session, dataset_id=dataset_id, image_id=images[1], actor=ADMIN)
        assert skip_image(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1]).status == "skipped"
        # a manual save over an AI label makes it manual
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat])
        label = labels_for_images(session=session, dataset_id=dataset_id, image_ids=[images[0]])[images[0]][0]
        assert not label.is_ai_generated


def _hold_lock_then_commit(stack, dataset_id, image_id, class_id, started: threading.Event, hold_s: float):
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id])
        started.set()
        time.sleep(hold_s)


def test_two_users_labeling_one_image_at_once_leave_one_label(postgres_stack):
    """User A's save holds the row lock; B's save waits for it, then replaces A's label (no second row)."""
    dataset_id, (cat, dog, _), images = _world(postgres_stack)
    started = threading.Event()
    worker = threading.Thread(target=_hold_lock_then_commit,
                              args=(postgres_stack, dataset_id, images[0], cat, started, 0.6))
    worker.start()
    assert started.wait(10)
    began = time.monotonic()
    with postgres_stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[dog])
    waited = time.monotonic() - began
    worker.join()
    assert waited > 0.3, "the second save did not wait for the first one's lock"
    with postgres_stack.session() as session:
        assert _label_rows(session, dataset_id, images[0]) == [dog]
        assert session.scalar(select(ClsDatasetImage.label_revision).where(
            ClsDatasetImage.image_id == images[0])) == 2
        assert count_mismatches(session=session) == []


def test_two_users_with_revisions_one_is_told(postgres_stack):
    """Both opened the image at revision 0: the first save wins, the second gets a Conflict."""
    dataset_id, (cat, dog, _), images = _world(postgres_stack)
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def save(name, class_id):
        barrier.wait()
        try:
            with postgres_stack.session() as session:
                set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[class_id],
                           expected_revision=0)
            results[name] = "saved"
        except Conflict as exc:
            results[name] = exc

    threads = [threading.Thread(target=save, args=(n, c)) for n, c in (("a", cat), ("b", dog))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(v).__name__ if not isinstance(v, str) else v for v in results.values()) == ["Conflict", "saved"]
    with postgres_stack.session() as session:
        assert len(_label_rows(session, dataset_id, images[0])) == 1
        assert count_mismatches(session=session) == []


def test_many_concurrent_savers_keep_counts_exact(postgres_stack):
    """Eight threads label and relabel overlapping images with different classes at once."""
    dataset_id, classes, images = _world(postgres_stack, images=4)
    errors = []

    def work(offset):
        try:
            for step in range(6):
                with postgres_stack.session() as session:
                    set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[(offset + step) % 4],
                               class_ids=[classes[(offset * step) % 3]])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with postgres_stack.session() as session:
        for image_id in images:
            assert len(_label_rows(session, dataset_id, image_id)) == 1
        assert count_mismatches(session=session) == []


def test_a_class_key_on_a_selection_replaces_adds_or_removes(stack):
    """The grid's key press: single-label replaces; multi-label adds unless every selected image
    already has the class, then removes it."""
    from core.labeling.bulk_labels import key_press_mode

    single_id, (cat, *_), single_images = _world(stack)
    multi_id, (m_cat, m_dog, _), multi_images = _world(stack, task_type="multi_label", classes=("m-cat", "m-dog", "m-bird"))
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=multi_id, image_id=multi_images[0], class_ids=[m_cat])
    with stack.session() as session:
        assert key_press_mode(session=session, dataset_id=single_id, image_ids=single_images, class_id=cat) == "replace"
        assert key_press_mode(session=session, dataset_id=multi_id, image_ids=multi_images[:1], class_id=m_cat) == "remove"
        assert key_press_mode(session=session, dataset_id=multi_id, image_ids=multi_images[:2], class_id=m_cat) == "add"
        assert key_press_mode(session=session, dataset_id=multi_id, image_ids=multi_images[:1], class_id=m_dog) == "add"
