"""core/datasets/label_space.py: a dataset's ordered classes: edited by admins (add, reorder, remove unused),
kept whole by every label write, followed by keys, versions, export, health and class merges."""

from __future__ import annotations

import csv
import io

import pytest

from core.datasets import label_space, label_space_edits
from core.errors import Conflict, NotFound, PermissionDenied
from core.labeling import bulk_labels, labels
from core.models import ClsDataset
from core.users import User, operator_user, user_id_for
from tests.factories import make_class, make_dataset, make_dataset_image

ADMIN = operator_user()


def _space_names(session, dataset_id) -> list[str]:
    return [c.name for c in label_space.label_space(session=session, dataset_id=dataset_id)]


def test_admins_add_reorder_and_remove_unused_classes(stack, monkeypatch):
    from core.config import reset_settings_cache

    with stack.session() as session:
        dataset = make_dataset(session, "space")
        zebra, apple = make_class(session, "zebra"), make_class(session, "apple")
        dataset_id = dataset.id
    with stack.session() as session:
        added = label_space_edits.add_classes(session=session, actor=ADMIN, dataset_id=dataset_id,
                                        class_ids=[zebra.id, apple.id], new_names=["mango"])
        assert len(added) == 3 and _space_names(session, dataset_id) == ["zebra", "apple", "mango"]
        assert label_space_edits.add_classes(session=session, actor=ADMIN, dataset_id=dataset_id, class_ids=[apple.id]) == []
        label_space_edits.reorder_classes(session=session, actor=ADMIN, dataset_id=dataset_id, class_ids=[apple.id])
        assert _space_names(session, dataset_id) == ["apple", "zebra", "mango"]
    with stack.session() as session:
        image = make_dataset_image(session, stack.storage, session.get(ClsDataset, dataset_id), seed=1)
        labels.set_labels(session=session, actor=ADMIN, dataset_id=dataset_id, image_id=image.id, class_ids=[zebra.id])
        revision = session.get(ClsDataset, dataset_id).revision
    with pytest.raises(Conflict, match="still uses 'zebra' \\(1 labels\\)"), stack.session() as session:
        label_space_edits.remove_classes(session=session, actor=ADMIN, dataset_id=dataset_id, class_ids=[zebra.id])
    with stack.session() as session:
        assert label_space_edits.remove_classes(session=session, actor=ADMIN, dataset_id=dataset_id,
                                          class_ids=[apple.id]) == 1
        assert _space_names(session, dataset_id) == ["zebra", "mango"]
        assert session.get(ClsDataset, dataset_id).revision > revision  # pages redraw their keys
    with pytest.raises(NotFound), stack.session() as session:
        label_space_edits.remove_classes(session=session, actor=ADMIN, dataset_id=dataset_id, class_ids=[apple.id])
    monkeypatch.setenv("ROLES", "lab@x.com=labeler")
    reset_settings_cache()
    labeler = User(id=user_id_for("lab@x.com"), email="lab@x.com", name="lab", role="labeler")
    with pytest.raises(PermissionDenied, match="changing a dataset's classes needs the admin role"):
        with stack.session() as session:
            label_space_edits.add_classes(session=session, actor=labeler, dataset_id=dataset_id, class_ids=[apple.id])
    with pytest.raises(PermissionDenied), stack.session() as session:
        label_space_edits.reorder_classes(session=session, actor=None, dataset_id=dataset_id, class_ids=[])


def test_every_label_write_keeps_its_class_in_the_space(db_stack):
    """Imports, AI labels and bulk labels with a class the space lacks append it: a version, an export
    and the keys always cover every class a label uses."""
    with db_stack.session() as session:
        dataset = make_dataset(session, "writes", task_type="multi_label")
        a, b, c = (make_class(session, n) for n in ("a", "b", "c"))
        images = [make_dataset_image(session, db_stack.storage, dataset, seed=i).id for i in range(3)]
        labels.set_labels(session=session, actor=ADMIN, dataset_id=dataset.id, image_id=images[0], class_ids=[b.id],
                          is_ai_generated=True, confidence=0.7, ai_model="m")
        bulk_labels.set_label_batch(session=session, actor=ADMIN, dataset_id=dataset.id, image_ids=images[1:], class_id=a.id,
                               mode="add")
        assert _space_names(session, dataset.id) == ["b", "a"]
        assert [k.name for k in label_space.keyed_classes(session=session, dataset_id=dataset.id, user_id=None)] \
            == ["b", "a"] and c.id not in label_space.space_class_ids(session, dataset.id)


def test_versions_export_and_health_follow_the_space(stack):
    from core.datasets.export import collect_export
    from core.datasets.health import health_check
    from core.datasets.versions import create_version

    with stack.session() as session:
        dataset = make_dataset(session, "follow")
        zebra, apple, empty = (make_class(session, n) for n in ("zebra", "apple", "empty"))
        label_space_edits.add_classes(session=session, actor=ADMIN, dataset_id=dataset.id,
                                class_ids=[zebra.id, apple.id, empty.id])
        for seed, (cls, split) in enumerate([(apple, "train"), (zebra, "train"), (apple, "val"), (zebra, "test")]):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[cls], split=split)
        dataset_id = dataset.id
    with stack.session() as session:
        version = create_version(session=session, actor=ADMIN, storage=stack.storage, dataset_id=dataset_id)
        assert version.class_names == ["zebra", "apple"]  # the space's order; a class with no image left out
        plan = collect_export(session=session, storage=stack.storage, dataset_id=dataset_id, fmt="multilabel-csv")
        header = next(csv.reader(io.StringIO(next(iter(plan.csv_files.values())))))
        assert header == ["filename", "zebra", "apple", "empty"]
        report = health_check(session=session, dataset_id=dataset_id, min_images_per_class=1,
                              near_duplicate_threshold=0)
        assert [r["name"] for r in report["per_class"] if r["count"] == 0] == ["empty"]
        assert any(f["code"] == "empty_class" and f["class"] == "empty" for f in report["findings"])


def test_merging_classes_puts_the_target_in_the_sources_place(db_stack):
    from core.datasets.classes import merge_classes

    with db_stack.session() as session:
        dataset = make_dataset(session, "merge")
        first, source, target = (make_class(session, n) for n in ("first", "source", "target"))
        label_space_edits.add_classes(session=session, actor=ADMIN, dataset_id=dataset.id,
                                class_ids=[first.id, source.id])
        make_dataset_image(session, db_stack.storage, dataset, seed=1, classes=[source])
        merge_classes(session=session, actor=ADMIN, source_ids=[source.id], target_id=target.id)
        assert _space_names(session, dataset.id) == ["first", "target"]
