"""Label-error finder on real images (scikit-learn's digits): 10% of the train labels flipped on
purpose are ranked above the clean ones (precision at k printed); finding changes nothing; accept /
keep / skip with the test-split guard and the change record."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import select

from core.errors import Conflict, InvalidInput, NotFound
from core.models import ClsDatasetImage, ClsLabel, ClsLabelChange
from tests.factories import ADMIN, person
from tests.training_data import make_digits_version

USER = person("user@acme.com")


def flipped_dataset(stack, *, classes=5, per_class=40, fraction=0.1, seed=1):
    """Digits with `fraction` of the train labels moved to another class, and a version of that."""
    from core.datasets.versions import create_version
    from core.labeling.labels import set_labels

    with stack.session() as session:
        version = make_digits_version(session, stack.storage, name="noisy", classes=classes, per_class=per_class,
                                      size=16, split_fractions=(0.8, 0.1, 0.1))
        dataset_id = version.dataset_id
        class_ids = {int(i): c for c, i in version.class_mapping.items()}
        rng = np.random.default_rng(seed)
        train = sorted(version.train_image_ids)
        flipped = set(rng.choice(train, size=round(len(train) * fraction), replace=False).tolist())
        links = {str(r.image_id): r for r in session.scalars(select(ClsLabel).where(ClsLabel.dataset_id == dataset_id))}
        index_of = {c: i for i, c in class_ids.items()}
        for image_id in sorted(flipped):  # sorted: a set iterates in a per-process hash order
            given = index_of[str(links[image_id].class_id)]
            wrong = (given + int(rng.integers(1, classes))) % classes
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[class_ids[wrong]])
        create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
    return dataset_id, flipped


def labels_now(stack, dataset_id):
    with stack.session() as session:
        return {(r.image_id, r.class_id) for r in session.scalars(select(ClsLabel).where(ClsLabel.dataset_id == dataset_id))}


def find_issues_changing_nothing(stack, dataset_id):
    from core.prediction.label_errors import find_issues

    before = labels_now(stack, dataset_id)
    with stack.session() as session:
        result = find_issues(session=session, storage=stack.storage, dataset_id=dataset_id)
    assert labels_now(stack, dataset_id) == before  # finding changes nothing
    return result


def precision_at_k(result, flipped):
    """The ranked image ids, k = the number flipped, and the share of the top k that were flipped."""
    ranked = [issue["image_id"] for issue in result["issues"]]
    k = len(flipped)
    return ranked, k, len(set(ranked[:k]) & flipped) / k


def test_flipped_labels_rank_above_clean_ones_and_nothing_changes(embedded_stack, capsys):

    dataset_id, flipped = flipped_dataset(embedded_stack)
    result = find_issues_changing_nothing(embedded_stack, dataset_id)
    assert result["checked"] == 160 and result["version"] == 2
    ranked, k, precision = precision_at_k(result, flipped)
    recall_all = len(set(ranked) & flipped) / k
    with capsys.disabled():
        print(f"\nlabel-error finder on digits (5 classes, 160 train, {k} flipped): precision@{k} = "
              f"{precision:.2f}, found {len(ranked)}, recall of all found {recall_all:.2f}")
    assert precision >= 0.7
    for issue in result["issues"][:5]:
        if issue["image_id"] in flipped:
            assert issue["suggested"] != issue["given"] and issue["split"] == "train"


def test_accept_keep_skip_guard_rails_and_the_change_record(embedded_stack, capsys):
    import json

    from core.cli import main
    from core.prediction.label_errors import decide, find_and_store, stored_issues

    dataset_id, _ = flipped_dataset(embedded_stack, per_class=20, fraction=0.15)
    summary = find_and_store(actor=ADMIN, dataset_id=dataset_id)
    assert summary["found"] >= 3
    assert main(["label-issues", "--dataset", "noisy", "--limit", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["found"] == summary["found"] and len(printed["issues"]) == 2
    result = stored_issues(storage=embedded_stack.storage, dataset_id=dataset_id)
    first, second, third = result["issues"][:3]
    with embedded_stack.session() as session:
        out = decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id,
                     image_id=first["image_id"], action="accept", actor=USER)
    assert out["changed"] and out["new"] == first["suggested"]
    with embedded_stack.session() as session:
        change = session.scalars(select(ClsLabelChange).where(ClsLabelChange.image_id == uuid.UUID(first["image_id"]),
                                                              ClsLabelChange.reason == "label_error_finder")).one()
        assert change.user_id == USER.id and change.old_class_ids == [first["given_class_id"]]
        assert change.new_class_ids == [first["suggested_class_id"]] and change.created_at is not None
        decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id, image_id=second["image_id"],
               action="keep", actor=USER)
        kept = session.scalars(select(ClsLabel).where(ClsLabel.image_id == uuid.UUID(second["image_id"]))).one()
        assert kept.is_reviewed and str(kept.class_id) == second["given_class_id"]
        assert decide(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_id=dataset_id,
                      image_id=third["image_id"], action="skip")["changed"] is False
    stored = stored_issues(storage=embedded_stack.storage, dataset_id=dataset_id)
    assert set(stored["decisions"]) == {first["image_id"], second["image_id"]}
    with embedded_stack.session() as session, pytest.raises(Conflict, match="changed since"):
        decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id, image_id=first["image_id"],
               action="accept", actor=USER)  # already changed: a second accept is refused

    # a test-split image: refused without confirmation, accepted with it and recorded with its split
    with embedded_stack.session() as session:
        link = session.scalar(select(ClsDatasetImage).where(ClsDatasetImage.image_id == uuid.UUID(third["image_id"])))
        link.split = "test"
    with embedded_stack.session() as session, pytest.raises(InvalidInput, match="test split"):
        decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id, image_id=third["image_id"],
               action="accept", actor=USER)
    with embedded_stack.session() as session:
        out = decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id,
                     image_id=third["image_id"], action="accept", actor=USER, confirm_test=True)
    assert out["split"] == "test"
    with embedded_stack.session() as session:
        assert session.scalars(select(ClsLabelChange.split).where(
            ClsLabelChange.image_id == uuid.UUID(third["image_id"]))).all()[-1] == "test"


def flipped_multilabel_dataset(stack, *, classes=5, per_class=40, fraction=0.1, seed=1):
    """Digits labeled {digit, even|odd} (a real multi-label dataset) with `fraction` of the train
    images' digit label moved to another digit (their even/odd label stays), and a version."""
    from core.datasets.versions import create_version
    from core.labeling.labels import set_labels

    with stack.session() as session:
        version = make_digits_version(session, stack.storage, name="multi", classes=classes, per_class=per_class,
                                      size=16, split_fractions=(0.8, 0.1, 0.1), multi_label=True)
        dataset_id = version.dataset_id
        digit_ids = {i: uuid.UUID(c) for c, i in version.class_mapping.items() if version.class_names[i] != "multi-even"
                     and version.class_names[i] != "multi-odd"}
        index_of = {c: i for i, c in digit_ids.items()}
        rng = np.random.default_rng(seed)
        train = sorted(version.train_image_ids)
        flipped = set(rng.choice(train, size=round(len(train) * fraction), replace=False).tolist())
        for image_id in sorted(flipped):  # sorted: a set iterates in a per-process hash order
            rows = session.scalars(select(ClsLabel).where(ClsLabel.dataset_id == dataset_id,
                                                          ClsLabel.image_id == uuid.UUID(image_id))).all()
            digit = next(r.class_id for r in rows if r.class_id in index_of)
            parity = [r.class_id for r in rows if r.class_id not in index_of]
            wrong = digit_ids[(index_of[digit] + int(rng.integers(1, classes))) % classes]
            set_labels(actor=ADMIN, session=session, dataset_id=dataset_id, image_id=image_id, class_ids=[wrong, *parity])
        create_version(actor=ADMIN, session=session, storage=stack.storage, dataset_id=dataset_id)
    return dataset_id, flipped


