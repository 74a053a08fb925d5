"""The real pages under each role (Streamlit AppTest).

A viewer, on every page, presses every button that is enabled (filling the forms it submits), going
wherever they lead (a dataset's detail, dialogs) for a bounded number of presses: nothing in the
database or in storage changes, and no page fails. A labeler sees no admin control (creating,
editing, deleting, importing, training) but labels.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from core.config import reset_settings_cache
from core.models import Base, ClsClass, ClsDataset, ClsDatasetImage
from core.users import local_user
from tests.test_pages import PAGES, ROOT

PRESSES_PER_PAGE = 12
SKIPPED_TABLES = {"cls_users"}  # signing in records the user: bookkeeping, not a change of data


def _app(monkeypatch, role: str, page: str) -> AppTest:
    monkeypatch.setenv("DEFAULT_ROLE", role)  # the local user's role (no ROLES configured)
    reset_settings_cache()
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    if page != "pages/dashboard.py":
        app.switch_page(page)
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _usable(app: AppTest, label: str):
    """The enabled button with this label, or None when it is hidden or disabled."""
    return next((b for b in app.button if b.label == label and not b.disabled), None)


def fingerprint(stack) -> str:
    """Every row of every table (but sign-in bookkeeping) and every storage key, hashed."""
    digest = hashlib.sha256()
    with stack.session() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in SKIPPED_TABLES:
                continue
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            digest.update(f"{table.name}:{[tuple(map(str, row)) for row in rows]}".encode())
    digest.update(str(sorted(stack.storage.list_keys(""))).encode())
    return digest.hexdigest()


def _tab_groups(node) -> list[list[str]]:
    """The labels of each st.tabs group on the page."""
    children = list(getattr(node, "children", {}).values()) if isinstance(getattr(node, "children", None), dict) else []
    groups = [[child.label for child in children]] if children and all(c.type == "tab" for c in children) else []
    for child in children:
        groups += _tab_groups(child)
    return groups


def _leaves(button) -> bool:
    """A button back to where the walk came from (pressed last, once the rest is explored)."""
    return button.label.startswith(("←", "◀")) or (button.key or "").endswith("back")


def press_everything(app: AppTest, pressed: list[str], limit: int = PRESSES_PER_PAGE, *, leave=False) -> None:
    """Press each enabled button once (its form filled first), following where it leads."""
    budget = len(pressed) + limit
    while len(pressed) < budget:
        button = next((b for b in app.button if not b.disabled and (b.key or b.label) not in pressed
                       and _leaves(b) == leave), None)
        if button is None:
            return
        pressed.append(button.key or button.label)
        form = button.proto.form_id
        for field in [*app.text_input, *app.text_area]:
            if form and field.proto.form_id == form and not field.value:
                field.input("probe")
        button.click()
        app.run()
        assert not app.exception, (pressed[-1], [e.value for e in app.exception])


def explore(app: AppTest) -> list[str]:
    """press_everything on the page, then in every lazily drawn tab (a tabs widget's key in the session
    state set to each of its labels); the buttons pressed."""
    pressed: list[str] = []
    press_everything(app, pressed)
    groups = _tab_groups(app._tree)
    for key in list(app.session_state):
        try:
            value = app.session_state[key]
        except KeyError:  # a widget's value the script has not read this run
            continue
        group = next((g for g in groups if isinstance(value, str) and value in g), None)
        for label in group or []:
            app.session_state[key] = label
            app.run()
            press_everything(app, pressed)
    press_everything(app, pressed, leave=True)
    return pressed


def _demo_dataset_id(stack) -> str:
    from core.imports.demo import DEMO_DATASET

    with stack.session() as session:
        return str(session.scalar(select(ClsDataset.id).where(ClsDataset.name == DEMO_DATASET)))


def seed(stack) -> None:
    """The demo workspace plus a version, a pending training run and a model, so that every page
    shows its controls."""
    from core.datasets.versions import create_version
    from core.imports.demo import DEMO_DATASET, load_demo
    from core.models import ClsTrainedModel
    from core.training.runs import create_run
    from tests.factories import ADMIN

    load_demo(actor=ADMIN, products=4)
    with stack.session() as session:
        dataset = session.scalar(select(ClsDataset).where(ClsDataset.name == DEMO_DATASET))
        version = create_version(session=session, actor=ADMIN, storage=stack.storage, dataset_id=dataset.id)
        create_run(session=session, actor=ADMIN, version_id=version.id,
                   config={"model_type": "convnext", "model_size": "atto", "image_size": 32, "epochs": 1,
                           "pretrained": False, "batch_size": 2, "export_formats": []})
        model = ClsTrainedModel(name="demo model", model_type="convnext", model_size="atto", user_id=ADMIN.id,
                                task_type="single_label", num_classes=version.class_count,
                                class_names=version.class_names, class_mapping=version.class_mapping,
                                checkpoint_url="models/demo/best.pt", is_active=True)
        session.add(model)
    stack.storage.put("models/demo/best.pt", b"not read by these pages")


def test_viewer_cannot_create_classes_or_datasets_through_the_pages(embedded_stack, monkeypatch):
    """The reproduction of issue 14: these forms wrote rows for a viewer."""
    app = _app(monkeypatch, "viewer", "pages/classes.py")
    if (button := _usable(app, "Create class")) is not None:
        app.text_input[0].input("viewer-made")
        button.click()
        app.run()
    if (button := _usable(app, "Create classes")) is not None:
        app.text_area[0].input("a\nb")
        button.click()
        app.run()
    app.switch_page("pages/datasets.py")
    app.run()
    if (button := _usable(app, "Create dataset")) is not None:
        app.text_input[0].input("viewer-ds")
        button.click()
        app.run()
    with embedded_stack.session() as session:
        assert session.scalars(select(ClsClass.name)).all() == []
        assert session.scalars(select(ClsDataset.name)).all() == []


def test_no_control_changes_anything_for_a_viewer(embedded_stack, monkeypatch):
    """Every page, and what its buttons lead to (a dataset and its tabs, a run, a model, a dataset
    to label): every enabled button pressed once; nothing changes."""
    seed(embedded_stack)
    before = fingerprint(embedded_stack)
    pressed = {}
    for page in PAGES:
        app = _app(monkeypatch, "viewer", page)
        if page == "pages/labeling.py":  # the demo dataset, as its Label link opens it
            app.query_params["dataset"] = _demo_dataset_id(embedded_stack)
            app.run()
        if page == "pages/images.py":  # an image's detail, as a click on its tile opens it
            with embedded_stack.session() as session:
                app.query_params["image"] = str(session.scalar(select(ClsDatasetImage.image_id).limit(1)))
            app.run()
        pressed[page] = explore(app)
    assert fingerprint(embedded_stack) == before
    # the walk reached the controls that matter (so a page that stops drawing them is noticed)
    everything = {key for keys in pressed.values() for key in keys}
    assert {"ds_back", "← Prev", "Next →"} - everything == set(), pressed
    assert any(key.startswith("dsgrid_") for key in pressed["pages/datasets.py"]), pressed  # the grid
    assert any(key.startswith("health-run-") for key in pressed["pages/datasets.py"]), pressed  # a lazy tab
    assert any(key.startswith("open_") for key in pressed["pages/models.py"]), pressed
    assert any(key.startswith("open_") for key in pressed["pages/training.py"]), pressed
    reset_settings_cache()


def test_a_labeler_sees_no_admin_control_but_labels(embedded_stack, monkeypatch):
    from core.imports.demo import load_demo
    from tests.factories import ADMIN

    demo = embedded_stack
    load_demo(actor=ADMIN, products=5)  # the fifth product's images are left unlabeled
    app = _app(monkeypatch, "labeler", "pages/classes.py")
    assert _usable(app, "Create class") is None and _usable(app, "Merge") is None
    assert all(b.disabled for b in app.button if (b.key or "").startswith(("cls_edit_", "cls_del_")))
    assert any("needs the admin role; you are a labeler" in c.value for c in app.caption)
    app.switch_page("pages/datasets.py")
    app.run()
    assert _usable(app, "Create dataset") is None
    app.switch_page("pages/training.py")
    app.run()
    assert _usable(app, "New training run") is None
    app.switch_page("pages/labeling.py")
    app.query_params["dataset"] = _demo_dataset_id(demo)
    app.run()
    assert _usable(app, "+ New class") is None  # creating a class is the admin's
    shown = app.query_params["image"]  # the first unlabeled image, reserved for this labeler
    _usable(app, "Skip (S)").click()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    with demo.session() as session:
        link = session.scalar(select(ClsDatasetImage).where(ClsDatasetImage.image_id == uuid.UUID(shown)))
        assert (link.status, link.labeled_by) == ("skipped", local_user().id)
    reset_settings_cache()
