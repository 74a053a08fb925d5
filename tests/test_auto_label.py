"""Batch prediction / AI auto-labeling through the predictions queue (embedded and production
stacks): manual and reviewed labels survive, AI labels land in the review and low-confidence queues,
overwrite on request, CSV export, bad requests."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core.errors import InvalidInput
from core.models import ClsLabel
from tests.factories import ADMIN, person
from tests.model_factory import digit_images, register_model, shared_checkpoint, small_torch_settings
from tests.training_data import make_digits_version, store_image

USER = person("user@acme.com")


@pytest.fixture(autouse=True)
def small_torch(tmp_path, monkeypatch):
    yield from small_torch_settings(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def setup(stack, checkpoint):
    """A 3-class digits dataset (2 labeled per class) plus 6 unlabeled digits, and a model whose
    outputs are this dataset's classes. Image 0 gets a manual label, 1 a reviewed AI label, 2 an
    unreviewed AI label; the 6 new ones have none."""
    from core.datasets.dataset import add_images_to_dataset
    from core.labeling.labels import clear_labels, mark_reviewed, set_labels

    with stack.session() as session:
        version = make_digits_version(session, stack.storage, name="auto", classes=3, per_class=2, size=32,
                                      split_fractions=(0.5, 0.5, 0.0))
        class_ids = [uuid.UUID(c) for c, _ in sorted(version.class_mapping.items(), key=lambda kv: kv[1])]
        model_id = register_model(session, stack.storage, checkpoint, class_ids=class_ids)
        images, _ = digit_images(3, 2, offset=30)
        new = [store_image(session, stack.storage, data, f"new{i}.png") for i, data in enumerate(images)]
        add_images_to_dataset(actor=ADMIN, session=session, dataset_id=version.dataset_id, image_ids=new)
        labeled = sorted(version.train_image_ids + version.val_image_ids)
        manual, reviewed, ai = (uuid.UUID(i) for i in labeled[:3])
        wrong = class_ids[2]
        for image_id in (reviewed, ai):  # an AI save keeps a person's label of the same class: start empty
            clear_labels(actor=ADMIN, session=session, dataset_id=version.dataset_id, image_id=image_id)
        set_labels(session=session, dataset_id=version.dataset_id, image_id=manual, class_ids=[wrong], actor=USER)
        set_labels(actor=ADMIN, session=session, dataset_id=version.dataset_id, image_id=reviewed, class_ids=[wrong],
                   is_ai_generated=True, confidence=0.9, ai_model="old")
        mark_reviewed(session=session, dataset_id=version.dataset_id, image_id=reviewed, actor=USER)
        set_labels(actor=ADMIN, session=session, dataset_id=version.dataset_id, image_id=ai, class_ids=[wrong],
                   is_ai_generated=True, confidence=0.99, ai_model="old")
        return version.dataset_id, model_id, {"manual": manual, "reviewed": reviewed, "ai": ai, "new": new}, wrong


def labels(stack, dataset_id):
    with stack.session() as session:
        return {row.image_id: row for row in session.scalars(select(ClsLabel).where(ClsLabel.dataset_id == dataset_id))}


def test_manual_labels_survive_a_batch_prediction(stack, checkpoint):
    from core.jobs.rows import get_job
    from core.labeling.queue import queue_ids
    from core.prediction.auto_label import read_csv, start_batch_prediction

    dataset_id, model_id, ids, wrong = setup(stack, checkpoint)
    before = labels(stack, dataset_id)
    job_id = start_batch_prediction(model_id=model_id, scope="dataset", dataset_id=dataset_id, write_labels=True,
                                    export_csv=True, actor=USER)
    stack.drain_jobs()
    with stack.session() as session:
        job = get_job(session=session, job_id=job_id)
        assert job.status == "succeeded", job.error
        result = dict(job.result)
    # the 6 labeled images: 4 manual labels (from the version) + 1 reviewed AI label are kept
    assert result["total"] == 12 and result["predicted"] == 12 and result["kept"] == 5 and result["labeled"] == 7
    after = labels(stack, dataset_id)
    for image_id in set(before) - {ids["ai"]}:  # a person's labels stay exactly as they were
        old, new = before[image_id], after[image_id]
        assert (new.class_id, new.is_ai_generated, new.is_reviewed, new.ai_model) == (
            old.class_id, old.is_ai_generated, old.is_reviewed, old.ai_model)
    assert after[ids["ai"]].ai_model.startswith("tiny")  # an unreviewed AI label is replaced
    for image_id in ids["new"]:
        row = after[image_id]
        assert row.is_ai_generated and not row.is_reviewed and 0 < row.confidence <= 1
    with stack.session() as session:  # the labeling page's review queue now holds the AI labels
        review = set(queue_ids(session=session, dataset_id=dataset_id, mode="review", limit=50))
        low = set(queue_ids(session=session, dataset_id=dataset_id, mode="low_confidence", limit=50, threshold=1.01))
    assert set(ids["new"]) <= review and ids["manual"] not in review and ids["reviewed"] not in review
    assert set(ids["new"]) <= low
    rows = read_csv(stack.storage, result["csv_key"])
    assert len(rows) == 12 and set(rows[0]) >= {"image_id", "filename", "predicted", "confidence", "digit-0"}


def test_overwrite_replaces_manual_labels_and_csv_only_changes_nothing(embedded_stack, checkpoint):
    from core.models import ClsTrainedModel
    from core.prediction.auto_label import read_csv, run_batch_prediction

    dataset_id, model_id, ids, wrong = setup(embedded_stack, checkpoint)
    before = {k: (v.class_id, v.is_ai_generated) for k, v in labels(embedded_stack, dataset_id).items()}
    out = run_batch_prediction(actor=ADMIN, model=model_id, scope="selection", dataset_id=dataset_id,
                               image_ids=[ids["manual"], ids["new"][0]], export_csv=True)
    assert out["total"] == 2 and out["labeled"] == 0 and "csv_key" in out
    assert {k: (v.class_id, v.is_ai_generated) for k, v in labels(embedded_stack, dataset_id).items()} == before
    out = run_batch_prediction(model=model_id, scope="selection", dataset_id=dataset_id, image_ids=[ids["manual"]],
                               write_labels=True, overwrite=True, actor=USER, export_csv=True)
    predicted = read_csv(embedded_stack.storage, out["csv_key"])[0]["predicted"]
    with embedded_stack.session() as session:
        mapping = session.get(ClsTrainedModel, model_id).class_mapping
    expected = next(c for c, i in mapping.items() if f"digit-{i}" == predicted)
    row = labels(embedded_stack, dataset_id)[ids["manual"]]
    # overwritten with the prediction (a person's label of the same class stays theirs: labels service rule)
    assert out["labeled"] == 1 and str(row.class_id) == expected
    assert row.is_ai_generated or str(row.class_id) == str(wrong)
    out = run_batch_prediction(actor=ADMIN, model=model_id, scope="library", export_csv=True)
    assert out["total"] == 12


def test_bad_requests(embedded_stack, checkpoint):
    from core.prediction.auto_label import check_request, run_batch_prediction

    dataset_id, model_id, _, _ = setup(embedded_stack, checkpoint)
    for kwargs, message in (
        ({"scope": "everything", "export_csv": True}, "scope"),
        ({"scope": "dataset", "dataset_id": dataset_id}, "choose what"),
        ({"scope": "dataset", "export_csv": True}, "needs a dataset"),
        ({"scope": "selection", "image_ids": [], "export_csv": True}, "selection is empty"),
        ({"scope": "library", "write_labels": True}, "written to a dataset"),
    ):
        with pytest.raises(InvalidInput, match=message):
            check_request(**kwargs)
    with pytest.raises(InvalidInput, match="no images"):
        run_batch_prediction(actor=ADMIN, model=model_id, scope="selection", dataset_id=dataset_id, image_ids=[uuid.uuid4()],
                             export_csv=True)


def test_cli_predict_batch(embedded_stack, checkpoint, tmp_path, capsys):
    import csv
    import json

    from core.cli import main

    dataset_id, model_id, ids, _ = setup(embedded_stack, checkpoint)
    out_file = tmp_path / "predictions.csv"
    assert main(["predict-batch", "--model", str(model_id), "--dataset", "auto", "--write-labels",
                 "--csv", str(out_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labeled"] == 7 and result["kept"] == 5 and result["csv"] == str(out_file)
    assert len(list(csv.DictReader(out_file.open()))) == 12
    assert labels(embedded_stack, dataset_id)[ids["new"][0]].is_ai_generated
    assert main(["predict-batch", "--model", str(model_id), "--dataset", "missing", "--csv", str(out_file)]) != 0


def test_selection_by_ids_folder_and_tag_in_core_and_cli(embedded_stack, checkpoint, tmp_path, capsys):
    import csv
    import json

    from core.cli import main
    from core.library.images import update_image
    from core.prediction.auto_label import parse_image_ids, selection_ids

    dataset_id, model_id, ids, _ = setup(embedded_stack, checkpoint)
    new = ids["new"]
    with embedded_stack.session() as session:
        for image_id in new[:2]:
            update_image(actor=ADMIN, session=session, image_id=image_id, folder="batch-a")
        update_image(actor=ADMIN, session=session, image_id=new[2], tags=["pick"])
    assert parse_image_ids(f"{new[0]}, {new[1]}\n{new[0]}") == new[:2]  # separators, each once
    with pytest.raises(InvalidInput, match="'nope' is not an image id"):
        parse_image_ids(f"{new[0]} nope")
    with embedded_stack.session() as session:
        assert set(selection_ids(session=session, folders=["batch-a"])) == set(new[:2])
        assert selection_ids(session=session, tags=["pick"]) == [new[2]]
        # folder AND tag: no image is both; the pasted id stays
        assert selection_ids(session=session, image_ids=[new[3]], folders=["batch-a"], tags=["pick"]) == [new[3]]
        assert set(selection_ids(session=session, image_ids=[new[3]], folders=["batch-a"])) == {*new[:2], new[3]}

    out_file = tmp_path / "selection.csv"
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"{new[3]}\n{uuid.uuid4()}\n")  # one id that is not in the library
    assert main(["predict-batch", "--model", str(model_id), "--folder", "batch-a", "--tag", "pick",
                 "--image-ids-file", str(ids_file), "--csv", str(out_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scope"] == "selection" and result["total"] == 1 and result["not_found"] == 1
    assert main(["predict-batch", "--model", str(model_id), "--folder", "batch-a", "--image-id", str(new[2]),
                 "--dataset", "auto", "--write-labels", "--csv", str(out_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == 3 and result["labeled"] == 3 and result["not_found"] == 0
    assert {row["image_id"] for row in csv.DictReader(out_file.open())} == {str(i) for i in new[:3]}
    after = labels(embedded_stack, dataset_id)
    assert all(after[i].is_ai_generated for i in new[:3]) and new[3] not in after
    # no scope, two scopes, an empty selection: refused with a message
    assert main(["predict-batch", "--model", str(model_id), "--csv", str(out_file)]) != 0
    assert main(["predict-batch", "--model", str(model_id), "--library", "--tag", "pick", "--csv", str(out_file)]) != 0
    assert main(["predict-batch", "--model", str(model_id), "--folder", "nowhere", "--csv", str(out_file)]) != 0
    assert "selection is empty" in capsys.readouterr().err
