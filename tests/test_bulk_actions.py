"""Bulk actions in batches (core.library.bulk): counts exact after every action, one audit row per
action with its total, a stopped action keeps what it committed and a rerun finishes it, and on
Postgres a labeler's save is never held more than a second while a large bulk action runs."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import func, insert, select, text

from core.library import bulk as bulk_actions
from core.models import ClsAuditEvent, ClsDatasetImage, ClsImage, ClsLabel
from tests.factories import ADMIN


def make_images(stack, n: int, folder: str = "bulk") -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    with stack.session() as session:
        for start in range(0, n, 5000):
            session.execute(insert(ClsImage), [{"id": i, "filename": f"{i}.jpg", "storage_path": f"images/{i}.jpg",
                                                "folder": folder} for i in ids[start:start + 5000]])
    return ids


def mismatches(stack) -> list[str]:
    from core.labeling.counts import count_mismatches

    with stack.session() as session:
        return count_mismatches(session=session)


@pytest.fixture
def small_batches(monkeypatch):
    """Many batches even for a few hundred images."""
    monkeypatch.setattr(bulk_actions, "FIRST_BATCH", 50)
    monkeypatch.setattr(bulk_actions, "MIN_BATCH", 20)
    monkeypatch.setattr(bulk_actions, "MAX_BATCH", 80)


def test_every_bulk_action_keeps_counts_exact_and_audits_once(db_stack, small_batches):
    from tests.factories import make_class, make_dataset

    stack = db_stack
    ids = make_images(stack, 600)
    with stack.session() as session:
        dataset = make_dataset(session, "bulk", task_type="multi_label").id
        other = make_dataset(session, "other").id
        cat, dog = make_class(session, "cat").id, make_class(session, "dog").id
    seen: list[tuple[int, int]] = []
    assert bulk_actions.tag_images(actor=ADMIN, image_ids=ids, add=["x"], progress=lambda d, t, m: seen.append((d, t))) == 600
    assert seen[0] == (0, 600) and len(seen) >= 1 + 600 // 80 and seen[-1] == (600, 600)
    assert bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=dataset, image_ids=ids) == 600
    assert bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=other, image_ids=ids[:300]) == 300
    assert bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=dataset, image_ids=ids) == 0  # idempotent
    assert bulk_actions.set_label(dataset_id=dataset, image_ids=ids, class_id=cat, actor=ADMIN) == 600
    assert bulk_actions.set_label(dataset_id=dataset, image_ids=ids[::2], class_id=dog, mode="add",
                                  actor=ADMIN) == 300
    assert bulk_actions.set_label(actor=ADMIN, dataset_id=other, image_ids=ids[:300], class_id=cat) == 300
    assert mismatches(stack) == []
    assert bulk_actions.set_label(dataset_id=dataset, image_ids=ids[:100], class_id=cat, mode="remove",
                                  actor=ADMIN) == 100
    assert bulk_actions.clear_labels(dataset_id=dataset, image_ids=ids[100:200], actor=ADMIN) == 100
    assert mismatches(stack) == []
    assert bulk_actions.remove_from_dataset(actor=ADMIN, dataset_id=dataset, image_ids=ids[200:350]) == 150
    assert mismatches(stack) == []
    assert bulk_actions.delete_images(image_ids=ids[250:], storage=stack.storage, actor=ADMIN) == 350
    assert mismatches(stack) == []
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 250
        assert session.scalar(select(func.count()).select_from(ClsDatasetImage)
                              .where(ClsDatasetImage.dataset_id == dataset)) == 200  # 0-199 stay
        events = session.execute(select(ClsAuditEvent.action, ClsAuditEvent.row_count)
                                 .order_by(ClsAuditEvent.created_at)).all()
    # one row per action with the total (every action is someone's: each is audited)
    assert [tuple(e) for e in events] == [("bulk_set_label", 600), ("bulk_set_label", 300),
                                          ("bulk_set_label", 300), ("bulk_set_label", 100),
                                          ("bulk_clear_labels", 100), ("delete_images", 350)]


def test_refusals_come_before_the_first_batch(db_stack):
    from core.errors import InvalidInput, NotFound
    from tests.factories import make_class, make_dataset

    stack = db_stack
    ids = make_images(stack, 10)
    with stack.session() as session:
        dataset = make_dataset(session, "d").id
        cat = make_class(session, "cat").id
    with pytest.raises(NotFound, match="not in the library"):
        bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=dataset, image_ids=[*ids, uuid.uuid4()])
    with pytest.raises(InvalidInput, match="mode"):
        bulk_actions.set_label(actor=ADMIN, dataset_id=dataset, image_ids=ids, class_id=cat, mode="swap")
    with pytest.raises(InvalidInput):
        bulk_actions.tag_images(actor=ADMIN, image_ids=ids, add=["x" * 500])
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsDatasetImage)) == 0


def test_a_stopped_action_keeps_its_committed_batches_and_a_rerun_finishes(db_stack, small_batches, monkeypatch):
    from core.errors import InvalidInput
    from core.labeling import bulk_labels
    from tests.factories import make_class, make_dataset

    stack = db_stack
    ids = make_images(stack, 300)
    with stack.session() as session:
        dataset = make_dataset(session, "d").id
        cat = make_class(session, "cat").id
    bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=dataset, image_ids=ids)
    real, calls = bulk_labels.set_label_batch, []

    def failing_third(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise InvalidInput("the third batch fails")
        return real(**kwargs)

    monkeypatch.setattr(bulk_actions, "set_label_batch", failing_third)  # where the bulk action looks it up
    with pytest.raises(InvalidInput, match="stopped after .* of 300 images"):
        bulk_actions.set_label(dataset_id=dataset, image_ids=ids, class_id=cat, actor=ADMIN)
    assert mismatches(stack) == []
    with stack.session() as session:
        kept = session.scalar(select(func.count()).select_from(ClsLabel))
        audited = session.scalar(select(ClsAuditEvent.row_count))
    assert 0 < kept < 300 and audited == kept  # the audit row says what was really changed
    monkeypatch.setattr(bulk_labels, "set_label_batch", real)
    assert bulk_actions.set_label(dataset_id=dataset, image_ids=ids, class_id=cat, actor=ADMIN) == 300 - kept
    assert mismatches(stack) == []


def test_labeler_is_never_held_over_a_second_by_large_bulk_actions(postgres_stack):
    """A labeler on the bulk dataset itself (it shares the dataset row with every batch) and one on
    another dataset with the bulk class (they share the class row), each with lock_timeout 1 s, keep
    saving while 20,000 images
    are added and labeled and 5,000 deleted, in batches."""
    from core.db import session_scope
    from core.labeling.labels import set_labels
    from tests.factories import make_class, make_dataset

    stack, n = postgres_stack, 20_000
    ids = make_images(stack, n)
    own = make_images(stack, 400, folder="own")
    with stack.session() as session:
        bulk = make_dataset(session, "bulk").id
        watched = make_dataset(session, "watched").id
        cat, dog = make_class(session, "cat").id, make_class(session, "dog").id
    bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=bulk, image_ids=own[:200])
    bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=watched, image_ids=own[200:])
    stop = threading.Event()
    latencies: dict[str, list[float]] = {"same dataset": [], "same class": []}
    errors: list[BaseException] = []

    def labeler(name: str, dataset_id, images) -> None:
        i = 0
        while not stop.is_set():
            image_id, class_id = images[i % len(images)], (cat, dog)[i % 2]
            started = time.perf_counter()
            try:
                with session_scope() as session:
                    # a lock held on the labeler for more than a second fails its save (LockNotAvailable)
                    session.execute(text("SET LOCAL lock_timeout = '1s'"))
                    set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id])
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
                return
            latencies[name].append(time.perf_counter() - started)
            i += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=labeler, args=("same dataset", bulk, own[:200])),
               threading.Thread(target=labeler, args=("same class", watched, own[200:]))]
    for thread in threads:
        thread.start()
    timings = {}
    try:
        for name, action in [
            ("add", lambda: bulk_actions.add_to_dataset(actor=ADMIN, dataset_id=bulk, image_ids=ids)),
            ("label", lambda: bulk_actions.set_label(dataset_id=bulk, image_ids=ids, class_id=cat, actor=ADMIN)),
            ("delete", lambda: bulk_actions.delete_images(image_ids=ids[: n // 4], storage=stack.storage,
                                                          actor=ADMIN)),
        ]:
            started = time.perf_counter()
            action()
            timings[name] = round(time.perf_counter() - started, 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    worst = {name: round(max(values, default=0), 3) for name, values in latencies.items()}
    p95 = {name: round(sorted(values)[int(0.95 * len(values))], 3) for name, values in latencies.items() if values}
    print(f"bulk seconds {timings}; labeler saves {({k: len(v) for k, v in latencies.items()})}, "
          f"worst {worst}, p95 {p95}")
    assert not errors, errors  # no save waited a second on a lock
    assert all(len(values) > 20 for values in latencies.values())
    # wall time also counts this shared machine's CPU stalls: the typical save stays well under a second
    assert max(p95.values()) < 1.0, p95
    assert mismatches(stack) == []
