"""Datasets: create/edit/delete with validation, membership, split, the filtered grid, counts."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from core.datasets.classes import create_class
from core.datasets.dataset import (
    add_images_to_dataset,
    create_dataset,
    delete_dataset,
    detach_images_everywhere,
    get_dataset_by_name,
    library_image_ids,
    list_datasets,
    recount_dataset,
    remove_images_from_dataset,
    set_split,
    split_counts,
    update_dataset,
)
from core.datasets.grid import GridFilters, dataset_grid, dataset_image_ids
from core.errors import Conflict, InvalidInput, NotFound
from core.labeling.counts import count_mismatches
from core.labeling.labels import mark_reviewed, set_labels, skip_image
from core.models import ClsClass, ClsDataset, ClsLabel
from tests.apptest_tools import component_data
from tests.factories import ADMIN, add_to_space, make_image_row


def test_create_get_list(db_stack):
    with db_stack.session() as session:
        created = create_dataset(actor=ADMIN, session=session, name=" shelf ", task_type="multi_label", description=" d ",
                                 split_ratios={"train": 0.7, "val": 0.2, "test": 0.1},
                                 preprocessing={"image_size": 256})
        assert get_dataset_by_name(session=session, name="shelf").id == created.id
        assert created.preprocessing == {"image_size": 256, "normalize": True}
        assert [d.name for d in list_datasets(session=session)] == ["shelf"]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name=""), InvalidInput, "empty"),
    (dict(name="x" * 201), InvalidInput, "at most 200"),
    (dict(name="a", task_type="detection"), InvalidInput, "task type"),
    (dict(name="a", split_ratios={"train": 0.5, "val": 0.1, "test": 0.1}), InvalidInput, "add up to 1"),
    (dict(name="a", split_ratios={"train": 1.5, "val": -0.5}), InvalidInput, "between 0 and 1"),
    (dict(name="a", split_ratios={"train": "x"}), InvalidInput, "numbers"),
    (dict(name="a", split_ratios={"holdout": 1.0}), InvalidInput, "keys"),
    (dict(name="a", split_ratios={"train": 0, "val": 0.5, "test": 0.5}), InvalidInput, "train ratio"),
    (dict(name="a", preprocessing={"image_size": 5}), InvalidInput, "image_size"),
    (dict(name="a", preprocessing={"image_size": "224"}), InvalidInput, "image_size"),
])
def test_create_bad_input(db_stack, kwargs, error, message):
    with pytest.raises(error, match=message), db_stack.session() as session:
        create_dataset(actor=ADMIN, session=session, **kwargs)


def test_duplicate_and_unknown_names(db_stack):
    with db_stack.session() as session:
        create_dataset(actor=ADMIN, session=session, name="a")
    with pytest.raises(Conflict), db_stack.session() as session:
        create_dataset(actor=ADMIN, session=session, name="a")
    with pytest.raises(NotFound, match="no dataset named"), db_stack.session() as session:
        get_dataset_by_name(session=session, name="b")


def _world(stack, task_type="single_label", images=4):
    with stack.session() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name="ds", task_type=task_type)
        classes = [create_class(actor=ADMIN, session=session, name=n).id for n in ("cat", "dog")]
        add_to_space(session, dataset.id, classes)  # the dataset's classes: cat = key 1, dog = key 2
        image_ids = [make_image_row(session, stack.storage, seed=i, folder="f" if i % 2 else None,
                                    tags=["even"] if i % 2 == 0 else []).id for i in range(images)]
        return dataset.id, classes, image_ids


def test_add_is_idempotent_and_refuses_unknown_ids(stack):
    dataset_id, _, images = _world(stack)
    with stack.session() as session:
        assert add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[:3], split="train") == 3
        assert add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images) == 1
        assert session.get(ClsDataset, dataset_id).image_count == 4
        assert split_counts(session=session, dataset_id=dataset_id) == {"train": 3, "unassigned": 1}
    with pytest.raises(NotFound, match="not in the library"), stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=[images[0], uuid.uuid4()])
    with pytest.raises(InvalidInput, match="not a valid id"), stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=["../etc"])
    with pytest.raises(InvalidInput, match="split"), stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, split="holdout")
    with stack.session() as session:
        assert session.get(ClsDataset, dataset_id).image_count == 4


def test_remove_and_detach_keep_counts(stack):
    dataset_id, (cat, dog), images = _world(stack)
    with stack.session() as session:
        other = create_dataset(actor=ADMIN, session=session, name="other").id
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=other, image_ids=images[:2])
        for image_id in images:
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[cat])
        set_labels(actor=ADMIN, session=session, dataset_id=other, image_id=images[0], class_ids=[dog])
        assert remove_images_from_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[2:]) == 2
        assert remove_images_from_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[2:]) == 0
        assert count_mismatches(session=session) == []
        assert session.get(ClsClass, cat).image_count == 2
        assert detach_images_everywhere(actor=ADMIN, session=session, image_ids=images[:1]) == 2
        assert count_mismatches(session=session) == []
        assert session.get(ClsClass, dog).image_count == 0


def test_update_and_delete(stack):
    dataset_id, (cat, dog), images = _world(stack, task_type="multi_label")
    with stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat, dog])
        update_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, name="renamed", description="x")
        with pytest.raises(Conflict, match="several labels"):
            update_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, task_type="single_label")
        with pytest.raises(InvalidInput, match="cannot change"):
            update_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_count=5)
    with stack.session() as session:
        result = delete_dataset(actor=ADMIN, session=session, dataset_id=dataset_id)
        assert result == {"name": "renamed", "images": 4, "labels": 2}
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsLabel)) == 0
        assert session.get(ClsClass, cat).image_count == 0
        assert count_mismatches(session=session) == []


def test_set_split_and_recount(stack):
    dataset_id, _, images = _world(stack)
    with stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        assert set_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[:2], split="val") == 2
        assert set_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[:2], split="val") == 0
        with pytest.raises(InvalidInput, match="split"):
            set_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images, split="holdout")
        session.get(ClsDataset, dataset_id).image_count = 99  # a count gone wrong by hand
        session.flush()
        recount_dataset(actor=ADMIN, session=session, dataset_id=dataset_id)
        assert count_mismatches(session=session) == []


def test_grid_filters(stack):
    dataset_id, (cat, dog), images = _world(stack, images=6)
    with stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1], class_ids=[dog],
                   is_ai_generated=True, confidence=0.9, ai_model="m")
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[2], class_ids=[dog],
                   is_ai_generated=True, confidence=0.4, ai_model="m")
        mark_reviewed(session=session, dataset_id=dataset_id, image_id=images[1], actor=ADMIN)
        skip_image(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[3])
        set_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[4:], split="test")

        def ids(**kwargs):
            return set(dataset_image_ids(session=session, dataset_id=dataset_id, filters=GridFilters(**kwargs)))

        assert ids(class_id=dog) == {images[1], images[2]}
        assert ids(unlabeled=True) == {images[3], images[4], images[5]}
        assert ids(split="test") == {images[4], images[5]}
        assert ids(status="skipped") == {images[3]}
        assert ids(source="ai") == {images[1], images[2]} and ids(source="manual") == {images[0]}
        assert ids(reviewed=True) == {images[1]} and ids(source="ai", reviewed=False) == {images[2]}
        total, page = dataset_grid(session=session, dataset_id=dataset_id, offset=0, limit=4)
        assert total == 6 and len(page) == 4 and [lab.class_id for lab in page[0].labels] == [cat]
        total, page = dataset_grid(session=session, dataset_id=dataset_id, offset=4, limit=4)
        assert total == 6 and len(page) == 2
        with pytest.raises(InvalidInput):
            dataset_grid(session=session, dataset_id=dataset_id, filters=GridFilters(split="nope"))


@pytest.mark.parametrize("rare_class_share", [1 / 8, 1.0])
def test_grid_pages_and_totals_match_the_filtered_ids(stack, monkeypatch, rare_class_share):
    """Totals read from the dataset's counts (no filter, unlabeled, one class) or from its labels alone
    (label filters) equal the counted ones, and the pages (ids first, then joined; on Postgres a rare
    class's by id, which share 1.0 forces) walk the filtered ids in order with nothing skipped or
    repeated."""
    from core.datasets import grid

    monkeypatch.setattr(grid, "RARE_CLASS_SHARE", rare_class_share)
    dataset_id, (cat, dog), images = _world(stack, images=7)
    with stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[cat])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[5], class_ids=[dog])
        for image_id in images[1], images[6]:
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[dog],
                       is_ai_generated=True, confidence=0.5, ai_model="m")
        mark_reviewed(session=session, dataset_id=dataset_id, image_id=images[6], actor=ADMIN)
        skip_image(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[3])
        set_split(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[4:], split="val")
        for filters in (GridFilters(), GridFilters(unlabeled=True), GridFilters(unlabeled=True, split="val"),
                        GridFilters(class_id=dog), GridFilters(class_id=cat), GridFilters(class_id=dog, split="val"),
                        GridFilters(status="skipped"), GridFilters(source="ai"), GridFilters(source="manual"),
                        GridFilters(source="ai", reviewed=False), GridFilters(reviewed=True),
                        GridFilters(class_id=dog, source="ai", reviewed=True)):
            expected = dataset_image_ids(session=session, dataset_id=dataset_id, filters=filters)
            walked = []
            for offset in range(0, len(expected) + 3, 3):
                total, page = dataset_grid(session=session, dataset_id=dataset_id, filters=filters, offset=offset,
                                           limit=3)
                assert total == len(expected), filters
                walked += [item.image_id for item in page]
            assert walked == expected, filters
        assert dataset_grid(session=session, dataset_id=dataset_id, filters=GridFilters(unlabeled=True))[0] == 3
        assert dataset_grid(session=session, dataset_id=dataset_id, filters=GridFilters(source="ai"))[0] == 2
        assert dataset_grid(session=session, dataset_id=uuid.uuid4()) == (0, [])


def test_grid_label_filter_totals_when_an_image_has_several_labels(db_stack):
    """Each label filter is met by some label of the image, not necessarily the same one: an image
    with a reviewed AI label and an unreviewed manual one is among "AI, not reviewed". The total read
    from one partial index (when every image has one label) and the merged one agree with the ids."""
    dataset_id, (cat, dog), images = _world(db_stack, task_type="multi_label", images=4)
    filters = GridFilters(source="ai", reviewed=False)
    with db_stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        for image_id in images[:2]:
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[cat],
                       is_ai_generated=True, confidence=0.5, ai_model="m")
        mark_reviewed(session=session, dataset_id=dataset_id, image_id=images[0], actor=ADMIN)
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[2], class_ids=[dog])
        assert dataset_grid(session=session, dataset_id=dataset_id, filters=filters)[0] == 1  # one label each
        # a manual label beside the reviewed AI one (a labeling save would make both manual: an import's way)
        session.add(ClsLabel(dataset_id=dataset_id, image_id=images[0], class_id=dog))
        session.flush()
        recount_dataset(actor=ADMIN, session=session, dataset_id=dataset_id)
        expected = dataset_image_ids(session=session, dataset_id=dataset_id, filters=filters)
        assert set(expected) == {images[0], images[1]}
        assert dataset_grid(session=session, dataset_id=dataset_id, filters=filters)[0] == 2


def test_library_filters(stack):
    dataset_id, _, images = _world(stack)
    with stack.session() as session:
        assert set(library_image_ids(session=session, folder="f")) == {images[1], images[3]}
        assert set(library_image_ids(session=session, tags=["even"])) == {images[0], images[2]}
        assert set(library_image_ids(session=session, search="img_3")) == {images[3]}
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images[:1])
        assert images[0] not in library_image_ids(session=session, not_in_dataset=dataset_id)


def test_cli_create_list_add_images(stack, capsys):
    import json

    from core.cli import main

    with stack.session() as session:
        images = [make_image_row(session, stack.storage, seed=i, folder="shelf" if i < 2 else "other").id
                  for i in range(3)]
    assert main(["datasets", "create", "ds", "--task", "multi_label", "--train", "0.6", "--val", "0.4"]) == 0
    assert json.loads(capsys.readouterr().out)["split_ratios"] == {"train": 0.6, "val": 0.4, "test": 0.0}
    assert main(["datasets", "add-images", "ds", "--folder", "shelf"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2
    assert main(["datasets", "add-images", "ds", "--ids", *map(str, images), "--split", "train"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["added"], result["already_in_dataset"], result["image_count"]) == (1, 2, 3)
    assert main(["datasets", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["datasets"]
    assert [(d["name"], d["image_count"], d["labeled_pct"]) for d in listed] == [("ds", 3, 0.0)]
    for argv, message in [(["datasets", "create", "ds"], "already exists"),
                          (["datasets", "create", "x", "--train", "0.9"], "add up to 1"),
                          (["datasets", "create", "x", "--task", "boxes"], "invalid choice"),
                          (["datasets", "add-images", "ds"], "give --ids or at least one filter"),
                          (["datasets", "add-images", "ds", "--ids", "nope"], "not a valid id"),
                          (["datasets", "add-images", "ds", "--ids", str(uuid.uuid4())], "not in the library"),
                          (["datasets", "add-images", "ghost", "--folder", "shelf"], "no dataset named")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_datasets_page_create_add_label(embedded_stack):
    """The Datasets page through AppTest: create, add by filters, select a page and press a class key."""
    from streamlit.testing.v1 import AppTest

    with embedded_stack.session() as session:
        for seed in range(5):
            make_image_row(session, embedded_stack.storage, seed=seed, folder="shelf" if seed < 4 else None)
        bird = create_class(actor=ADMIN, session=session, name="bird").id
        dog = create_class(actor=ADMIN, session=session, name="dog").id
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/datasets.py").run()
    at.text_input[0].input("shelves")
    at.button(key="FormSubmitter:ds_create-Create dataset").click().run()
    assert not at.exception
    with embedded_stack.session() as session:
        dataset_id = get_dataset_by_name(session=session, name="shelves").id
    assert at.query_params["dataset"] == str(dataset_id)
    with embedded_stack.session() as session:  # an admin gives the dataset its classes (Settings tab)
        add_to_space(session, dataset_id, [bird, dog])
    at.text_input(key=f"dsadd_folder_{dataset_id}").input("shelf").run()
    at.button(key=f"dsadd_filters_go_{dataset_id}").click().run()
    assert [s.value for s in at.success] == ["4 images added."]
    at.run()
    [grid] = component_data(at, "thumbnail_grid")
    assert len(grid["tiles"]) == 4
    at.button(key=f"dsgrid_{dataset_id}_sel_page").click().run()
    at.button(key=f"dskey_{dataset_id}_2").click().run()
    assert not at.exception
    assert at.toast[0].value == "4 images changed: dog"
    with embedded_stack.session() as session:
        dataset = session.get(ClsDataset, dataset_id)
        assert (dataset.image_count, dataset.labeled_image_count, dataset.class_count) == (4, 4, 1)
        assert session.get(ClsClass, dog).image_count == 4
    at.selectbox(key=f"dsf_label_{dataset_id}").set_value("unlabeled").run()
    assert component_data(at, "thumbnail_grid") == [] and "No images match" in at.info[0].value


def test_grid_number_key_toggles_a_class_on_multi_label(embedded_stack):
    """Multi-label: the key adds the class to the selection; pressed again on the same images, removes it."""
    from streamlit.testing.v1 import AppTest

    dataset_id, (cat, dog), images = _world(embedded_stack, task_type="multi_label", images=3)
    with embedded_stack.session() as session:
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=images)
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[dog])
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/datasets.py")
    at.query_params["dataset"] = str(dataset_id)
    at.run()

    def press(key: str, picks: list[int]) -> None:
        # What the grid's callback does with the browser's value when tiles are clicked there.
        selection = at.session_state[f"dsgrid_{dataset_id}"]["selection"]
        selection.from_browser({"epoch": selection.epoch, "page": [str(i) for i in images],
                                "selected": [str(images[i]) for i in picks]})
        at.run()
        [grid] = component_data(at, "thumbnail_grid")
        assert sorted(grid["selected"]) == sorted(str(images[i]) for i in picks)
        at.button(key=f"dskey_{dataset_id}_{key}").click().run()
        assert not at.exception

    def label_sets():
        with embedded_stack.session() as session:
            rows = session.execute(select(ClsLabel.image_id, ClsLabel.class_id)).all()
        return [{c for i, c in rows if i == image_id} for image_id in images]

    press("1", [0, 1])  # the dataset's classes in order: 1 = cat, 2 = dog
    assert label_sets() == [{cat, dog}, {cat}, set()]
    press("1", [0, 1])
    assert label_sets() == [{dog}, set(), set()]
    with embedded_stack.session() as session:
        assert count_mismatches(session=session) == []


def test_grid_chips_carry_class_names_as_text_and_refuse_odd_colors():
    from types import SimpleNamespace

    from ui.dataset_grid import tile_chips

    class_id = uuid.uuid4()
    label = SimpleNamespace(class_id=class_id, is_ai_generated=True, confidence=0.42, is_reviewed=False)
    chips = tile_chips([label], {class_id: {"name": "<img src=x onerror=alert(1)>", "color": "red;x:url(y)"}},
                       "val", "review")
    # text, drawn with textContent by the component (tests/test_user_text_browser.py checks it in a browser)
    assert chips[0] == {"text": "<img src=x onerror=alert(1)> · AI 42%", "color": "#6B7280", "filled": True}
    assert [c["text"] for c in chips[1:]] == ["val", "review"]


def test_unassigned_labeled_count_is_kept_exact_by_every_kind_of_write(db_stack):
    """cls_datasets.unassigned_labeled_count (database triggers, core.models.dataset_aggregates) equals
    a fresh COUNT after labels set, added and cleared (one image, bulk, multi-label), splits set by
    hand and by auto_split, images removed and deleted (through the service and by a bare cascade),
    a class deleted, and a rolled-back write; a writer sees its own uncommitted change."""
    from sqlalchemy import delete

    from core.datasets.classes import delete_class
    from core.datasets.splits import auto_split
    from core.datasets.versions import unassigned_labeled_count
    from core.labeling.bulk_labels import bulk_clear_labels, bulk_set_label
    from core.labeling.labels import clear_labels, toggle_label
    from core.library.images import delete_images
    from core.models import ClsDatasetImage, ClsImage

    dataset_id, (cat, dog), images = _world(db_stack, task_type="multi_label", images=10)
    with db_stack.session() as session:
        other = create_dataset(actor=ADMIN, session=session, name="other").id
        add_to_space(session, other, [cat])

    def fresh(session, dataset):
        return session.scalar(select(func.count()).select_from(ClsDatasetImage).where(
            ClsDatasetImage.dataset_id == dataset,
            ClsDatasetImage.split.is_(None) | (ClsDatasetImage.split == "unassigned"),
            select(ClsLabel.id).where(ClsLabel.dataset_id == dataset,
                                      ClsLabel.image_id == ClsDatasetImage.image_id).exists()))

    def check(session, expected):
        session.flush()
        kept = unassigned_labeled_count(session=session, dataset_id=dataset_id)
        assert (kept, fresh(session, dataset_id)) == (expected, expected)
        assert unassigned_labeled_count(session=session, dataset_id=other) == fresh(session, other)

    def write(expected, action):
        with db_stack.session() as session:
            action(session)
            check(session, expected)  # the writer's own change
        with db_stack.session() as session:
            check(session, expected)  # committed

    labels = dict(actor=ADMIN, dataset_id=dataset_id)
    write(0, lambda s: add_images_to_dataset(session=s, **labels, image_ids=images[:8]))
    write(0, lambda s: add_images_to_dataset(session=s, **labels, image_ids=images[8:], split="train"))
    write(1, lambda s: set_labels(session=s, **labels, image_id=images[0], class_ids=[cat]))
    write(2, lambda s: set_labels(session=s, **labels, image_id=images[1], class_ids=[cat, dog]))
    write(2, lambda s: toggle_label(session=s, **labels, image_id=images[1], class_id=dog))  # still labeled
    write(2, lambda s: set_labels(session=s, **labels, image_id=images[8], class_ids=[cat]))  # in train
    write(1, lambda s: clear_labels(session=s, **labels, image_id=images[0]))
    write(5, lambda s: bulk_set_label(session=s, **labels, image_ids=images[2:6], class_id=dog))
    write(6, lambda s: bulk_set_label(session=s, **labels, image_ids=images[1:7], class_id=cat, mode="add"))
    write(5, lambda s: bulk_clear_labels(session=s, **labels, image_ids=[images[6]]))
    write(3, lambda s: set_split(session=s, **labels, image_ids=images[1:3], split="val"))
    write(5, lambda s: set_split(session=s, **labels, image_ids=[images[2], images[8]], split="unassigned"))
    write(4, lambda s: remove_images_from_dataset(session=s, **labels, image_ids=[images[3]]))
    with pytest.raises(RuntimeError), db_stack.session() as session:
        set_split(session=session, **labels, image_ids=images[:3] + images[4:8], split="test")
        check(session, 1)  # image 8, in no split again
        raise RuntimeError("abort")
    with db_stack.session() as session:
        check(session, 4)
    write(4, lambda s: add_images_to_dataset(actor=ADMIN, session=s, dataset_id=other, image_ids=images[4:6]))
    write(4, lambda s: set_labels(actor=ADMIN, session=s, dataset_id=other, image_id=images[4], class_ids=[cat]))
    write(3, lambda s: delete_images(session=s, actor=ADMIN, storage=db_stack.storage, image_ids=[images[4]]))
    # a bare delete: the membership and labels go by ON DELETE CASCADE, not through the services
    write(2, lambda s: s.execute(delete(ClsImage).where(ClsImage.id == images[5])))
    write(0, lambda s: auto_split(session=s, **labels, storage=db_stack.storage))
    left = images[:3] + images[6:]
    write(3, lambda s: set_split(session=s, **labels, image_ids=left, split="unassigned"))
    write(4, lambda s: set_labels(session=s, **labels, image_id=images[9], class_ids=[dog]))
    write(3, lambda s: delete_class(session=s, actor=ADMIN, class_id=dog))  # image 9 carried only dog
    with db_stack.session() as session:
        delete_dataset(actor=ADMIN, session=session, dataset_id=other)
        check(session, 3)
