"""Health check: every finding the issue lists, with the ids of the images it is about."""

from __future__ import annotations

import uuid

import pytest

from core.datasets.health import health_check
from core.errors import InvalidInput, NotFound
from core.models import ClsLabel
from tests.factories import make_class, make_dataset, make_dataset_image


def _by_code(report) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["code"], []).append(finding)
    return found


def test_health_check_finds_every_problem(stack):
    with stack.session() as session:
        dataset = make_dataset(session, "sick")
        big, small = make_class(session, "big"), make_class(session, "small")
        seed = 0
        big_ids = []
        for split in ["train"] * 20 + ["val"] * 3 + ["test"] * 3:
            big_ids.append(make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[big], split=split).id)
            seed += 1
        small_ids = [make_dataset_image(session, stack.storage, dataset, seed=500 + i, classes=[small],
                                        split="train").id for i in range(2)]
        # The same bytes in train and test (leakage), and a copy labeled differently (conflict).
        leak_train = make_dataset_image(session, stack.storage, dataset, seed=900, classes=[big], split="train")
        leak_test = make_dataset_image(session, stack.storage, dataset, seed=900, classes=[small], split="test")
        # A PNG in train and its JPEG re-encode in val: a near-duplicate leak.
        near = [make_dataset_image(session, stack.storage, dataset, seed=950, classes=[big], split="train",
                                   phash=True),
                make_dataset_image(session, stack.storage, dataset, seed=950, classes=[big], split="val",
                                   near_copy=True)]
        unlabeled = make_dataset_image(session, stack.storage, dataset, seed=990)
        skipped = make_dataset_image(session, stack.storage, dataset, seed=991)
        no_split = make_dataset_image(session, stack.storage, dataset, seed=992, classes=[big])
        tiny = make_dataset_image(session, stack.storage, dataset, seed=993, classes=[big], split="train")
        tiny.width, tiny.height = 20, 24
        wide = make_dataset_image(session, stack.storage, dataset, seed=994, classes=[big], split="train")
        wide.width, wide.height = 1200, 100
        session.add(ClsLabel(dataset_id=dataset.id, image_id=big_ids[0], class_id=small.id))  # two labels
        dataset_id = dataset.id
    with stack.session() as session:
        from core.models import ClsDatasetImage

        session.query(ClsDatasetImage).filter_by(image_id=skipped.id).update({"status": "skipped"})
    with stack.session() as session:
        report = health_check(session=session, dataset_id=dataset_id)
    found = _by_code(report)

    assert report["images"] == 37 and report["labeled"] == 35
    assert (report["unlabeled"], report["skipped"]) == (1, 1)
    counts = {row["name"]: row["count"] for row in report["per_class"]}
    assert counts == {"big": 32, "small": 4}
    assert report["imbalance_ratio"] == pytest.approx(8.0)
    assert found["class_imbalance"][0]["class"] == "small"
    assert [f["class"] for f in found["small_class"]] == ["small"]
    assert found["small_class"][0]["count"] == 4
    assert found["unlabeled"][0]["image_ids"] == [str(unlabeled.id)]
    assert found["skipped"][0]["image_ids"] == [str(skipped.id)]
    assert found["no_split"][0]["image_ids"] == [str(no_split.id)]
    assert found["several_labels"][0]["image_ids"] == [str(big_ids[0])]
    assert found["several_labels"][0]["severity"] == "error"
    assert set(found["exact_duplicate_leakage"][0]["image_ids"]) == {str(leak_train.id), str(leak_test.id)}
    assert set(found["near_duplicate_leakage"][0]["image_ids"]) == {str(i.id) for i in near}
    assert set(found["duplicate_label_conflict"][0]["image_ids"]) == {str(leak_train.id), str(leak_test.id)}
    assert [f["class"] for f in found["missing_from_val"]] == ["small"]
    assert "missing_from_test" not in found  # the leaked copy put "small" in test
    assert set(found["missing_from_val"][0]["image_ids"]) == {str(i) for i in small_ids} | {
        str(big_ids[0]), str(leak_test.id)}
    assert found["tiny_images"][0]["image_ids"] == [str(tiny.id)]
    assert found["extreme_aspect"][0]["image_ids"] == [str(wide.id)]
    with stack.session() as session:
        exact_only = health_check(session=session, dataset_id=dataset_id, near_duplicate_threshold=0)
    assert "near_duplicate_leakage" not in _by_code(exact_only) and "exact_duplicate_leakage" in _by_code(exact_only)
    severities = [f["severity"] for f in report["findings"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)


def test_a_healthy_dataset_has_no_warnings(embedded_stack):
    stack = embedded_stack
    with stack.session() as session:
        dataset = make_dataset(session, "fine")
        classes = [make_class(session, name) for name in ("a", "b")]
        seed = 0
        for cls in classes:
            for split in ["train"] * 8 + ["val", "test"]:
                make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls], split=split)
                seed += 1
        dataset_id = dataset.id
    with stack.session() as session:
        report = health_check(session=session, dataset_id=dataset_id)
    assert report["findings"] == []
    assert report["imbalance_ratio"] == 1.0


def test_bad_options_and_missing_dataset(embedded_stack):
    with embedded_stack.session() as session:
        with pytest.raises(NotFound):
            health_check(session=session, dataset_id=uuid.uuid4())
        with pytest.raises(InvalidInput, match="min_images_per_class"):
            health_check(session=session, dataset_id=uuid.uuid4(), min_images_per_class=-1)
        with pytest.raises(InvalidInput, match="max_aspect_ratio"):
            health_check(session=session, dataset_id=uuid.uuid4(), max_aspect_ratio=0.5)
