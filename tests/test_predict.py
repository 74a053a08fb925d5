"""Prediction with a tiny model trained in the test (ConvNeXt-V2 atto, 32 px digits): top-k, the
saved thresholds, per-item errors, the default model, URLs under the SSRF rules, Grad-CAM for a CNN,
a ViT and a Swin (pretrained=False, trained a step), the cached predictor, the CLI and the page."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from core.errors import InvalidInput, NotFound
from tests.factories import ADMIN
from tests.model_factory import digit_images, register_model, shared_checkpoint, small_torch_settings


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def add(stack, checkpoint, **kwargs):
    with stack.session() as session:
        return register_model(session, stack.storage, checkpoint, class_ids=[uuid.uuid4() for _ in range(3)], **kwargs)


def test_top_k_on_real_images_and_per_item_errors(embedded_stack, checkpoint):
    from core.prediction.predict import Item, predict_items

    model_id = add(embedded_stack, checkpoint)
    images, target = digit_images(3, 10)
    items = [Item(f"d{i}.png", data) for i, data in enumerate(images)]
    items.insert(3, Item("broken.png", b"not an image"))
    with embedded_stack.session() as session:
        out = predict_items(session=session, storage=embedded_stack.storage, model=model_id, items=items, top_k=2)
    assert out["model"]["backend"] == "torch"
    assert out["results"][3]["image"] == "broken.png" and "cannot decode" in out["results"][3]["error"]
    results = [r for r in out["results"] if "error" not in r]
    assert len(results) == 30 and all(len(r["top_k"]) == 2 for r in results)
    for r in results:
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
        assert r["predicted"] == [r["top_k"][0]["class"]] and not r["abstained"]
    predicted = np.array([r["top_k"][0]["index"] for r in results])
    assert (predicted == target).mean() >= 0.6  # trained on these: well above chance (1/3)


def test_saved_thresholds_apply(embedded_stack, checkpoint):
    from core.prediction.predict import Item, describe, predict_items

    model_id = add(embedded_stack, checkpoint, thresholds={"abstain": 1.01})
    images, _ = digit_images(3, 1)
    with embedded_stack.session() as session:
        out = predict_items(session=session, storage=embedded_stack.storage, model=model_id,
                            items=[Item("a", images[0])])
    assert out["results"][0]["abstained"] and out["results"][0]["predicted"] == []
    multi = describe(np.array([0.9, 0.4, 0.2]), class_names=["a", "b", "c"], multi_label=True,
                     thresholds={"per_class": [0.95, 0.3, 0.5]}, top_k=3)
    assert multi["predicted"] == ["b"] and multi["probabilities"]["a"] == pytest.approx(0.9)


def test_model_thresholds_read_the_saved_per_class_values():
    from core.models import ClsTrainedModel
    from core.prediction.predict import model_thresholds

    row = ClsTrainedModel(task_type="multi_label", class_names=["a", "b"], thresholds={"per_class": {"b": 0.2}})
    assert model_thresholds(row) == {"per_class": [0.5, 0.2]}


def test_default_model_inactive_model_and_bad_input(embedded_stack, checkpoint):
    from core.prediction.predict import Item, predict_items, read_inputs, resolve_model
    from core.training.registry import set_active

    with embedded_stack.session() as session, pytest.raises(NotFound, match="no default model"):
        resolve_model(session=session, model="default")
    model_id = add(embedded_stack, checkpoint, is_default=True)
    with embedded_stack.session() as session:
        assert resolve_model(session=session, model="default").id == model_id
        with pytest.raises(InvalidInput, match="top_k"):
            predict_items(session=session, storage=embedded_stack.storage, model=model_id, items=[Item("a", b"x")],
                          top_k=0)
        with pytest.raises(InvalidInput, match="at least one"):
            predict_items(session=session, storage=embedded_stack.storage, model=model_id, items=[])
        with pytest.raises(InvalidInput, match="not a valid id"):
            resolve_model(session=session, model="nope")
        set_active(actor=ADMIN, session=session, model_id=model_id, active=False)
    with embedded_stack.session() as session, pytest.raises(InvalidInput, match="inactive"):
        resolve_model(session=session, model=model_id)
    items = read_inputs(["http://127.0.0.1:1/x.png", "/no/such/file.png", "ftp://x/y"], allow_list=[])
    assert "127.0.0.1" in items[0].error or "not allowed" in items[0].error or "private" in items[0].error
    assert items[1].error == "no such file" and items[2].error == "no such file"


def test_cached_predictor_is_loaded_once(embedded_stack, checkpoint):
    from core.prediction.loading import cached_predictor

    model_id = add(embedded_stack, checkpoint)
    with embedded_stack.session() as session:
        first = cached_predictor(session=session, storage=embedded_stack.storage, model_id=model_id)
        assert cached_predictor(session=session, storage=embedded_stack.storage, model_id=model_id) is first
        assert cached_predictor(session=session, storage=embedded_stack.storage, model_id=model_id, threads=1) is not first


@pytest.mark.parametrize("family,size", [("convnext", "atto"), ("vit", "tiny"), ("swin", "tiny")])
def test_grad_cam_for_a_cnn_a_vit_and_a_swin(embedded_stack, tmp_path, checkpoint, family, size):
    from core.prediction.predict import grad_cam
    from tests.model_factory import train_checkpoint

    path = checkpoint if family == "convnext" else train_checkpoint(tmp_path / "vit.pt", family=family, size=size,
                                                                    steps=1, per_class=2)
    model_id = add(embedded_stack, path, model_type=family)
    image = digit_images(3, 1)[0][0]
    with embedded_stack.session() as session:
        top = grad_cam(session=session, storage=embedded_stack.storage, model=model_id, image=image)
        other = grad_cam(session=session, storage=embedded_stack.storage, model=model_id, image=image,
                         class_index=(top["class_index"] + 1) % 3)
        with pytest.raises(InvalidInput, match="out of range"):
            grad_cam(session=session, storage=embedded_stack.storage, model=model_id, image=image, class_index=7)
    assert top["heatmap"].shape == (32, 32) and 0 <= top["heatmap"].min() and top["heatmap"].max() <= 1
    # not a blank map: at 32 px the last stage of a CNN or a Swin is 1×1, so the deepest 2×2 stage is used
    assert top["heatmap"].max() > top["heatmap"].min()
    assert top["overlay"].shape == (32, 32, 3) and top["overlay"].dtype == np.uint8
    assert other["class_index"] != top["class_index"]


def test_cli_predict(embedded_stack, checkpoint, tmp_path, capsys):
    from core.cli import main

    model_id = add(embedded_stack, checkpoint, is_default=True)
    image = tmp_path / "digit.png"
    image.write_bytes(digit_images(3, 1)[0][0])
    assert main(["predict", "--model", "default", str(image), str(tmp_path / "missing.png"), "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["id"] == str(model_id) and len(out["results"][0]["top_k"]) == 2
    assert out["results"][1]["error"] == "no such file"
    assert main(["predict", "--model", str(uuid.uuid4()), str(image)]) != 0


def test_predict_page_preselects_the_default_model_and_shows_stored_label_issues(embedded_stack, checkpoint):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    first = add(embedded_stack, checkpoint, name="first")
    default = add(embedded_stack, checkpoint, name="chosen", is_default=True)
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    app.run()
    app.switch_page("pages/predict.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="predict_model").value == str(default) != str(first)
    assert [t.label for t in app.tabs] == ["Predict", "Batch prediction", "Label errors"]


def test_predict_page_batch_prediction_over_a_selection(embedded_stack, checkpoint):
    """The Batch prediction tab's selection scope: folder/tag filters and pasted ids make the
    selection (count shown), a dataset to write AI labels into, and the job it queues."""
    from pathlib import Path

    from sqlalchemy import select
    from streamlit.testing.v1 import AppTest

    from core.datasets.classes import create_class
    from core.datasets.dataset import add_images_to_dataset, create_dataset
    from core.library.images import update_image
    from core.models import ClsJob
    from tests.training_data import store_image

    images, _ = digit_images(3, 1)
    with embedded_stack.session() as session:  # a model whose outputs are real classes: labels can be written
        class_ids = [create_class(actor=ADMIN, session=session, name=f"sel-{i}").id for i in range(3)]
        model_id = register_model(session, embedded_stack.storage, checkpoint, class_ids=class_ids, is_default=True)
        stored = [store_image(session, embedded_stack.storage, data, f"s{i}.png") for i, data in enumerate(images)]
        update_image(actor=ADMIN, session=session, image_id=stored[0], folder="inbox")
        dataset_id = create_dataset(actor=ADMIN, session=session, name="target").id
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=dataset_id, image_ids=stored)
    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    app.run()
    app.switch_page("pages/predict.py")
    app.run()
    app.radio(key="batch_scope").set_value("selection").run()
    assert not app.exception, [e.value for e in app.exception]
    app.multiselect(key="batch_folders").set_value(["inbox"]).run()
    app.text_area(key="batch_image_ids").set_value(f"{stored[1]}, not-an-id").run()
    assert any("'not-an-id' is not an image id" in e.value for e in app.error)
    app.text_area(key="batch_image_ids").set_value(f"{stored[1]}\n{stored[0]}").run()
    assert any(c.value == "2 images selected" for c in app.caption)
    app.selectbox(key="batch_selection_dataset").set_value(str(dataset_id)).run()
    write = next(c for c in app.checkbox if c.label == "Write predictions as AI labels")
    assert not write.disabled
    write.check().run()
    next(b for b in app.button if b.label == "Start batch prediction").click().run()
    assert not app.exception, [e.value for e in app.exception]
    with embedded_stack.session() as session:
        job = session.scalars(select(ClsJob).where(ClsJob.kind == "batch_prediction")).one()
    assert job.params["scope"] == "selection" and job.params["dataset_id"] == str(dataset_id)
    assert set(job.params["image_ids"]) == {str(stored[0]), str(stored[1])} and job.params["write_labels"]
    assert job.params["model"] == str(model_id)
    embedded_stack.drain_jobs()  # the queued job runs to its end here, not in a later test's time
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job.id)
        assert job.status == "succeeded", job.error
        assert job.result["total"] == 2 and job.result["labeled"] == 2
