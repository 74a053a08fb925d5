"""Splits: stratified, reproducible, duplicates kept together, minimums, manual assignment, stats."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from core.datasets.splits import assign_split, assign_unassigned, auto_split, normalize_ratios, split_stats
from core.errors import InvalidInput, NotFound
from core.models import ClsDatasetImage
from tests.factories import ADMIN, make_class, make_dataset, make_dataset_image


def _splits(session, dataset_id) -> dict[uuid.UUID, str]:
    return dict(session.execute(select(ClsDatasetImage.image_id, ClsDatasetImage.split)
                                .where(ClsDatasetImage.dataset_id == dataset_id)).tuples().all())


def _single_label_dataset(stack, per_class=(20, 20, 20)):
    with stack.session() as session:
        dataset = make_dataset(session, "ds")
        classes = [make_class(session, f"c{i}") for i in range(len(per_class))]
        seed = 0
        members = {}
        for cls, count in zip(classes, per_class, strict=True):
            for _ in range(count):
                image = make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls])
                members[image.id] = cls.name
                seed += 1
        return dataset.id, members


def test_auto_split_is_stratified_and_reproducible(stack):
    dataset_id, members = _single_label_dataset(stack)
    with stack.session() as session:
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, seed=7)
    assert summary["assigned"] == {"train": 48, "val": 6, "test": 6}
    with stack.session() as session:
        first = _splits(session, dataset_id)
    per_class = Counter((members[image_id], split) for image_id, split in first.items())
    for name in ("c0", "c1", "c2"):
        assert (per_class[(name, "train")], per_class[(name, "val")], per_class[(name, "test")]) == (16, 2, 2)
    with stack.session() as session:
        again = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, seed=7)
    assert again["changed"] == 0
    with stack.session() as session:
        assert _splits(session, dataset_id) == first
        auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, seed=8)
    with stack.session() as session:
        assert _splits(session, dataset_id) != first


def test_multi_label_split_puts_every_class_in_val_and_test(embedded_stack):
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "ml", task_type="multi_label")
        a, b, c = (make_class(session, name) for name in "abc")
        combos = [[a], [b], [c], [a, b], [b, c], [a, c], [a, b, c]]
        for seed in range(70):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=combos[seed % len(combos)])
        dataset_id = dataset.id
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 70, "val": 15, "test": 15})
    assert summary["unmet_minimums"] == []
    with stack.session() as session:
        stats = split_stats(session=session, dataset_id=dataset_id)
    for row in stats["per_class"]:
        assert row["val"] >= 3 and row["test"] >= 3 and row["unassigned"] == 0, row
    assert sum(stats["labeled"][s] for s in ("train", "val", "test")) == 70


def test_duplicates_share_one_split(stack):
    with stack.session() as session:
        dataset = make_dataset(session, "dups")
        cat, dog = make_class(session, "cat"), make_class(session, "dog")
        groups = []
        for seed in range(12):  # each seed drawn three times: identical bytes, identical SHA-256
            groups.append([make_dataset_image(session, stack.storage, dataset, seed=seed,
                                              classes=[cat if seed % 2 else dog]).id for _ in range(3)])
        # A PNG and its JPEG re-encode: other bytes, the same picture (a near-duplicate pair).
        near = [make_dataset_image(session, stack.storage, dataset, seed=100, classes=[cat], phash=True),
                make_dataset_image(session, stack.storage, dataset, seed=100, classes=[cat], near_copy=True)]
        groups.append([image.id for image in near])
        dataset_id = dataset.id
    with stack.session() as session:
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 0.5, "val": 0.25, "test": 0.25})
    assert summary["duplicate_groups"] == 13
    with stack.session() as session:
        splits = _splits(session, dataset_id)
    assert {splits[i] for group in groups for i in group} == {"train", "val", "test"}
    for group in groups:
        assert len({splits[i] for i in group}) == 1, group


def test_keep_existing_val_test_and_duplicates_follow_them(embedded_stack):
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "keep")
        cls = make_class(session, "x")
        kept_val = make_dataset_image(session, stack.storage, dataset, seed=1, classes=[cls], split="val")
        kept_test = make_dataset_image(session, stack.storage, dataset, seed=2, classes=[cls], split="test")
        copy_of_test = make_dataset_image(session, stack.storage, dataset, seed=2, classes=[cls], split="train")
        for seed in range(3, 23):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls], split="train")
        dataset_id = dataset.id
    with stack.session() as session:
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, keep_existing_val_test=True, seed=3)
    assert summary["kept"] == 3  # the two kept images and the copy that joins its original
    with stack.session() as session:
        splits = _splits(session, dataset_id)
    assert splits[kept_val.id] == "val"
    assert splits[kept_test.id] == splits[copy_of_test.id] == "test"
    assert set(splits.values()) == {"train", "val", "test"}


def test_per_class_minimum_in_val_and_test_where_the_class_has_enough(stack):
    dataset_id, members = _single_label_dataset(stack, per_class=(40, 3, 2))
    with stack.session() as session:
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 0.9, "val": 0.05, "test": 0.05})
    with stack.session() as session:
        splits = _splits(session, dataset_id)
    per_class = Counter((members[i], s) for i, s in splits.items())
    assert per_class[("c1", "val")] == 1 and per_class[("c1", "test")] == 1 and per_class[("c1", "train")] == 1
    # c2 has two images: not enough for a val image, a test image and one to train on.
    assert per_class[("c2", "train")] >= 1
    assert {item["class"] for item in summary["unmet_minimums"]} <= {"c2"}
    assert all("too few independent images" in item["reason"] for item in summary["unmet_minimums"])


def test_a_class_of_two_near_duplicate_groups_is_not_emptied_into_val(embedded_stack):
    """Six copies of two pictures are two independent images, not six: too few for val and test."""
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "groups")
        few, many = make_class(session, "few"), make_class(session, "many")
        for picture in range(2):
            for _ in range(6):
                make_dataset_image(session, stack.storage, dataset, seed=picture, classes=[few])
        for seed in range(10, 40):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[many])
        dataset_id = dataset.id
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, seed=1)
    unmet = {(item["class"], item["split"]) for item in summary["unmet_minimums"]}
    assert ("few", "test") in unmet or ("few", "val") in unmet
    with stack.session() as session:
        stats = {row["name"]: row for row in split_stats(session=session, dataset_id=dataset_id)["per_class"]}
    assert stats["few"]["train"] >= 6  # at least one of its two pictures stays in train


def test_unlabeled_images_are_left_alone_and_assign_unassigned_keeps_the_rest(embedded_stack):
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "partial")
        cls = make_class(session, "x")
        unlabeled = make_dataset_image(session, stack.storage, dataset, seed=0)
        original = make_dataset_image(session, stack.storage, dataset, seed=1, classes=[cls])
        for seed in range(2, 11):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls])
        dataset_id = dataset.id
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id)
    assert summary["unlabeled_untouched"] == 1
    with stack.session() as session:
        before = _splits(session, dataset_id)
        assert before[unlabeled.id] == "unassigned"
        late = make_dataset_image(session, stack.storage, session.get(type(dataset), dataset_id), seed=50,
                                  classes=[cls])
        copy = make_dataset_image(session, stack.storage, session.get(type(dataset), dataset_id), seed=1,
                                  classes=[cls])
        assign_unassigned(actor=ADMIN, session=session, dataset_id=dataset_id)
    with stack.session() as session:
        after = _splits(session, dataset_id)
    assert {i: s for i, s in after.items() if i in before} == before
    assert after[late.id] in ("train", "val", "test")
    assert after[copy.id] == before[original.id]  # a new copy joins its original's split


def test_manual_assignment_and_its_bad_input(stack):
    dataset_id, members = _single_label_dataset(stack, per_class=(3,))
    ids = list(members)
    with stack.session() as session:
        assert assign_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids[:2], split="test") == 2
    with stack.session() as session:
        splits = _splits(session, dataset_id)
        assert [splits[i] for i in ids] == ["test", "test", "unassigned"]
        with pytest.raises(InvalidInput, match="unknown split 'holdout'"):
            assign_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=ids, split="holdout")
        with pytest.raises(NotFound, match="1 image\\(s\\) are not in this dataset"):
            assign_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=[ids[0], uuid.uuid4()], split="val")
        with pytest.raises(InvalidInput, match="no images"):
            assign_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=[], split="val")
        with pytest.raises(NotFound, match="no dataset"):
            auto_split(actor=ADMIN, session=session, dataset_id=uuid.uuid4())
    with stack.session() as session:  # the refused calls changed nothing
        assert [_splits(session, dataset_id)[i] for i in ids] == ["test", "test", "unassigned"]


@pytest.mark.parametrize(("ratios", "message"), [
    ({"train": -0.1, "val": 0.5}, "finite number ≥ 0"),
    ({"train": float("nan")}, "finite number ≥ 0"),
    ({"train": 0.8, "holdout": 0.2}, "unknown split 'holdout'"),
    ({"train": 0, "val": 0.5, "test": 0.5}, "train ratio must be above 0"),
    ({"train": "lots"}, "is not a number"),
    ([0.8, 0.1, 0.1], "must be a mapping"),
])
def test_bad_ratios_are_refused(ratios, message):
    with pytest.raises(InvalidInput, match=message):
        normalize_ratios(ratios)


def test_ratios_are_normalized():
    assert normalize_ratios({"train": 70, "val": 20, "test": 10}) == pytest.approx({"train": 0.7, "val": 0.2, "test": 0.1})
    assert normalize_ratios({"train": 1}) == {"train": 1.0, "val": 0.0, "test": 0.0}


def test_bad_seed_and_minimum_are_refused(embedded_stack):
    dataset_id, _ = _single_label_dataset(embedded_stack, per_class=(2,))
    with embedded_stack.session() as session:
        with pytest.raises(InvalidInput, match="seed"):
            auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, seed=-1)
        with pytest.raises(InvalidInput, match="min_per_class"):
            auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, min_per_class=-2)
        with pytest.raises(InvalidInput, match="threshold must be a whole number from 0 to"):
            auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, near_duplicate_threshold=99)


def test_split_stats_per_class(stack):
    dataset_id, members = _single_label_dataset(stack, per_class=(10, 10))
    with stack.session() as session:
        auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 0.6, "val": 0.2, "test": 0.2})
    with stack.session() as session:
        stats = split_stats(session=session, dataset_id=dataset_id)
    assert [(r["name"], r["train"], r["val"], r["test"], r["total"]) for r in stats["per_class"]] == [
        ("c0", 6, 2, 2, 10), ("c1", 6, 2, 2, 10)]
    assert stats["labeled"] == {"train": 12, "val": 4, "test": 4, "unassigned": 0}
    assert stats["actual_ratios"] == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2})


def test_near_duplicates_within_the_threshold_share_one_split(stack):
    pytest.importorskip("core.library.duplicates", reason="the near-duplicate index (core.library.duplicates) is not built yet")
    with stack.session() as session:
        dataset = make_dataset(session, "near")
        cls = make_class(session, "x")
        pairs = []
        for n in range(8):  # each picture as PNG and as a JPEG re-encode
            pairs.append([make_dataset_image(session, stack.storage, dataset, seed=n, classes=[cls], phash=True).id,
                          make_dataset_image(session, stack.storage, dataset, seed=n, classes=[cls],
                                             near_copy=True).id])
        dataset_id = dataset.id
    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    with stack.session() as session:
        exact_only = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios=ratios, near_duplicate_threshold=0)
        near = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios=ratios)  # the default distance
    assert (exact_only["duplicate_groups"], near["duplicate_groups"]) == (0, 8)
    with stack.session() as session:
        splits = _splits(session, dataset_id)
    for pair in pairs:
        assert splits[pair[0]] == splits[pair[1]]
    assert set(splits.values()) == {"train", "val", "test"}


def test_small_datasets_get_exactly_the_planned_split_sizes(embedded_stack):
    """iterstrat alone returns 0 images when asked for 1 of 6; the split repairs its sizes."""
    dataset_id, _ = _single_label_dataset(embedded_stack, per_class=(2, 2, 2))
    with embedded_stack.session() as session:
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 0.8, "val": 0.1, "test": 0.1})
        assert summary["assigned"] == {"train": 5, "val": 1, "test": 0}
        summary = auto_split(actor=ADMIN, session=session, dataset_id=dataset_id, ratios={"train": 0.5, "val": 0.25, "test": 0.25})
        assert summary["assigned"] == {"train": 3, "val": 2, "test": 1}


def test_split_stats_counts_as_the_image_facts_do(stack):
    """The database's GROUP BYs give what counting each image's facts gives: multi-label images count
    once per class, unlabeled images only under images, labeled ones in every split and unassigned."""
    from collections import defaultdict

    from core.datasets.split_facts import dataset_image_facts

    with stack.session() as session:
        dataset = make_dataset(session, "mixed")
        a, b, c = (make_class(session, name) for name in ("a", "b", "c"))
        layout = [([a], "train"), ([a, b], "train"), ([b], "val"), ([a, c], "test"), ([c], "unassigned"),
                  ([], "val"), ([], "unassigned"), ([b, c], "unassigned")]
        for seed, (classes, split) in enumerate(layout):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=classes, split=split)
        dataset_id = dataset.id
    with stack.session() as session:
        stats = split_stats(session=session, dataset_id=dataset_id)
        facts = dataset_image_facts(session, dataset_id)
    images, labeled, per_class = Counter(), Counter(), defaultdict(Counter)
    for fact in facts:
        images[fact.split] += 1
        labeled[fact.split] += bool(fact.class_ids)
        for class_id in fact.class_ids:
            per_class[class_id][fact.split] += 1
    assert stats["images"] == {s: images[s] for s in ("train", "val", "test", "unassigned")}
    assert stats["labeled"] == {"train": 2, "val": 1, "test": 1, "unassigned": 2}
    assert {r["name"]: (r["train"], r["val"], r["test"], r["unassigned"], r["total"]) for r in stats["per_class"]} == {
        "a": (2, 0, 1, 0, 3), "b": (1, 1, 0, 1, 3), "c": (0, 0, 1, 2, 3)}
    assert {uuid.UUID(r["class_id"]): r["total"] for r in stats["per_class"]} == {
        k: sum(v.values()) for k, v in per_class.items()}
    assert stats["actual_ratios"] == pytest.approx({"train": 0.5, "val": 0.25, "test": 0.25})
