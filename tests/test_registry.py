"""The model registry: one default per (user, model type), activate/deactivate, rename, delete with
files; the partial unique index holds even against direct writes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import IntegrityError

from core.errors import Conflict, InvalidInput, NotFound
from core.models import ClsTrainedModel
from core.training.registry import (
    default_model,
    delete_model,
    get_model,
    list_models,
    model_summary,
    rename_model,
    set_active,
    set_default,
)
from tests.factories import ADMIN

USER = uuid.UUID(int=1)


def add_model(session, storage=None, *, model_type="convnext", user_id=USER, name="m") -> uuid.UUID:
    model_id = uuid.uuid4()
    keys = {}
    if storage is not None:
        for kind, file in (("checkpoint_url", "best.pt"), ("onnx_url", "model.onnx"), ("predictions_key", "p.json")):
            keys[kind] = f"models/{model_id}/{file}"
            storage.put(keys[kind], b"x")
    session.add(ClsTrainedModel(id=model_id, user_id=user_id, name=name, model_type=model_type, model_size="atto",
                                task_type="single_label", num_classes=2, class_names=["a", "b"],
                                class_mapping={"x": 0, "y": 1}, **keys))
    session.flush()
    return model_id


def test_one_default_per_user_and_model_type(db_stack):
    with db_stack.session() as session:
        first, second = add_model(session, name="first"), add_model(session, name="second")
        vit = add_model(session, model_type="vit")
        other_user = add_model(session, user_id=uuid.UUID(int=2))
        for model_id in (first, vit, other_user):
            set_default(actor=ADMIN, session=session, model_id=model_id)
        set_default(actor=ADMIN, session=session, model_id=second)
        assert default_model(session=session, user_id=USER, model_type="convnext").id == second
        assert not get_model(session=session, model_id=first).is_default
        assert get_model(session=session, model_id=vit).is_default  # another type keeps its default
        assert get_model(session=session, model_id=other_user).is_default  # another user too


def test_the_partial_unique_index_refuses_a_second_default(db_stack):
    with pytest.raises(IntegrityError), db_stack.session() as session:
        for _ in range(2):
            model_id = add_model(session)
            session.get(ClsTrainedModel, model_id).is_default = True
            session.flush()


def test_deactivate_clears_default_and_inactive_cannot_become_default(db_stack):
    with db_stack.session() as session:
        model_id = add_model(session)
        set_default(actor=ADMIN, session=session, model_id=model_id)
        row = set_active(actor=ADMIN, session=session, model_id=model_id, active=False)
        assert not row.is_active and not row.is_default
        with pytest.raises(Conflict, match="inactive; activate it before"):
            set_default(actor=ADMIN, session=session, model_id=model_id)
        assert [m.id for m in list_models(session=session, active_only=True)] == []
        set_active(actor=ADMIN, session=session, model_id=model_id, active=True)
        assert set_default(actor=ADMIN, session=session, model_id=model_id).is_default


def test_rename_checks_the_name(db_stack):
    with db_stack.session() as session:
        model_id = add_model(session)
        assert rename_model(actor=ADMIN, session=session, model_id=model_id, name="  shelf v2 ").name == "shelf v2"
        with pytest.raises(InvalidInput, match="cannot be empty"):
            rename_model(actor=ADMIN, session=session, model_id=model_id, name="   ")
        with pytest.raises(InvalidInput, match="at most 200 characters"):
            rename_model(actor=ADMIN, session=session, model_id=model_id, name="x" * 201)


def test_delete_removes_row_and_files(stack):
    with stack.session() as session:
        model_id = add_model(session, stack.storage)
        keys = [k for k in model_summary(get_model(session=session, model_id=model_id))["files"].values() if k]
        assert all(stack.storage.exists(k) for k in keys) and len(keys) == 3
        assert delete_model(actor=ADMIN, session=session, storage=stack.storage, model_id=model_id)["files"] == 4
    assert not any(stack.storage.exists(k) for k in keys)
    with stack.session() as session, pytest.raises(NotFound):
        get_model(session=session, model_id=model_id)


def test_unknown_and_malformed_ids(db_stack):
    with db_stack.session() as session:
        with pytest.raises(NotFound, match="no trained model"):
            get_model(session=session, model_id=uuid.uuid4())
        with pytest.raises(InvalidInput, match="'abc' is not a valid id"):
            set_default(actor=ADMIN, session=session, model_id="abc")
        add_model(session, model_type="vit")
        add_model(session)
        assert [m.model_type for m in list_models(session=session, model_type="vit")] == ["vit"]


def _register(session, *, model_type="convnext", num_classes=3, top5=0.9):
    """A model row as a finished training run registers it (core.training.registry.create_model_row)."""
    from types import SimpleNamespace

    from core.training.registry import create_model_row

    config = SimpleNamespace(model_type=model_type, model_size="atto", timm_name="convnextv2_atto",
                             task_type="single_label", num_classes=num_classes)
    report = {"accuracy": 0.8, "f1": 0.7, "top5": top5, "precision": 0.7, "recall": 0.7,
              "confusion_matrix": [], "per_class": {}}
    artifacts = SimpleNamespace(report=report, preprocessing={}, export_check={}, evaluated_split="test")
    return create_model_row(session=session, actor=ADMIN, model_id=uuid.uuid4(), run_id=None, name="run",
                            version_id=None, config=config, class_names=[], class_mapping={}, keys={},
                            artifacts=artifacts)


def test_the_first_completed_model_of_a_group_becomes_its_default(db_stack):
    with db_stack.session() as session:
        first = _register(session).id
        second = _register(session).id
        vit = _register(session, model_type="vit").id
        assert default_model(session=session, user_id=ADMIN.id, model_type="convnext").id == first
        assert not get_model(session=session, model_id=second).is_default  # later: only when set
        assert get_model(session=session, model_id=vit).is_default  # the first of its own group
        set_default(actor=ADMIN, session=session, model_id=second)
        third = _register(session).id
        assert default_model(session=session, user_id=ADMIN.id, model_type="convnext").id == second
        assert not get_model(session=session, model_id=third).is_default


def test_top5_is_reported_only_above_five_classes(db_stack):
    with db_stack.session() as session:
        small, large = _register(session, num_classes=3, top5=1.0), _register(session, num_classes=12, top5=0.8)
        assert model_summary(small)["top5_accuracy"] is None and model_summary(large)["top5_accuracy"] == 0.8
