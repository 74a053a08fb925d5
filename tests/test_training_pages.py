"""Training and Models pages (Streamlit AppTest) over seeded rows: a running, a completed and a
failed run, their job rows, and trained models with stored checkpoint and prediction files."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.ml.config import parse_config
from core.models import ClsJob, ClsTrainedModel, ClsTrainingRun, utcnow
from tests.factories import ADMIN, make_class, make_dataset, make_dataset_image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")


# ---------------------------------------------------------------- seeding


def seed_version(session, storage, *, task_type="single_label"):
    """18 labeled images, 3 classes, split 12 train / 3 val / 3 test, frozen as version 1."""
    from core.datasets.versions import create_version

    dataset = make_dataset(session, f"shapes-{task_type}", task_type)
    classes = [make_class(session, f"{name}-{task_type}") for name in CLASSES]
    for i in range(18):
        labels = [classes[i % 3]] + ([classes[(i + 1) % 3]] if task_type == "multi_label" and i % 2 else [])
        split = ("train", "train", "train", "train", "val", "test")[i % 6]
        make_dataset_image(session, storage, dataset, seed=i, classes=labels, split=split)
    return create_version(actor=ADMIN, session=session, storage=storage, dataset_id=dataset.id)


def history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.2 / e, "val_loss": 1.1 / e, "val_accuracy": 0.3 + 0.1 * e,
             "val_top5": 1.0, "val_f1": 0.25 + 0.1 * e, "lr": 1e-4 / e, "seconds": 12.0} for e in range(1, epochs + 1)]


def seed_run(session, version, status, *, name, epochs_done=0, job_status=None, error=None, **extra):
    config = parse_config({"model_type": "convnext", "model_size": "atto", "num_classes": version.class_count,
                           "task_type": version.task_type, "epochs": 5, "batch_size": 4}).model_dump(mode="json")
    job = None
    if job_status:
        job = ClsJob(kind="training", queue="training", function="jobs.training.train_run", params={},
                     status=job_status, progress_done=7, progress_total=20, message="epoch 2/5 · batch 3/4")
        session.add(job)
        session.flush()
    run = ClsTrainingRun(
        name=name, dataset_id=version.dataset_id, dataset_version_id=version.id, model_type="convnext",
        model_size="atto", task_type=version.task_type, num_classes=version.class_count, config=config,
        status=status, current_epoch=epochs_done, total_epochs=5, metrics_history=history(epochs_done),
        best_accuracy=0.3 + 0.1 * epochs_done if epochs_done else None,
        best_f1=0.25 + 0.1 * epochs_done if epochs_done else None, best_epoch=epochs_done or None,
        job_id=job.id if job else None, error_message=error, started_at=utcnow() - timedelta(seconds=60),
        completed_at=utcnow() if status in ("completed", "failed", "cancelled") else None, **extra,
    )
    session.add(run)
    session.flush()
    return run


def seed_model(session, storage, run, version, *, name="shapes-convnext", multi=False):
    """A model row with a stored checkpoint, TorchScript file and val/test predictions (no ONNX)."""
    model_id = uuid.uuid4()
    from core.datasets.versions import read_manifest

    lines = read_manifest(storage=storage, version=version)
    splits = {}
    for split in ("val", "test"):
        rows = [line for line in lines if line["split"] == split]
        probs = []
        for index, line in enumerate(rows):
            p = [0.1, 0.1, 0.1]
            if multi:
                for label in line["labels"]:
                    p[label] = 0.35 if index == 0 else 0.8  # the first image's classes sit below 0.5
            else:
                # the first image of each split is wrong, less confident than the right ones
                p[(line["labels"][0] + (1 if index == 0 else 0)) % 3] = 0.6 if index == 0 else 0.8
            probs.append(p)
        splits[split] = {"image_ids": [line["image_id"] for line in rows], "keys": [line["key"] for line in rows],
                         "labels": [line["labels"] for line in rows], "probs": probs}
    keys = {"checkpoint": f"models/{model_id}/best.pt", "torchscript": f"models/{model_id}/model.ts",
            "predictions": f"models/{model_id}/predictions.json"}
    storage.put(keys["checkpoint"], b"checkpoint bytes")
    storage.put(keys["torchscript"], b"torchscript bytes")
    storage.put(keys["predictions"], json.dumps({"class_names": version.class_names, "splits": splits}).encode())
    matrix = ([[[2, 0], [1, 0]]] * 3) if multi else [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    model = ClsTrainedModel(
        id=model_id, training_run_id=run.id, dataset_version_id=version.id, name=name, model_type="convnext",
        model_size="atto", timm_name="convnextv2_atto", task_type=version.task_type, num_classes=3,
        class_names=version.class_names, class_mapping=version.class_mapping, accuracy=0.667, f1_score=0.6,
        top5_accuracy=1.0, precision_macro=0.55, recall_macro=0.6, confusion_matrix=matrix,
        per_class_metrics={n: {"precision": 0.5 + 0.1 * i, "recall": 0.9 - 0.2 * i, "f1": 0.6 - 0.1 * i, "support": 1}
                           for i, n in enumerate(version.class_names)},
        checkpoint_url=keys["checkpoint"], torchscript_url=keys["torchscript"], predictions_key=keys["predictions"],
        preprocessing={"size": 32, "in_chans": 3}, export_check={"evaluated_split": "test",
                                                                 "torchscript_max_abs_diff": 2e-6},
    )
    session.add(model)
    session.flush()
    return model


@pytest.fixture
def seeded(embedded_stack):
    """Version 1 of a single-label dataset with a running, a completed (with model) and a failed run."""
    storage = embedded_stack.storage
    with embedded_stack.session() as session:
        version = seed_version(session, storage)
        running = seed_run(session, version, "training", name="run-live", epochs_done=1, job_status="running")
        done = seed_run(session, version, "completed", name="run-done", epochs_done=5,
                        checkpoint_key="runs/x/checkpoint.pt")
        storage.put("runs/x/checkpoint.pt", b"ckpt")
        failed = seed_run(session, version, "failed", name="run-broken", epochs_done=2,
                          error="RuntimeError: out of memory while training", log_tail="line 1\nline 2")
        model = seed_model(session, storage, done, version)
        ids = {"version": version.id, "running": running.id, "done": done.id, "failed": failed.id,
               "model": model.id, "job": running.job_id}
    return embedded_stack, ids


# ---------------------------------------------------------------- helpers


def page(path: str, **params) -> AppTest:
    app = AppTest.from_file(str(ROOT / path), default_timeout=60)
    for key, value in params.items():
        app.query_params[key] = str(value)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader"):
        parts += [str(el.value) for el in app.get(kind)]
    parts += [f"{m.label} {m.value}" for m in app.metric]
    parts += [el.proto.text for el in app.get("progress")]
    return "\n".join(parts)


def button(app: AppTest, key: str):
    return app.button(key=key)


def click(app: AppTest, key: str) -> AppTest:
    app.button(key=key).click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def labels(app: AppTest) -> list[str]:
    return [b.label for b in app.button]


# ---------------------------------------------------------------- runs list


def test_runs_list_shows_each_run_with_status_progress_metrics_and_error(seeded):
    _, ids = seeded
    app = page("pages/training.py")
    shown = texts(app)
    for name in ("run-live", "run-done", "run-broken"):
        assert name in labels(app)
    assert ":orange-badge[training]" in shown and ":green-badge[completed]" in shown and ":red-badge[failed]" in shown
    assert "epoch 2/5" in shown and "ETA" in shown  # the running run: the epoch under way and an ETA
    assert "acc **80.0%**" in shown and "F1 **75.0%**" in shown  # the completed run's best metrics
    assert "out of memory" in shown
    assert "shapes-single_label v1 · convnext/atto" in shown
    # the running run can be cancelled, not deleted; finished runs can be retried and deleted
    assert button(app, f"cancel_list_{ids['running']}")
    assert button(app, f"retry_list_{ids['failed']}") and button(app, f"delete_list_{ids['failed']}")
    with pytest.raises(KeyError):
        button(app, f"delete_list_{ids['running']}")


def test_runs_list_filters(seeded):
    app = page("pages/training.py")
    app.multiselect(key="runs_status").set_value(["failed"]).run()
    assert [b for b in labels(app) if b.startswith("run-")] == ["run-broken"]
    app.multiselect(key="runs_status").set_value([]).run()
    app.text_input(key="runs_search").input("DONE").run()
    assert [b for b in labels(app) if b.startswith("run-")] == ["run-done"]
    app.text_input(key="runs_search").input("nothing like this").run()
    assert "No training runs match." in texts(app)


def test_empty_runs_list_invites_to_start(embedded_stack):
    app = page("pages/training.py")
    assert "No training runs yet" in texts(app)


def test_cancel_from_the_list_asks_the_worker_to_stop(seeded):
    stack, ids = seeded
    app = page("pages/training.py")
    click(app, f"cancel_list_{ids['running']}")
    with stack.session() as session:
        assert session.get(ClsJob, ids["job"]).cancel_requested


def test_delete_removes_the_run_and_its_checkpoint_but_keeps_the_model(seeded):
    stack, ids = seeded
    app = page("pages/training.py")
    click(app, f"delete_list_{ids['done']}")
    with stack.session() as session:
        assert session.get(ClsTrainingRun, ids["done"]) is None
        assert session.get(ClsTrainedModel, ids["model"]) is not None
    assert not stack.storage.exists("runs/x/checkpoint.pt")
    assert "run-done" not in labels(app)


def test_clone_opens_the_wizard_with_the_runs_dataset_and_config(seeded):
    _, ids = seeded
    app = page("pages/training.py")
    click(app, f"clone_list_{ids['failed']}")
    assert app.query_params.get("clone") in (str(ids["failed"]), [str(ids["failed"])])
    assert "New training run (cloned)" in texts(app)
    click(app, "wz_next")  # data step: the run's version is preselected
    assert app.selectbox(key="wz_model_type").value == "convnext"
    click(app, "wz_next")
    assert app.number_input(key="wz_epochs").value == 5 and app.number_input(key="wz_batch_size").value == 4


# ---------------------------------------------------------------- run detail


def test_running_run_detail_shows_live_progress_and_charts(seeded):
    _, ids = seeded
    app = page("pages/training.py", run=ids["running"])
    shown = texts(app)
    assert "epoch 2/5 · batch 3/4 · ETA" in shown
    assert "Best accuracy 40.0%" in shown and "Best epoch 1" in shown
    assert len(app.get("plotly_chart")) == 1
    assert button(app, f"cancel_detail_{ids['running']}")


def test_failed_run_detail_shows_the_error_and_log(seeded):
    _, ids = seeded
    app = page("pages/training.py", run=ids["failed"])
    assert any("Training failed: RuntimeError: out of memory" in e.value for e in app.error)
    assert any("line 2" in c.value for c in app.code)
    assert button(app, f"retry_detail_{ids['failed']}").label == "Retry"  # no checkpoint: a new run


def test_completed_run_detail_links_to_its_model(seeded):
    _, ids = seeded
    app = page("pages/training.py", run=ids["done"])
    assert "Open the trained model" in labels(app)
    assert any('"model_type": "convnext"' in c.value for c in app.code)  # the config, copyable


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4())])
def test_unknown_run_in_the_url_is_a_message(seeded, bad):
    app = page("pages/training.py", run=bad)
    assert app.error and ("is not a valid id" in app.error[0].value or "no training run" in app.error[0].value)


def test_retry_of_a_failed_run_without_checkpoint_starts_a_new_run(seeded, monkeypatch):
    stack, ids = seeded
    started = []
    import core.training.runs

    # Starting would train for real in the in-process pool; the wizard/browser tests do that. Here
    # only the hand-over matters, so start_run is replaced by a recorder (the real create_run runs).
    monkeypatch.setattr(core.training.runs, "start_run", lambda *, run_id, user_id=None, resume=False, **_:
                        started.append((run_id, resume)))
    app = page("pages/training.py", run=ids["failed"])
    click(app, f"retry_detail_{ids['failed']}")
    [(new_id, resume)] = started
    assert new_id != ids["failed"] and not resume
    with stack.session() as session:
        new = session.get(ClsTrainingRun, new_id)
        assert new.name == "run-broken (retry)" and new.status == "pending" and new.config["epochs"] == 5


# ---------------------------------------------------------------- wizard


@pytest.fixture
def recorded_starts(monkeypatch):
    """Start hands the run to core.training.runs.start_run. A real start trains in the in-process pool for
    minutes (the browser test does that end to end); here only the hand-over matters, so start_run is
    a recorder while create_run, the config validation and the rows are real."""
    import core.training.runs

    started = []
    monkeypatch.setattr(core.training.runs, "start_run", lambda *, run_id, user_id=None, resume=False, **_:
                        started.append(run_id))
    return started


def errors(app: AppTest) -> str:
    return "\n".join(e.value for e in app.error)


def test_wizard_walks_six_steps_validates_each_and_starts(embedded_stack, recorded_starts):
    with embedded_stack.session() as session:
        version = seed_version(session, embedded_stack.storage)
        version_id = version.id
    app = page("pages/training.py", new=1)
    assert "**1\\. Data**" in texts(app) and "train images 12" in texts(app) and "classes 3" in texts(app)
    click(app, "wz_next")
    assert app.selectbox(key="wz_model_type").value == "convnext"  # the newcomer default
    app.radio(key="wz__pretrained_source").set_value("scratch").run()
    click(app, "wz_next")
    # training: the recipe's choices show with their reasons; an override sticks, Auto goes back
    assert "**Learning rate**: 0.0013 · *auto*" in texts(app)  # 6e-3 × √(12/256): batch fitted to 12 images
    assert "from scratch: random layers all learn at the full rate" in texts(app)
    click(app, "wz_override_learning_rate")
    assert app.number_input(key="wz_learning_rate").value == pytest.approx(0.0013)
    app.number_input(key="wz_learning_rate").set_value(0.01).run()
    click(app, "wz_override_warmup_epochs")
    click(app, "wz_auto_warmup_epochs")
    assert "**Warmup epochs**:" in texts(app)
    # a batch above the train split is refused
    app.number_input(key="wz_batch_size").set_value(40).run()
    assert "larger than the train split (12 images)" in errors(app)
    app.number_input(key="wz_batch_size").set_value(4).run()
    app.number_input(key="wz_epochs").set_value(2).run()
    assert not app.error
    click(app, "wz_next")
    app.radio(key="wz_augmentation_preset").set_value("light").run()
    app.number_input(key="wz_image_size").set_value(32).run()
    click(app, "wz_next")
    app.number_input(key="wz_freeze_backbone_epochs").set_value(3).run()
    assert "freeze_backbone_epochs (3) must be below epochs (2)" in errors(app)
    app.number_input(key="wz_freeze_backbone_epochs").set_value(0).run()
    click(app, "wz_back")  # back and forth keeps the values
    assert app.number_input(key="wz_image_size").value == 32
    click(app, "wz_next")
    click(app, "wz_next")
    config = json.loads(app.code[0].value)
    assert config["image_size"] == 32 and config["epochs"] == 2 and config["pretrained"] is False
    assert config["num_classes"] == 3 and config["augmentation_preset"] == "light"
    assert config["learning_rate"] == 0.01 and config["recipe_notes"]["learning_rate"] == "set by you"
    assert config["llrd_decay"] == 1.0 and "llrd_decay" in config["recipe_auto"] and config["use_ema"] is False
    assert "Estimated time" in texts(app)
    app.text_input(key="wz__name").input("my first run").run()
    click(app, "wz_start")
    [run_id] = recorded_starts
    assert app.query_params.get("run") in (str(run_id), [str(run_id)])
    with embedded_stack.session() as session:
        run = session.get(ClsTrainingRun, run_id)
        assert run.name == "my first run" and run.dataset_version_id == version_id
        assert run.config["image_size"] == 32 and run.status == "pending"


def test_wizard_refuses_an_image_size_the_model_cannot_take(embedded_stack):
    with embedded_stack.session() as session:
        seed_version(session, embedded_stack.storage)
    app = page("pages/training.py", new=1)
    click(app, "wz_next")
    app.selectbox(key="wz_model_type").set_value("vit").run()
    assert app.selectbox(key="wz_model_size").value == "tiny"
    click(app, "wz_next")
    click(app, "wz_next")
    app.number_input(key="wz_image_size").set_value(100).run()
    assert "must be a multiple of 16" in errors(app) and app.button(key="wz_next").disabled


def test_wizard_without_datasets_says_what_to_do(embedded_stack):
    app = page("pages/training.py", new=1)
    assert "No datasets yet" in texts(app) and app.button(key="wz_next").disabled


def test_wizard_creates_a_version_now(embedded_stack):
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "fresh")
        classes = [make_class(session, name) for name in ("a", "b")]
        for i in range(6):
            make_dataset_image(session, embedded_stack.storage, dataset, seed=i, classes=[classes[i % 2]])
    app = page("pages/training.py", new=1)
    assert "no version yet" in texts(app) and app.button(key="wz_next").disabled
    app.button[labels(app).index("Create a version now")].click().run()
    assert not app.exception
    assert "v1 · 6 labeled images · 2 classes" in app.selectbox(key="wz__version_id").format_func(
        app.selectbox(key="wz__version_id").value)


def test_wizard_cancel_returns_to_the_list(embedded_stack):
    app = page("pages/training.py", new=1)
    click(app, "wz_cancel")
    assert "New training run" in labels(app) and not app.query_params.get("new")


# ---------------------------------------------------------------- models


def test_models_list_and_set_default(seeded):
    stack, ids = seeded
    app = page("pages/models.py")
    assert "shapes-convnext" in labels(app)
    assert "accuracy **66.7%**" in texts(app) and ":blue-badge[active]" in texts(app)
    click(app, f"default_{ids['model']}")
    with stack.session() as session:
        assert session.get(ClsTrainedModel, ids["model"]).is_default
    assert any(line.startswith(":green-badge[") and "default]" in line for line in texts(app).splitlines())
    app.text_input(key="models_search").input("zzz").run()
    assert "No models match." in texts(app)


def test_model_detail_metrics_tables_confusion_and_mistakes(seeded):
    _, ids = seeded
    app = page("pages/models.py", model=ids["model"])
    shown = texts(app)
    assert "Accuracy 66.7%" in shown and "F1 (macro) 60.0%" in shown and "Scored on the test split" in shown
    per_class = app.dataframe[0].value
    assert list(per_class["f1"]) == sorted(per_class["f1"])  # weakest class first
    app.selectbox(key="per_class_sort").set_value("class").run()
    assert list(app.dataframe[0].value["class"]) == sorted(per_class["class"])
    assert any('"type":"heatmap"' in chart.proto.spec.replace(" ", "") for chart in app.get("plotly_chart"))
    app.toggle(key="cm_normalized").set_value(True).run()
    assert not app.exception
    # misclassified: the seeded first test image is confidently wrong
    assert "1 of 3 test images are misclassified" in texts(app)
    assert "true: **" in texts(app) and "predicted: **" in texts(app)
    assert len(app.get("image")) >= 1


def test_threshold_explorer_saves_the_abstain_threshold(seeded):
    stack, ids = seeded
    app = page("pages/models.py", model=ids["model"])
    app.slider(key="th_target").set_value(1.0).run()
    # the lowest slider value answering only the right images (the exact cut is 0.80; 0.61 answers the same)
    assert "Suggested abstain threshold: **0.61**" in texts(app) and "it answers 67% of the validation" in texts(app)
    app.slider(key="th_abstain").set_value(0.85).run()
    assert "Answered 0%" in texts(app)
    app.slider(key="th_abstain").set_value(0.7).run()
    assert "Answered 67%" in texts(app) and "Accuracy of answered 100.0%" in texts(app)
    app.slider(key="th_abstain").set_value(0.5).run()
    click(app, "th_save")
    with stack.session() as session:
        saved = session.get(ClsTrainedModel, ids["model"]).thresholds
    assert saved["abstain"] == 0.5 and saved["target_accuracy"] == 1.0 and saved["split"] == "val"
    assert "Saved: abstain below 0.50" in texts(app)


def test_threshold_explorer_multi_label_saves_f1_optimal_thresholds(embedded_stack):
    storage = embedded_stack.storage
    with embedded_stack.session() as session:
        version = seed_version(session, storage, task_type="multi_label")
        run = seed_run(session, version, "completed", name="multi", epochs_done=5)
        model_id = seed_model(session, storage, run, version, name="multi-model", multi=True).id
        names = list(version.class_names)
    app = page("pages/models.py", model=model_id)
    assert "Multi-label" in texts(app)  # per-class 2×2 table instead of a heatmap
    assert "Tuned on the validation split (3 images)" in texts(app)
    click(app, "th_optimal")
    with embedded_stack.session() as session:
        saved = session.get(ClsTrainedModel, model_id).thresholds
    assert set(saved["per_class"]) == set(names) and saved["method"] == "f1_optimal"
    # the first val image's classes sit at 0.35: the F1-optimal thresholds go down to reach them
    assert min(saved["per_class"].values()) <= 0.35


def test_model_files_download_buttons_and_onnx_export_offer(seeded):
    _, ids = seeded
    app = page("pages/models.py", model=ids["model"])
    downloads = app.get("download_button")
    assert len(downloads) == 2  # checkpoint and TorchScript; no ONNX yet
    assert "Export ONNX" in labels(app)
    assert "torchscript max abs diff 2.0e-06" in texts(app)


def test_model_manage_rename_deactivate_delete(seeded):
    stack, ids = seeded
    app = page("pages/models.py", model=ids["model"])
    form_name = next(t for t in app.text_input if t.label == "Name")
    form_name.input("renamed model")
    next(t for t in app.text_area if t.label == "Description").input("trained on shapes")
    app.button[labels(app).index("Save name and description")].click().run()
    with stack.session() as session:
        row = session.get(ClsTrainedModel, ids["model"])
        assert (row.name, row.description) == ("renamed model", "trained on shapes")
    app.button[labels(app).index("Deactivate")].click().run()
    with stack.session() as session:
        assert not session.get(ClsTrainedModel, ids["model"]).is_active
    app.button[labels(app).index("Activate")].click().run()
    click(app, "delete_model")
    with stack.session() as session:
        assert session.get(ClsTrainedModel, ids["model"]) is None
    assert not any(stack.storage.list_keys(f"models/{ids['model']}/"))


def test_rename_to_an_empty_name_is_refused(seeded):
    stack, ids = seeded
    app = page("pages/models.py", model=ids["model"])
    next(t for t in app.text_input if t.label == "Name").input("   ")
    app.button[labels(app).index("Save name and description")].click().run()
    assert "cannot be empty" in errors(app)
    with stack.session() as session:
        assert session.get(ClsTrainedModel, ids["model"]).name == "shapes-convnext"


def test_predict_with_this_model_opens_the_predict_page_with_its_id(seeded):
    _, ids = seeded
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    app.switch_page("pages/models.py")
    app.query_params["model"] = str(ids["model"])
    app.run()
    app.button[labels(app).index("Predict with this model")].click().run()
    assert not app.exception
    assert app.title[0].value == "Predict"
    assert app.query_params.get("model") in (str(ids["model"]), [str(ids["model"])])


@pytest.mark.parametrize("bad", ["12", str(uuid.uuid4())])
def test_unknown_model_in_the_url_is_a_message(seeded, bad):
    app = page("pages/models.py", model=bad)
    assert app.error and ("is not a valid id" in app.error[0].value or "no trained model" in app.error[0].value)
