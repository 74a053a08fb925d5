"""Classes: create with validation, bulk create, edit, hierarchy, merge, delete; counts stay exact."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.datasets.classes import (
    bulk_create_classes,
    class_tree,
    create_class,
    delete_class,
    get_class_by_name,
    get_or_create_class,
    labels_using,
    list_classes,
    merge_classes,
    update_class,
)
from core.datasets.dataset import add_images_to_dataset, create_dataset
from core.errors import Conflict, InvalidInput, NotFound
from core.labeling.counts import count_mismatches
from core.labeling.labels import labels_for_images, set_labels
from core.models import ClsAuditEvent, ClsClass, ClsDatasetImage, ClsLabel
from tests.factories import ADMIN, make_image_row


def test_create_and_list(stack):
    with stack.session() as session:
        cat = create_class(actor=ADMIN, session=session, name="  cat ", display_name="Cat", color="#ff0000")
        dog = create_class(actor=ADMIN, session=session, name="Dog", parent_class_id=cat.id)
        assert (cat.name, cat.color, cat.display_name) == ("cat", "#FF0000", "Cat")
        assert dog.color.startswith("#") and dog.parent_class_id == cat.id
        update_class(actor=ADMIN, session=session, class_id=dog.id, is_active=False)
        assert [c.name for c in list_classes(session=session)] == ["cat", "Dog"]
        assert [c.name for c in list_classes(session=session, active_only=True)] == ["cat"]
        assert get_or_create_class(actor=ADMIN, session=session, name="cat").id == cat.id
        assert get_or_create_class(actor=ADMIN, session=session, name="bird").name == "bird"


@pytest.mark.parametrize("name, message", [
    ("", "empty"), ("   ", "empty"), ("x" * 101, "at most 100"), ("a\x00b", "control"), (None, "text"),
])
def test_bad_names(db_stack, name, message):
    with pytest.raises(InvalidInput, match=message), db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name=name)
    with pytest.raises(InvalidInput, match=message), db_stack.session() as session:
        get_or_create_class(actor=ADMIN, session=session, name=name)


def test_bad_color_duplicate_name_and_parent(db_stack):
    with db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name="cat")
    with pytest.raises(InvalidInput, match="hex color"), db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name="dog", color="red; background:url(x)")
    with pytest.raises(Conflict, match="already exists"), db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name="cat")
    with pytest.raises(NotFound, match="parent"), db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name="dog", parent_class_id="00000000-0000-0000-0000-000000000001")


def test_hierarchy_refuses_cycles_and_renders_as_tree(db_stack):
    with db_stack.session() as session:
        animal = create_class(actor=ADMIN, session=session, name="animal")
        cat = create_class(actor=ADMIN, session=session, name="cat", parent_class_id=animal.id)
        kitten = create_class(actor=ADMIN, session=session, name="kitten", parent_class_id=cat.id)
        create_class(actor=ADMIN, session=session, name="car")
        with pytest.raises(InvalidInput, match="own ancestor"):
            update_class(actor=ADMIN, session=session, class_id=animal.id, parent_class_id=kitten.id)
        assert [(depth, c.name) for depth, c in class_tree(session=session)] == [
            (0, "animal"), (1, "cat"), (2, "kitten"), (0, "car")]


def test_bulk_create_reports_each_line(db_stack):
    with db_stack.session() as session:
        create_class(actor=ADMIN, session=session, name="cat")
        result = bulk_create_classes(actor=ADMIN, session=session, text="cat\n dog \n\nbird\ndog\n" + "y" * 120 + "\n")
    assert result["created"] == ["dog", "bird"]
    assert result["existing"] == ["cat", "dog"]
    assert result["errors"] == [{"line": 6, "error": "class name is 120 characters; at most 100 allowed"}]


def _labeled_world(stack, task_type):
    with stack.session() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name="ds", task_type=task_type)
        a, b, t = (create_class(actor=ADMIN, session=session, name=n).id for n in ("a", "b", "t"))
        images = [make_image_row(session, stack.storage, seed=i).id for i in range(4)]
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=images)
        return session, dataset.id, (a, b, t), images


def test_merge_single_label_keeps_one_label_per_image(stack):
    _, dataset_id, (a, b, t), images = _labeled_world(stack, "single_label")
    with stack.session() as session:
        for image_id, class_id in zip(images, (a, b, t, a), strict=True):
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_id])
        child = create_class(actor=ADMIN, session=session, name="a-child", parent_class_id=a)
        result = merge_classes(actor=ADMIN, session=session, source_ids=[a, b], target_id=t)
        assert result["labels_moved"] == 3 and result["duplicate_labels_dropped"] == 0
    with stack.session() as session:
        labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=images)
        assert all([label.class_id for label in labels[i]] == [t] for i in images)
        assert session.get(ClsClass, t).image_count == 4
        assert session.get(ClsClass, a) is None and session.get(ClsClass, child.id).parent_class_id == t
        assert session.scalar(select(func.count()).select_from(ClsAuditEvent)) == 1
        assert count_mismatches(session=session) == []


def test_merge_multi_label_collapses_duplicates(stack):
    _, dataset_id, (a, b, t), images = _labeled_world(stack, "multi_label")
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[a, b, t])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1], class_ids=[a, b])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[2], class_ids=[b])
        result = merge_classes(actor=ADMIN, session=session, source_ids=[a, b], target_id=t)
        assert (result["labels_moved"], result["duplicate_labels_dropped"]) == (2, 3)
        revisions = session.scalars(select(ClsDatasetImage.label_revision).order_by(ClsDatasetImage.image_id)).all()
    with stack.session() as session:
        labels = labels_for_images(session=session, dataset_id=dataset_id, image_ids=images)
        assert [[label.class_id for label in labels[i]] for i in images] == [[t], [t], [t], []]
        assert sorted(revisions) == [0, 2, 2, 2]
        assert count_mismatches(session=session) == []


def test_merge_bad_input(db_stack):
    with db_stack.session() as session:
        a = create_class(actor=ADMIN, session=session, name="a").id
    cases = [([], a, "at least one"), ([a], a, "cannot also be"),
             ([a], "00000000-0000-0000-0000-000000000009", "does not exist")]
    for sources, target, message in cases:
        with pytest.raises((InvalidInput, NotFound), match=message), db_stack.session() as session:
            merge_classes(actor=ADMIN, session=session, source_ids=sources, target_id=target)


def test_delete_class_removes_labels_and_says_how_many(stack):
    _, dataset_id, (a, b, _), images = _labeled_world(stack, "multi_label")
    with stack.session() as session:
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[0], class_ids=[a, b])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=images[1], class_ids=[a])
        assert labels_using(session=session, class_id=a) == 2
        assert delete_class(actor=ADMIN, session=session, class_id=a) == 2
    with stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsLabel)) == 1
        status = dict(session.execute(select(ClsDatasetImage.image_id, ClsDatasetImage.status)).all())
        assert status[images[0]] == "labeled" and status[images[1]] == "pending"
        assert count_mismatches(session=session) == []
    with pytest.raises(NotFound), stack.session() as session:
        delete_class(actor=ADMIN, session=session, class_id=a)


def test_cli_create_list_merge(db_stack, capsys):
    import json

    from core.cli import main

    assert main(["classes", "create", "cat", "dog", "--color", "#00ff00"]) == 0
    created = json.loads(capsys.readouterr().out)["created"]
    assert [c["name"] for c in created] == ["cat", "dog"] and created[0]["color"] == "#00FF00"
    assert main(["classes", "create", "kitten", "--parent", "cat"]) == 0
    assert json.loads(capsys.readouterr().out)["created"][0]["parent_class_id"] == created[0]["id"]
    assert main(["classes", "merge", "dog", "--into", "cat"]) == 0
    assert json.loads(capsys.readouterr().out)["merged"] == ["dog"]
    assert main(["classes", "list"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["classes"]] == ["cat", "kitten"]
    for argv, message in [(["classes", "create", "cat"], "already exists"),
                          (["classes", "create", " "], "empty"),
                          (["classes", "merge", "ghost", "--into", "cat"], "no class named"),
                          (["classes", "merge", "cat"], "--into")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_classes_page_bulk_create_merge_delete(embedded_stack):
    """The Classes page through Streamlit's AppTest: paste lines, merge, delete with its label count."""
    from streamlit.testing.v1 import AppTest

    with embedded_stack.session() as session:
        dataset = create_dataset(actor=ADMIN, session=session, name="ds")
        cat = create_class(actor=ADMIN, session=session, name="cat").id
        image_id = make_image_row(session, embedded_stack.storage, seed=1).id
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset.id, image_ids=[image_id])
        set_labels(actor=ADMIN, session=session, dataset_id=dataset.id, image_id=image_id, class_ids=[cat])
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/classes.py").run()
    at.text_area[0].input("kitty\n\ncat\n" + "z" * 120)
    at.button(key="FormSubmitter:cls_bulk-Create classes").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Line 4: class name is 120 characters; at most 100 allowed"]
    assert [i.value for i in at.info] == ["Already there: cat"]
    with embedded_stack.session() as session:
        kitty = get_class_by_name(session=session, name="kitty").id
    at.multiselect(key="cls_merge_sources").set_value([str(cat)]).run()
    at.selectbox(key="cls_merge_target").set_value(str(kitty)).run()
    at.button(key="cls_merge_go").click().run()
    assert not at.exception
    assert "1 labels moved" in at.toast[0].value
    at.button(key=f"cls_del_{kitty}").click().run()
    assert "removes 1 labels" in at.warning[0].value
    at.button(key="cls_confirm_delete").click().run()
    with embedded_stack.session() as session:
        assert list_classes(session=session) == []
        assert count_mismatches(session=session) == []
