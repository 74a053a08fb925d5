"""core/datasets/split_checks.py: straddling near duplicates reported and joined only on request; classes
without val or test images warned before a version or a training run; the CLI's words for both."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.errors import PermissionDenied
from core.models import ClsDatasetImage
from core.users import User, operator_user, user_id_for
from tests.factories import make_class, make_dataset, make_dataset_image


def _world(stack):
    """x: 6 train, 2 val, 2 test, one train image's near copy in val; y: 3 train images only."""
    with stack.session() as session:
        dataset = make_dataset(session, "checks")
        x, y = make_class(session, "x"), make_class(session, "y")
        original = make_dataset_image(session, stack.storage, dataset, seed=1, classes=[x], split="train", phash=True)
        copy = make_dataset_image(session, stack.storage, dataset, seed=1, classes=[x], split="val", near_copy=True)
        for seed, split in enumerate(["train"] * 5 + ["val", "test", "test"], start=10):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[x], split=split, phash=True)
        for seed in range(30, 33):
            make_dataset_image(session, stack.storage, dataset, seed=seed, classes=[y], split="train", phash=True)
        return dataset.id, original.id, copy.id


def _split(stack, image_id):
    with stack.session() as session:
        return session.scalar(select(ClsDatasetImage.split).where(ClsDatasetImage.image_id == image_id))


@pytest.mark.parametrize("how", ["train", "drop"])
def test_straddling_groups_are_reported_then_joined_only_when_asked(stack, how, monkeypatch):
    from core.datasets.split_checks import join_straddling, straddling_duplicates, version_warnings, warning_lines
    from core.datasets.versions import create_version

    dataset_id, original, copy = _world(stack)
    with stack.session() as session:
        report = straddling_duplicates(session=session, dataset_id=dataset_id, storage=stack.storage)
        warnings = version_warnings(session=session, dataset_id=dataset_id, storage=stack.storage)
    assert report["count"] == 1 and report["images"] == 2
    assert {(m["filename"], m["split"]) for m in report["examples"][0]} == {("img_1.png", "train"),
                                                                             ("img_1.png", "val")}
    assert warnings["missing_eval"] == [{"class": "y", "missing": ["val", "test"], "images": 3}]
    lines = warning_lines(warnings)
    assert any("'y' has no val or test images" in line for line in lines)
    assert any("1 near-duplicate groups" in line for line in lines)
    with stack.session() as session:  # a version moves nothing
        version = create_version(session=session, actor=operator_user(), storage=stack.storage, dataset_id=dataset_id)
        assert version.split_counts == {"train": 9, "val": 2, "test": 2}
    assert _split(stack, copy) == "val"
    from core.config import reset_settings_cache

    monkeypatch.setenv("ROLES", "l@x.com=labeler")
    reset_settings_cache()
    labeler = User(id=user_id_for("l@x.com"), email="l@x.com", name="l", role="labeler")
    with pytest.raises(PermissionDenied, match="admin"), stack.session() as session:
        join_straddling(session=session, actor=labeler, dataset_id=dataset_id, how=how)
    with stack.session() as session:
        done = join_straddling(session=session, actor=operator_user(), dataset_id=dataset_id, how=how,
                               storage=stack.storage)
    assert done == {"groups": 1, "moved_to_train": int(how == "train"), "removed_from_dataset": int(how == "drop")}
    assert _split(stack, copy) == ("train" if how == "train" else None) and _split(stack, original) == "train"
    with stack.session() as session:
        assert straddling_duplicates(session=session, dataset_id=dataset_id, storage=stack.storage)["count"] == 0


def test_cli_reports_and_joins_and_version_warns_on_stderr(embedded_stack, capsys):
    import json

    from core.cli import main

    dataset_id, _, copy = _world(embedded_stack)
    assert main(["datasets", "version", "checks"]) == 0
    out = capsys.readouterr()
    assert "warning: class 'y' has no val or test images" in out.err
    assert json.loads(out.out)["warnings"]["straddling_duplicates"]["count"] == 1
    assert main(["datasets", "duplicates", "checks"]) == 0
    report = json.loads(capsys.readouterr().out)["straddling"]
    assert report["count"] == 1 and {m["filename"] for m in report["examples"][0]} == {"img_1.png"}
    assert main(["datasets", "duplicates", "checks", "--join", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["joined"]["moved_to_train"] == 1
    assert _split(embedded_stack, copy) == "train"
