"""Roles held in practice: what each role may do, actions whose role depends on their arguments, audit
rows with who did it, and a role removed while work is under way: a queued job (on RQ with a real
worker process, and in-process) fails with the refusal and writes nothing; a long import, a bulk
action and a training run stop at their next batch or epoch.

(That every declared service refuses a viewer and a labeler is tests/test_write_access.py.)"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.config import reset_settings_cache
from core.errors import PermissionDenied
from core.models import ClsAuditEvent, ClsClass, ClsImage, ClsJob, ClsLabel
from core.users import oidc_user
from tests.factories import drawn_image_bytes, make_class, make_dataset, make_dataset_image, make_image_row

ROOT = Path(__file__).resolve().parents[1]
BOSS, ANN, GUEST = oidc_user("boss@acme.com"), oidc_user("ann@acme.com"), oidc_user("guest@acme.com")


def set_roles(monkeypatch, roles: str) -> None:
    """Roles come from configuration and are read again at every check (a change applies at once)."""
    monkeypatch.setenv("ROLES", roles)
    monkeypatch.setenv("DEFAULT_ROLE", "viewer")
    reset_settings_cache()


@pytest.fixture
def team(monkeypatch):
    set_roles(monkeypatch, "boss@acme.com=admin,ann@acme.com=labeler")
    yield
    reset_settings_cache()


@pytest.fixture
def world(embedded_stack, team):
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "pets")
        cat, dog = make_class(session, "cat"), make_class(session, "dog")
        image = make_dataset_image(session, embedded_stack.storage, dataset, seed=1, classes=[cat])
        spare = make_image_row(session, embedded_stack.storage, seed=2)
        return {"dataset": dataset.id, "cat": cat.id, "dog": dog.id, "image": image.id, "spare": spare.id}


def count(stack, model) -> int:
    with stack.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_labeler_labels_skips_and_clears_but_a_viewer_only_looks(embedded_stack, world):
    from core.labeling import actions
    from core.labeling import queue as labeling

    common = {"dataset_id": world["dataset"], "image_id": world["image"]}
    with embedded_stack.session() as session:
        card = labeling.image_card(session=session, **common)  # a viewer reads
        with pytest.raises(PermissionDenied, match="labeling needs the labeler role; you are a viewer"):
            actions.save(session=session, actor=GUEST, class_ids=[world["dog"]], shown_revision=0, **common)
    with embedded_stack.session() as session:
        saved = actions.save(session=session, actor=ANN, class_ids=[world["dog"]],
                              shown_revision=card.label_revision, **common)
        assert saved.outcome == "saved"
        assert actions.clear(session=session, actor=ANN, shown_revision=saved.card.label_revision,
                              **common).outcome == "cleared"
        assert actions.skip(session=session, actor=ANN, **common).outcome == "skipped"
    assert count(embedded_stack, ClsLabel) == 0  # cleared


def test_a_viewer_browses_the_labeling_queue_without_holding_images(embedded_stack, world):
    from core.db import session_scope
    from core.labeling import keyboard_session as flow
    from core.models import ClsDatasetImage

    state = flow.start(session_scope, dataset_id=world["dataset"], actor=GUEST, mode="all")
    assert state.card is not None
    flow.apply_keys(session_scope, state, batch={"load": "a", "seq": 1, "keys": ["right", "left"]}, classes=[])
    flow.apply_keys(session_scope, state, batch={"load": "a", "seq": 2, "keys": ["s"]}, classes=[])
    assert state.message == ("error", "skipping images needs the labeler role; you are a viewer")
    with embedded_stack.session() as session:
        assert session.scalars(select(ClsDatasetImage.reserved_by)).all() == [None]  # nothing held
        assert session.scalar(select(ClsDatasetImage.status)) == "labeled"  # nothing skipped


def test_who_did_it_is_recorded_and_destructive_actions_are_audited(embedded_stack, world):
    from core.datasets import classes
    from core.datasets import dataset as datasets
    from core.labeling.labels import set_labels
    from core.library import bulk as bulk_actions

    with embedded_stack.session() as session:
        set_labels(session=session, actor=ANN, dataset_id=world["dataset"], image_id=world["image"],
                   class_ids=[world["dog"]])
        created = classes.create_class(session=session, actor=BOSS, name="bird")
        assert created.user_id == BOSS.id
    bulk_actions.set_label(actor=ANN, dataset_id=world["dataset"], image_ids=[world["image"]], class_id=world["cat"])
    bulk_actions.delete_images(actor=BOSS, image_ids=[world["spare"]], storage=embedded_stack.storage)
    with embedded_stack.session() as session:
        classes.merge_classes(session=session, actor=BOSS, source_ids=[world["dog"]], target_id=world["cat"])
        datasets.delete_dataset(session=session, actor=BOSS, dataset_id=world["dataset"])
    with embedded_stack.session() as session:
        events = {e.action: e for e in session.scalars(select(ClsAuditEvent))}
    assert set(events) == {"bulk_set_label", "delete_images", "merge_classes", "delete_dataset"}
    assert (events["bulk_set_label"].user_email, events["bulk_set_label"].row_count) == ("ann@acme.com", 1)
    assert (events["delete_images"].user_email, events["delete_images"].row_count) == ("boss@acme.com", 1)


# ---------------------------------------------------------------- roles that depend on the arguments


def test_batch_prediction_needs_the_admin_role_only_to_overwrite_peoples_labels(embedded_stack, world):
    from core.prediction.auto_label import start_batch_prediction

    request = {"model_id": "default", "scope": "dataset", "dataset_id": world["dataset"], "write_labels": True}
    with pytest.raises(PermissionDenied, match="overwriting labels people set needs the admin role; you are a labeler"):
        start_batch_prediction(actor=ANN, overwrite=True, **request)
    with pytest.raises(PermissionDenied, match="predicting in batch needs the labeler role; you are a viewer"):
        start_batch_prediction(actor=GUEST, **request)
    assert count(embedded_stack, ClsJob) == 0
    job_id = start_batch_prediction(actor=ANN, **request)
    embedded_stack.drain_jobs()
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.user_id == ANN.id and job.params["actor"]["email"] == "ann@acme.com"
        assert "no default model" in job.error  # it ran as ann (a labeler may predict), and failed on the model


def test_a_job_is_cancelled_by_whoever_started_it_or_an_admin(embedded_stack, world):
    from core.jobs.rows import create_job, request_cancel

    with embedded_stack.session() as session:
        boss_job = create_job(session=session, actor=BOSS, kind="test_add_numbers", params={"a": 1, "b": 2}).id
        ann_job = create_job(session=session, actor=ANN, kind="test_add_numbers", params={"a": 1, "b": 2}).id
    with embedded_stack.session() as session:
        with pytest.raises(PermissionDenied, match="cancelling another person's job needs the admin role"):
            request_cancel(session=session, actor=ANN, job_id=boss_job)
        assert request_cancel(session=session, actor=ANN, job_id=ann_job).status == "cancelled"
        assert request_cancel(session=session, actor=BOSS, job_id=boss_job).status == "cancelled"


# ---------------------------------------------------------------- a role removed while work is under way


def _queue_url_import(actor) -> uuid.UUID:
    from core.imports.urls import start_url_import

    # a loopback URL: had the job run past its role check, the import would refuse it, never fetch it
    return start_url_import(actor=actor, text="http://127.0.0.1:9/never-fetched.png")


def _refused_and_nothing_written(stack, job_id) -> None:
    with stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert job.status == "failed", (job.status, job.error)
        assert job.error == "importing needs the admin role; you are a viewer"
        assert job.result is None
    assert count(stack, ClsImage) == 0 and count(stack, ClsClass) == 0


def test_a_queued_job_runs_as_its_starter_and_fails_when_the_role_was_removed_rq(production_stack, monkeypatch):
    """RQ with a real worker process (`rq worker --burst`) after the starter lost the admin role."""
    set_roles(monkeypatch, "boss@acme.com=admin")
    job_id = _queue_url_import(BOSS)
    with production_stack.session() as session:
        assert session.get(ClsJob, job_id).params["actor"]["email"] == "boss@acme.com"
    set_roles(monkeypatch, "")  # boss is now a viewer (DEFAULT_ROLE)
    worker = subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", production_stack.redis_url,
                             "imports"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-2000:]
    _refused_and_nothing_written(production_stack, job_id)
    reset_settings_cache()


def test_a_queued_job_fails_when_the_role_was_removed_in_process(embedded_stack, monkeypatch):
    """The in-process backend runs core.jobs.rows.run_job in a thread; here it is called after the change."""
    from core.jobs.rows import create_job, run_job

    set_roles(monkeypatch, "boss@acme.com=admin")
    with embedded_stack.session() as session:
        job_id = create_job(session=session, actor=BOSS, kind="url_import", params={"urls": ["http://127.0.0.1:9/never-fetched.png"]}).id
    set_roles(monkeypatch, "")
    run_job(job_id)
    _refused_and_nothing_written(embedded_stack, job_id)
    reset_settings_cache()


def test_a_job_without_a_recorded_actor_never_runs(embedded_stack):
    from core.jobs.rows import run_job

    with embedded_stack.session() as session:
        job = ClsJob(kind="test", queue="imports", function="tests.fixtures.add_numbers", params={"a": 1, "b": 2},
                     status="queued")
        session.add(job)
        session.flush()
        job_id = job.id
    assert run_job(job_id) is None
    with embedded_stack.session() as session:
        job = session.get(ClsJob, job_id)
        assert (job.status, job.result) == ("failed", None)
        assert "records no actor" in job.error


def test_an_import_stops_at_the_next_batch_when_the_role_is_removed(embedded_stack, monkeypatch):
    from core.library.ingest import ingest_many

    set_roles(monkeypatch, "boss@acme.com=admin")
    # ingest_many commits in batches of 64: 136 items are written as 64, then 72
    items = [(f"img_{i}.png", drawn_image_bytes(1000 + i, (24, 24))) for i in range(136)]

    def demote_after_first_batch(done, total):
        set_roles(monkeypatch, "")

    with pytest.raises(PermissionDenied, match="importing needs the admin role; you are a viewer"):
        ingest_many(items=items, actor=BOSS, storage=embedded_stack.storage, workers=1,
                    progress=demote_after_first_batch)
    assert count(embedded_stack, ClsImage) == 64  # the first batch (committed before the change) only
    reset_settings_cache()


def test_a_bulk_action_stops_at_the_next_batch_when_the_role_is_removed(embedded_stack, monkeypatch):
    from core.library import bulk as bulk_actions

    set_roles(monkeypatch, "ann@acme.com=labeler")
    with embedded_stack.session() as session:
        dataset = make_dataset(session, "big")
        cat = make_class(session, "cat")
        ids = [make_dataset_image(session, embedded_stack.storage, dataset, seed=i).id for i in range(250)]
        dataset_id, cat_id = dataset.id, cat.id
    seen = []

    def demote_after_first_batch(done, total, message):
        seen.append(done)
        if done:
            set_roles(monkeypatch, "")

    with pytest.raises(PermissionDenied, match="you are a viewer .*stopped after 200 of 250 images"):
        bulk_actions.set_label(actor=ANN, dataset_id=dataset_id, image_ids=ids, class_id=cat_id,
                               progress=demote_after_first_batch)
    assert seen == [0, 200]  # the first batch (bulk_actions.FIRST_BATCH) ran, the second was refused
    with embedded_stack.session() as session:
        assert session.scalar(select(func.count()).select_from(ClsLabel)) == 200
        (event,) = session.scalars(select(ClsAuditEvent)).all()
        assert event.row_count == 200  # the audit row says what the batches that ran changed
    reset_settings_cache()


def test_training_stops_after_the_epoch_in_which_the_role_was_removed(embedded_stack, monkeypatch, tmp_path):
    from core.models import ClsTrainedModel
    from core.training import run_job
    from core.training import runs as training
    from tests.model_factory import small_torch_settings
    from tests.test_training import TINY
    from tests.training_data import make_digits_version

    settings = small_torch_settings(tmp_path, monkeypatch)
    next(settings)
    set_roles(monkeypatch, "boss@acme.com=admin")
    with embedded_stack.session() as session:
        version = make_digits_version(session, embedded_stack.storage, classes=3, per_class=6, size=32)
        run_id = training.create_run(session=session, actor=BOSS, version_id=version.id,
                                     config={**TINY, "epochs": 3}).id
    recorded = run_job._RunJob.record_epoch

    def record_then_demote(self, state, key):
        recorded(self, state, key)
        set_roles(monkeypatch, "")  # boss loses the admin role during the run

    monkeypatch.setattr(run_job._RunJob, "record_epoch", record_then_demote)
    training.start_run(actor=BOSS, run_id=run_id, inline=True)
    with embedded_stack.session() as session:
        run = training.get_run(session=session, run_id=run_id)
        assert (run.status, run.current_epoch) == ("failed", 1)
        assert run.error_message == "training a model needs the admin role; you are a viewer"
        assert session.scalar(select(func.count()).select_from(ClsTrainedModel)) == 0
    reset_settings_cache()
    next(settings, None)


def test_archive_import_job_is_refused_for_a_viewer_before_anything_is_stored(embedded_stack, world):
    from core.imports.archive import ImportLabeledDatasetRequest, start_archive_import
    from tests.test_archive_import import build_zip

    with pytest.raises(PermissionDenied, match="importing needs the admin role; you are a labeler"):
        start_archive_import(actor=ANN, source=io.BytesIO(build_zip({"cats/a.png": drawn_image_bytes(1)})),
                             request=ImportLabeledDatasetRequest(dataset_id=str(world["dataset"])))
    assert list(embedded_stack.storage.list_keys("imports/")) == []
    assert count(embedded_stack, ClsJob) == 0
