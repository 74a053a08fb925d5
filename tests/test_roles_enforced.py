"""The services check roles themselves: a viewer and a labeler are refused each admin action with the
role named, a viewer is refused labeling, nothing changes on a refusal, and destructive actions by an
admin leave an audit row (who, what, how many)."""

from __future__ import annotations

import io
import uuid

import pytest
from sqlalchemy import func, select

from core.config import reset_settings_cache
from core.errors import PermissionDenied
from core.models import ClsAuditEvent, ClsClass, ClsDataset, ClsImage, ClsJob
from core.permissions import register_user
from core.users import oidc_user
from tests.factories import make_class, make_dataset, make_dataset_image, make_image_row


@pytest.fixture
def people(embedded_stack, monkeypatch):
    monkeypatch.setenv("ROLES", "boss@acme.com=admin,ann@acme.com=labeler")
    monkeypatch.setenv("DEFAULT_ROLE", "viewer")
    reset_settings_cache()
    users = {role: oidc_user(email) for role, email in
             (("admin", "boss@acme.com"), ("labeler", "ann@acme.com"), ("viewer", "guest@acme.com"))}
    with embedded_stack.session() as session:
        for user in users.values():
            register_user(session=session, user=user)
    yield {role: user.id for role, user in users.items()}
    reset_settings_cache()


@pytest.fixture
def world(embedded_stack):
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "pets")
        cat, dog = make_class(session, "cat"), make_class(session, "dog")
        image = make_dataset_image(session, embedded_stack.storage, dataset, seed=1, classes=[cat])
        spare = make_image_row(session, embedded_stack.storage, seed=2)
        return {"dataset": dataset.id, "cat": cat.id, "dog": dog.id, "image": image.id, "spare": spare.id}


def admin_actions(stack, w):
    from core import classes, datasets, images, labels
    from core.archive_import import ImportLabeledDatasetRequest, start_archive_import
    from core.url_import import start_url_import
    from tests.test_archive_import import build_zip

    def in_session(fn):
        def run(user_id):
            with stack.session() as session:
                return fn(session, user_id)
        return run

    archive = build_zip({"cats/a.png": b"x"})
    return {
        "deleting images": in_session(lambda s, u: images.delete_images(session=s, storage=stack.storage,
                                                                         image_ids=[w["spare"]], user_id=u)),
        "deleting a class": in_session(lambda s, u: classes.delete_class(session=s, class_id=w["dog"], user_id=u)),
        "merging classes": in_session(lambda s, u: classes.merge_classes(session=s, source_ids=[w["dog"]],
                                                                         target_id=w["cat"], user_id=u)),
        "deleting a dataset": in_session(lambda s, u: datasets.delete_dataset(session=s, dataset_id=w["dataset"],
                                                                              user_id=u)),
        "importing": lambda u: start_archive_import(source=io.BytesIO(archive), user_id=u,
                                                    request=ImportLabeledDatasetRequest(dataset_id=str(w["dataset"]))),
        "importing urls": lambda u: start_url_import(text="http://example.com/a.png", user_id=u),
        "importing uploads": lambda u: images.ingest_many(items=[("a.png", b"x")], storage=stack.storage, user_id=u),
        "changing labels in bulk": in_session(lambda s, u: labels.bulk_set_label(
            session=s, dataset_id=w["dataset"], image_ids=[w["image"]], class_id=w["dog"], user_id=u)),
    }


@pytest.mark.parametrize("role", ["viewer", "labeler"])
def test_admin_actions_refused_with_the_role_named_and_nothing_changed(embedded_stack, people, world, role):
    for name, action in admin_actions(embedded_stack, world).items():
        if role == "labeler" and name == "changing labels in bulk":
            continue  # labelers may
        needed = "labeler" if name == "changing labels in bulk" else "admin"
        with pytest.raises(PermissionDenied, match=f"needs the {needed} role; you are a {role}"):
            action(people[role])
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsImage)) == 2
        assert session.scalar(select(func.count()).select_from(ClsClass)) == 2
        assert session.scalar(select(func.count()).select_from(ClsDataset)) == 1
        assert session.scalar(select(func.count()).select_from(ClsJob)) == 0
        assert session.scalar(select(func.count()).select_from(ClsAuditEvent)) == 0


def test_training_and_models_refused_for_a_labeler(embedded_stack, people):
    from core.registry import delete_model, set_default
    from core.training import delete_run, start_run

    labeler, missing = people["labeler"], uuid.uuid4()
    with pytest.raises(PermissionDenied, match="training a model needs the admin role; you are a labeler"):
        start_run(run_id=missing, user_id=labeler)
    with embedded_stack.session() as session:
        for action, call in (("deleting a training run", lambda: delete_run(session=session, storage=None,
                                                                              run_id=missing, user_id=labeler)),
                             ("setting the default model", lambda: set_default(session=session, model_id=missing,
                                                                               user_id=labeler)),
                             ("deleting a model", lambda: delete_model(session=session, storage=None,
                                                                      model_id=missing, user_id=labeler))):
            with pytest.raises(PermissionDenied, match=f"{action} needs the admin role"):
                call()


def test_viewer_cannot_label_skip_or_clear_but_a_labeler_can(embedded_stack, people, world):
    from core import labeling

    common = {"dataset_id": world["dataset"], "image_id": world["image"]}
    with embedded_stack.session() as session:
        for call in (lambda: labeling.save(session=session, class_ids=[world["dog"]], shown_revision=0,
                                           user_id=people["viewer"], **common),
                     lambda: labeling.skip(session=session, user_id=people["viewer"], **common),
                     lambda: labeling.clear(session=session, shown_revision=0, user_id=people["viewer"], **common)):
            with pytest.raises(PermissionDenied, match="needs the labeler role; you are a viewer"):
                call()
    with embedded_stack.session() as session:
        card = labeling.image_card(session=session, **common)
        result = labeling.save(session=session, class_ids=[world["dog"]], shown_revision=card.label_revision,
                               user_id=people["labeler"], **common)
        assert result.outcome == "saved", result.outcome


def test_admin_destructive_actions_are_audited(embedded_stack, people, world):
    boss = people["admin"]
    actions = admin_actions(embedded_stack, world)
    actions["changing labels in bulk"](boss)
    actions["deleting images"](boss)
    actions["merging classes"](boss)
    actions["deleting a dataset"](boss)
    with embedded_stack.session() as session:
        events = {e.action: e for e in session.scalars(select(ClsAuditEvent))}
    assert {"bulk_set_label", "delete_images", "merge_classes", "delete_dataset"} <= set(events)
    assert events["delete_images"].row_count == 1 and events["delete_images"].user_email == "boss@acme.com"
    assert events["bulk_set_label"].row_count == 1


def test_pages_disable_admin_actions_for_a_viewer(embedded_stack, monkeypatch, world):
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import ROOT

    for default_role, disabled in (("viewer", True), ("admin", False)):
        monkeypatch.setenv("DEFAULT_ROLE", default_role)  # the local user's role (no ROLES match)
        reset_settings_cache()
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        app.run()
        app.switch_page("pages/classes.py")
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        deletes = [b for b in app.button if b.key and b.key.startswith("cls_del_")]
        assert deletes and all(b.disabled == disabled for b in deletes), default_role
    reset_settings_cache()
