"""Versions: the manifest contract, immutability under later edits, compare, and refusals."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from core.datasets.versions import compare_versions, create_version, get_version, list_versions, read_manifest
from core.errors import Conflict, InvalidInput, NotFound
from core.labeling.labels import set_labels
from core.models import ClsDatasetImage, ClsDatasetVersion, ClsLabel
from tests.factories import ADMIN, make_class, make_dataset, make_dataset_image


def _dataset(stack, *, task_type="single_label"):
    """Two classes (zebra labeled first, so zebra comes first in the dataset's label space), 6 labeled
    images with splits, 2 labeled without a split, 1 unlabeled."""
    with stack.session() as session:
        dataset = make_dataset(session, "vs", task_type=task_type)
        zebra, apple = make_class(session, "zebra"), make_class(session, "apple")
        images = {}
        for seed, (cls, split) in enumerate([(zebra, "train"), (zebra, "train"), (zebra, "val"), (apple, "train"),
                                             (apple, "test"), (apple, "val"), (apple, "unassigned"),
                                             (zebra, "unassigned")]):
            images[seed] = make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls],
                                              split=split).id
        images["unlabeled"] = make_dataset_image(session, stack.storage, dataset, seed=99).id
        return dataset.id, images, {"zebra": zebra.id, "apple": apple.id}


def test_create_version_writes_the_manifest_contract(stack):
    dataset_id, images, classes = _dataset(stack)
    with stack.session() as session:
        version = create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id, notes="first")
        version_id = version.id
    with stack.session() as session:
        version = session.get(ClsDatasetVersion, version_id)
        assert version.version_number == 1
        assert version.class_names == ["zebra", "apple"]  # the label space's order
        assert version.class_mapping == {str(classes["zebra"]): 0, str(classes["apple"]): 1}
        assert version.manifest_key == f"versions/{version_id}/manifest.jsonl"
        assert (version.image_count, version.labeled_image_count, version.class_count) == (9, 8, 2)
        assert sum(version.split_counts.values()) == 8
        lines = read_manifest(storage=stack.storage, version=version)
        assert len(lines) == 8 and str(images["unlabeled"]) not in {line["image_id"] for line in lines}
        by_id = {line["image_id"]: line for line in lines}
        first = by_id[str(images[0])]
        assert set(first) == {"image_id", "key", "sha256", "filename", "labels", "split"}
        assert first["labels"] == [0] and first["split"] == "train" and first["filename"] == "img_0.png"
        assert stack.storage.get(first["key"]) and len(first["sha256"]) == 64
        assert by_id[str(images[4])] == {**by_id[str(images[4])], "labels": [1], "split": "test"}
        # The two labeled images without a split were given one, and the dataset shows it.
        assert {by_id[str(images[6])]["split"], by_id[str(images[7])]["split"]} <= {"train", "val", "test"}
        splits = dict(session.execute(select(ClsDatasetImage.image_id, ClsDatasetImage.split)).tuples().all())
        assert splits[images[6]] == by_id[str(images[6])]["split"]
        assert splits[images["unlabeled"]] == "unassigned"
        assert sorted(version.train_image_ids + version.val_image_ids + version.test_image_ids) == sorted(by_id)
        assert version.per_class_counts["apple"] == {
            s: sum(1 for line in lines if line["labels"] == [1] and line["split"] == s) for s in ("train", "val", "test")}


def test_later_edits_never_change_a_version_and_compare_shows_them(stack):
    dataset_id, images, classes = _dataset(stack)
    with stack.session() as session:
        v1 = create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
        v1_id, v1_sha = v1.id, v1.manifest_sha256
    with stack.session() as session:
        before = read_manifest(storage=stack.storage, version=session.get(ClsDatasetVersion, v1_id))
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[classes["apple"]])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1], class_ids=[])
        session.execute(ClsDatasetImage.__table__.update().where(
            ClsDatasetImage.image_id == images[2]).values(split="test"))
    with stack.session() as session:
        v2 = create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
        assert v2.version_number == 2
    with stack.session() as session:
        v1 = session.get(ClsDatasetVersion, v1_id)
        assert v1.manifest_sha256 == v1_sha
        assert read_manifest(storage=stack.storage, version=v1) == before
        assert get_version(session=session, dataset_id=dataset_id).version_number == 2
        assert [v.version_number for v in list_versions(session=session, dataset_id=dataset_id)] == [2, 1]
        diff = compare_versions(session=session, storage=stack.storage, dataset_id=dataset_id, number_a=1, number_b=2)
    assert diff["images_removed"] == [str(images[1])]
    assert diff["images_relabeled"] == [str(images[0])]
    assert diff["images_moved"] == [str(images[2])]
    deltas = {row["class"]: row["delta"] for row in diff["per_class"]}
    assert deltas == {"apple": 1, "zebra": -2}


def test_refusals(stack):
    with stack.session() as session:
        empty = make_dataset(session, "empty")
        make_dataset_image(session, stack.storage, empty, seed=1)
        empty_id = empty.id
    with stack.session() as session:
        with pytest.raises(InvalidInput, match="has no labeled images"):
            create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=empty_id)
        with pytest.raises(NotFound, match="has no versions yet"):
            get_version(session=session, dataset_id=empty_id)
        with pytest.raises(NotFound, match="no dataset"):
            create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=uuid.uuid4())
        with pytest.raises(InvalidInput, match="notes are"):
            create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=empty_id, notes="x" * 5000)

    dataset_id, images, classes = _dataset(stack)
    with stack.session() as session:  # a second label written behind the service's back
        session.add(ClsLabel(dataset_id=dataset_id, image_id=images[0], class_id=classes["apple"]))
    with stack.session() as session:
        with pytest.raises(InvalidInput, match=f"several labels.*{images[0]}"):
            create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
    with stack.session() as session:
        assert session.scalars(select(ClsDatasetVersion)).all() == []
        assert not list(stack.storage.list_keys("versions/"))
        session.execute(ClsLabel.__table__.delete().where(
            ClsLabel.image_id == images[0], ClsLabel.class_id == classes["apple"]))
    with stack.session() as session:
        version = create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
        with pytest.raises(NotFound, match="has no version 7"):
            get_version(session=session, dataset_id=dataset_id, number=7)
        with pytest.raises(InvalidInput, match="whole number"):
            get_version(session=session, dataset_id=dataset_id, number=0)
        stack.storage.put(version.manifest_key, b'{"image_id": "forged"}\n')
        with pytest.raises(Conflict, match="does not match its recorded SHA-256"):
            read_manifest(storage=stack.storage, version=version)


def test_multi_label_manifest_lists_every_label(embedded_stack):
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "ml", task_type="multi_label")
        a, b = make_class(session, "a"), make_class(session, "b")
        both = make_dataset_image(session, stack.storage, dataset, seed=1, classes=[b, a], split="train")
        version = create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset.id)
        [line] = read_manifest(storage=stack.storage, version=version)
    assert line["image_id"] == str(both.id) and line["labels"] == [0, 1]
    assert version.per_class_counts == {"a": {"train": 1, "val": 0, "test": 0}, "b": {"train": 1, "val": 0, "test": 0}}


def test_concurrent_versions_take_consecutive_numbers(postgres_stack):
    stack = postgres_stack
    dataset_id, _, _ = _dataset(stack)
    numbers, errors = [], []

    def make():
        try:
            with stack.session() as session:
                numbers.append(create_version(actor=ADMIN, session=session, storage=stack.storage,
                                              dataset_id=dataset_id).version_number)
        except Exception as exc:  # reported below: the test fails with it
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(numbers) == [1, 2, 3]
