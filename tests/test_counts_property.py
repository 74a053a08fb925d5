"""Property: after any sequence of add/remove/label/clear/bulk/merge/delete/split operations, every
stored count (the trigger-kept unassigned labeled count too) equals what the rows say (computed here in Python from the raw rows), and no single-label image
carries two labels. Runs on SQLite and Postgres."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from core.datasets.classes import create_class, delete_class, merge_classes
from core.datasets.dataset import (
    add_images_to_dataset,
    create_dataset,
    delete_dataset,
    remove_images_from_dataset,
    set_split,
)
from core.datasets.splits import auto_split
from core.errors import UserError
from core.labeling.bulk_labels import bulk_clear_labels, bulk_set_label
from core.labeling.labels import clear_labels, set_labels, toggle_label
from core.models import ClsClass, ClsDataset, ClsDatasetImage, ClsImage, ClsLabel, ClsLabelChange
from tests.factories import ADMIN, make_image_row

N_IMAGES = 4
pick = st.integers(min_value=0, max_value=20)
picks = st.lists(pick, min_size=1, max_size=4)
label_ops = st.one_of(
    st.tuples(st.just("set"), pick, pick, st.lists(pick, min_size=1, max_size=2)),
    st.tuples(st.just("clear"), pick, pick),
    st.tuples(st.just("toggle"), pick, pick, pick),
)
other_ops = st.one_of(
    st.tuples(st.just("add"), pick, picks),
    st.tuples(st.just("remove"), pick, picks),
    st.tuples(st.just("bulk"), pick, picks, pick, st.sampled_from(["replace", "add", "remove"])),
    st.tuples(st.just("bulk_clear"), pick, picks),
    st.tuples(st.just("merge"), picks, pick),
    st.tuples(st.just("delete_class"), pick),
    st.tuples(st.just("create_class")),
    st.tuples(st.just("delete_image"), pick),
    st.tuples(st.just("delete_dataset"), pick),
    st.tuples(st.just("split"), pick, picks, st.sampled_from(["train", "val", "test", "unassigned"])),
    st.tuples(st.just("auto_split"), pick),
)
# single-image label writes (the labeling page's path, with delta counts) are most of the mix
operations = st.one_of(label_ops, label_ops, other_ops)


def _reset(session, storage):
    for model in (ClsLabelChange, ClsLabel, ClsDatasetImage, ClsDataset, ClsClass, ClsImage):
        session.execute(delete(model))
    create_dataset(actor=ADMIN, session=session, name="single", task_type="single_label")
    create_dataset(actor=ADMIN, session=session, name="multi", task_type="multi_label")
    for name in ("a", "b", "c"):
        create_class(actor=ADMIN, session=session, name=name)
    images = [make_image_row(session, storage, seed=seed).id for seed in range(N_IMAGES)]
    for dataset in session.scalars(select(ClsDataset)).all():  # start with shared images: more overlap
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=images[:3])


def _ids(session, model):
    return sorted(session.scalars(select(model.id)).all(), key=str)


def _choose(items, index):
    return items[index % len(items)] if items else None


def _apply(session, op, counter):
    datasets, classes, images = _ids(session, ClsDataset), _ids(session, ClsClass), _ids(session, ClsImage)
    if not datasets or not images:
        return
    kind, *args = op
    dataset = _choose(datasets, args[0]) if kind not in ("merge", "delete_class", "create_class", "delete_image") else None
    if kind == "add":
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset, image_ids=[_choose(images, i) for i in args[1]])
    elif kind == "remove":
        remove_images_from_dataset(actor=ADMIN, session=session, dataset_id=dataset, image_ids=[_choose(images, i) for i in args[1]])
    elif kind == "set" and classes:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset, image_id=_choose(images, args[1]),
                   class_ids=[_choose(classes, i) for i in args[2]])
    elif kind == "clear":
        clear_labels(actor=ADMIN, session=session, dataset_id=dataset, image_id=_choose(images, args[1]))
    elif kind == "toggle" and classes:
        toggle_label(actor=ADMIN, session=session, dataset_id=dataset, image_id=_choose(images, args[1]),
                     class_id=_choose(classes, args[2]))
    elif kind == "bulk" and classes:
        bulk_set_label(actor=ADMIN, session=session, dataset_id=dataset, image_ids=[_choose(images, i) for i in args[1]],
                       class_id=_choose(classes, args[2]), mode=args[3])
    elif kind == "bulk_clear":
        bulk_clear_labels(actor=ADMIN, session=session, dataset_id=dataset, image_ids=[_choose(images, i) for i in args[1]])
    elif kind == "merge" and classes:
        merge_classes(actor=ADMIN, session=session, source_ids=[_choose(classes, i) for i in args[0]],
                      target_id=_choose(classes, args[1]))
    elif kind == "delete_class" and classes:
        delete_class(actor=ADMIN, session=session, class_id=_choose(classes, args[0]))
    elif kind == "create_class":
        counter[0] += 1
        create_class(actor=ADMIN, session=session, name=f"new{counter[0]}")
    elif kind == "delete_image":
        from core.library.images import delete_images
        from core.storage import get_storage

        delete_images(actor=ADMIN, session=session, storage=get_storage(), image_ids=[_choose(images, args[0])])
    elif kind == "delete_dataset":
        delete_dataset(actor=ADMIN, session=session, dataset_id=dataset)
    elif kind == "split":
        set_split(actor=ADMIN, session=session, dataset_id=dataset, image_ids=[_choose(images, i) for i in args[1]],
                  split=args[2])
    elif kind == "auto_split":
        from core.storage import get_storage

        auto_split(actor=ADMIN, session=session, dataset_id=dataset, storage=get_storage())


def _check(session):
    """Counts recomputed in Python from the raw rows, independent of the services' SQL."""
    links = session.execute(select(ClsDatasetImage.dataset_id, ClsDatasetImage.image_id,
                                   ClsDatasetImage.split)).all()
    labels = session.execute(select(ClsLabel.dataset_id, ClsLabel.image_id, ClsLabel.class_id)).all()
    members = defaultdict(set)
    unassigned = defaultdict(set)
    for dataset_id, image_id, split in links:
        members[dataset_id].add(image_id)
        if split in (None, "unassigned"):
            unassigned[dataset_id].add(image_id)
    per_image = defaultdict(list)
    for dataset_id, image_id, class_id in labels:
        per_image[(dataset_id, image_id)].append(class_id)
        assert image_id in members[dataset_id], "a label on an image that is not in the dataset"
    for dataset in session.scalars(select(ClsDataset)).all():
        mine = {key: value for key, value in per_image.items() if key[0] == dataset.id}
        assert dataset.image_count == len(members[dataset.id]), dataset.name
        assert dataset.labeled_image_count == len(mine), dataset.name
        assert dataset.class_count == len({c for value in mine.values() for c in value}), dataset.name
        assert dataset.unassigned_labeled_count == len({image for _, image in mine} & unassigned[dataset.id]), \
            dataset.name
        if dataset.task_type == "single_label":
            assert all(len(value) == 1 for value in mine.values()), "single-label image with two labels"
    images_per_class = defaultdict(set)
    for _, image_id, class_id in labels:
        images_per_class[class_id].add(image_id)
    for row in session.scalars(select(ClsClass)).all():
        assert row.image_count == len(images_per_class[row.id]), row.name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(operations, min_size=4, max_size=25))
def test_counts_match_fresh_counts_after_any_sequence(db_stack, sequence):
    with db_stack.session() as session:
        _reset(session, db_stack.storage)
    counter = [0]
    for op in sequence:
        try:
            with db_stack.session() as session:
                session.expire_on_commit = False
                _apply(session, op, counter)
        except UserError:
            pass  # refused input (image not in dataset, single-label with two classes…) changes nothing
        with db_stack.session() as session:
            _check(session)