def test_multi_label_flipped_labels_rank_above_clean_ones_and_accept_sets_the_suggested_set(embedded_stack, capsys):
    from core.prediction.label_errors import decide

    dataset_id, flipped = flipped_multilabel_dataset(embedded_stack)
    result = find_issues_changing_nothing(embedded_stack, dataset_id)
    assert result["task_type"] == "multi_label" and result["checked"] == 160
    ranked, k, precision = precision_at_k(result, flipped)
    with capsys.disabled():
        print(f"\nmulti-label label-error finder on digits (5 digits + even/odd, 160 train, {k} digit labels "
              f"flipped): precision@{k} = {precision:.2f}, found {len(ranked)}")
    assert precision >= 0.6
    issue = next(i for i in result["issues"] if i["image_id"] in flipped and i["suggested"] != i["given"])
    assert len(issue["given_class_ids"]) == 2 and ", " in issue["given"]
    with embedded_stack.session() as session:
        out = decide(session=session, storage=embedded_stack.storage, dataset_id=dataset_id,
                     image_id=issue["image_id"], action="accept", actor=USER, result=result)
    assert out["changed"] and out["new"] == issue["suggested"]
    with embedded_stack.session() as session:
        now = set(map(str, session.scalars(select(ClsLabel.class_id).where(
            ClsLabel.dataset_id == dataset_id, ClsLabel.image_id == uuid.UUID(issue["image_id"])))))
        change = session.scalars(select(ClsLabelChange).where(
            ClsLabelChange.image_id == uuid.UUID(issue["image_id"]))).all()[-1]
    assert now == set(issue["suggested_class_ids"])
    assert sorted(change.old_class_ids) == sorted(issue["given_class_ids"]) and change.reason == "label_error_finder"


def test_bad_requests(embedded_stack):
    from core.datasets.dataset import create_dataset
    from core.prediction.label_errors import decide, find_issues

    with embedded_stack.session() as session:
        plain = create_dataset(actor=ADMIN, session=session, name="empty").id
        multi = create_dataset(actor=ADMIN, session=session, name="multi", task_type="multi_label").id
    with embedded_stack.session() as session:
        with pytest.raises(NotFound, match="no version"):
            find_issues(session=session, storage=embedded_stack.storage, dataset_id=plain)
        with pytest.raises(NotFound, match="no version"):  # multi-label is supported; it needs a version too
            find_issues(session=session, storage=embedded_stack.storage, dataset_id=multi)
        with pytest.raises(InvalidInput, match="not a valid id"):
            find_issues(session=session, storage=embedded_stack.storage, dataset_id="nope")
        with pytest.raises(InvalidInput, match="action"):
            decide(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_id=plain, image_id=uuid.uuid4(),
                   action="delete")
        with pytest.raises(NotFound, match="not among"):
            decide(actor=ADMIN, session=session, storage=embedded_stack.storage, dataset_id=plain, image_id=uuid.uuid4(),
                   action="accept")
