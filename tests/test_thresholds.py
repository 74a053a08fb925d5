"""Threshold curves, suggested thresholds (F1-optimal per class, abstain) and saving them on a model."""

import math

import numpy as np
import pytest

from core.errors import InvalidInput, NotFound
from core.training.thresholds import (
    GRID,
    SplitPredictions,
    abstain_threshold,
    clean_thresholds,
    explorer,
    f1_optimal_thresholds,
    multi_label_curves,
    save_thresholds,
    scores_at,
    single_label_curves,
)
from tests.factories import ADMIN


def test_multi_label_curves_count_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.7], [0.2, 0.8], [0.4, 0.3]])
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    curves = multi_label_curves(probs, targets, np.array([0.0, 0.5, 0.95]))
    # class 0 at 0.5: fires on rows 0, 1; row 0 is right → precision 1/2, recall 1/2 (row 2 missed)
    assert curves["precision"][0, 1] == pytest.approx(0.5)
    assert curves["recall"][0, 1] == pytest.approx(0.5)
    assert curves["f1"][0, 1] == pytest.approx(0.5)
    # at 0.0 everything fires: recall 1, precision = positives / n
    assert curves["recall"][1, 0] == 1.0 and curves["precision"][1, 0] == pytest.approx(0.5)
    # at 0.95 nothing fires: precision undefined (NaN, drawn as a gap), recall and F1 are 0
    assert math.isnan(curves["precision"][0, 2]) and curves["recall"][0, 2] == 0 and curves["f1"][0, 2] == 0
    assert list(curves["support"]) == [2, 2]


def test_single_label_curves_abstain_trades_coverage_for_accuracy():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.6, 0.4]])
    targets = np.array([0, 1, 1, 0])  # row 1 is wrong and the least confident
    curves = single_label_curves(probs, targets, np.array([0.0, 0.58]))
    assert curves["coverage"][0] == 1.0 and curves["accuracy"][0] == pytest.approx(0.75)
    assert curves["coverage"][1] == 0.75 and curves["accuracy"][1] == 1.0
    # class 1 at 0.58: only row 2 answered as class 1, right → precision 1; recall 1/2
    assert curves["precision"][1, 1] == 1.0 and curves["recall"][1, 1] == 0.5


def test_f1_optimal_threshold_separates_a_separable_class():
    rng = np.random.default_rng(0)
    positives, negatives = rng.uniform(0.3, 0.5, 20), rng.uniform(0.0, 0.25, 30)
    probs = np.concatenate([positives, negatives])[:, None]
    targets = np.concatenate([np.ones(20), np.zeros(30)])[:, None].astype(int)
    [threshold] = f1_optimal_thresholds(probs, targets)
    assert negatives.max() < threshold <= positives.min()
    # the default 0.5 would miss every positive; the tuned threshold gets F1 = 1
    curves = multi_label_curves(probs, targets, np.array([0.5, threshold]))
    assert curves["f1"][0, 0] == 0 and curves["f1"][0, 1] == pytest.approx(1.0)


def test_f1_optimal_is_none_for_a_class_without_positives():
    probs = np.array([[0.2, 0.9], [0.1, 0.8]])
    targets = np.array([[0, 1], [0, 1]])
    assert f1_optimal_thresholds(probs, targets)[0] is None


def test_abstain_threshold_reaches_the_target_with_most_coverage():
    # top probabilities 0.95 ✓, 0.9 ✓, 0.8 ✗, 0.7 ✓, 0.6 ✗
    probs = np.array([[0.95, 0.05], [0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = np.array([0, 1, 1, 1, 1])
    assert abstain_threshold(probs, targets, 0.75) == pytest.approx(0.7)  # 3 of 4 answered right
    assert abstain_threshold(probs, targets, 1.0) == pytest.approx(0.9)
    assert abstain_threshold(probs, targets, 0.6) == 0.0  # all answered: 3/5 = 0.6
    assert abstain_threshold(probs[[2, 4]], targets[[2, 4]], 0.5) is None  # nothing is ever right


def test_abstain_threshold_never_splits_tied_scores():
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4]])
    targets = np.array([0, 1, 0])  # the two 0.8 rows: one right, one wrong
    assert abstain_threshold(probs, targets, 1.0) is None  # cutting between the ties is impossible


@pytest.mark.parametrize("target", [0, -0.1, 1.5])
def test_abstain_threshold_refuses_a_bad_target(target):
    with pytest.raises(InvalidInput, match="target accuracy"):
        abstain_threshold(np.array([[0.6, 0.4]]), np.array([0]), target)


def test_explorer_and_scores_at_for_both_tasks():
    single = SplitPredictions("val", ["a", "b", "c"], np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]),
                              np.array([0, 1, 1]), multi_label=False)
    report = explorer(single, ["cat", "dog"], target_accuracy=1.0)
    # the lowest grid threshold answering only the right 0.9 image (the slider's 0.01 steps)
    assert report["suggested"] == {"abstain": 0.71} and len(report["grid"]) == len(GRID)
    rows = scores_at(single, ["cat", "dog"], {"abstain": 0.0})
    assert [r["class"] for r in rows] == ["cat", "dog"] and rows[1]["recall"] == 0.5
    assert list(single.wrong()) == [2]

    multi = SplitPredictions("val", ["a", "b"], np.array([[0.9, 0.2], [0.3, 0.45]]), np.array([[1, 0], [0, 1]]),
                             multi_label=True)
    report = explorer(multi, ["red", "round"])
    assert set(report["suggested"]["per_class"]) == {"red", "round"}
    assert report["suggested"]["per_class"]["round"] == pytest.approx(0.45)
    rows = scores_at(multi, ["red", "round"], report["suggested"])
    assert all(r["f1"] == 1.0 for r in rows)
    assert list(multi.wrong()) == [1]  # at 0.5 "round" is missed


class FakeModel:
    """clean_thresholds only reads task_type and class_names; the saving tests use real rows."""

    def __init__(self, task_type, class_names):
        self.task_type, self.class_names = task_type, class_names


@pytest.mark.parametrize(("task", "thresholds", "message"), [
    ("single_label", {}, "need abstain"),
    ("single_label", {"abstain": 1.5}, "from 0 to 1"),
    ("single_label", {"abstain": float("nan")}, "from 0 to 1"),
    ("single_label", {"abstain": True}, "from 0 to 1"),
    ("single_label", {"abstain": "0.5"}, "from 0 to 1"),
    ("single_label", {"per_class": {"a": 0.5}}, "not per-class"),
    ("multi_label", {"abstain": 0.5}, "not an abstain"),
    ("multi_label", {"per_class": {"a": 0.5}}, "no threshold for class"),
    ("multi_label", {"per_class": {"a": 0.5, "b": 0.5, "zebra": 0.3}}, "unknown class"),
    ("multi_label", {"per_class": {"a": 0.5, "b": -0.1}}, "threshold of 'b'"),
    ("multi_label", {"per_class": ["a", "b"]}, "per_class"),
    ("multi_label", "0.5", "must be an object"),
])
def test_bad_thresholds_are_refused_with_a_message(task, thresholds, message):
    with pytest.raises(InvalidInput, match=message):
        clean_thresholds(FakeModel(task, ["a", "b"]), thresholds)


def _model_row(session, task_type="multi_label"):
    from core.models import ClsTrainedModel

    row = ClsTrainedModel(name="m", model_type="convnext", model_size="atto", task_type=task_type, num_classes=2,
                          class_names=["a", "b"], class_mapping={"x": 0, "y": 1})
    session.add(row)
    session.flush()
    return row.id


def test_save_thresholds_replaces_and_reads_back(db_stack):
    with db_stack.session() as session:
        model_id = _model_row(session)
    with db_stack.session() as session:
        save_thresholds(actor=ADMIN, session=session, model_id=model_id,
                        thresholds={"per_class": {"a": 0.3, "b": 0.7}, "split": "val", "method": "f1_optimal"})
    with db_stack.session() as session:
        save_thresholds(actor=ADMIN, session=session, model_id=model_id, thresholds={"per_class": {"a": 0.4, "b": 0.6}})
    from core.models import ClsTrainedModel

    with db_stack.session() as session:
        saved = session.get(ClsTrainedModel, model_id).thresholds
    assert saved["per_class"] == {"a": 0.4, "b": 0.6} and "method" not in saved and saved["saved_at"]


def test_save_thresholds_bad_input_changes_nothing(db_stack):
    with db_stack.session() as session:
        model_id = _model_row(session, "single_label")
        save_thresholds(actor=ADMIN, session=session, model_id=model_id, thresholds={"abstain": 0.4})
    with pytest.raises(InvalidInput), db_stack.session() as session:
        save_thresholds(actor=ADMIN, session=session, model_id=model_id, thresholds={"abstain": 2})
    from core.models import ClsTrainedModel

    with db_stack.session() as session:
        assert session.get(ClsTrainedModel, model_id).thresholds["abstain"] == 0.4
    import uuid

    with pytest.raises(NotFound), db_stack.session() as session:
        save_thresholds(actor=ADMIN, session=session, model_id=uuid.uuid4(), thresholds={"abstain": 0.4})


def test_the_suggestion_never_answers_nothing_and_says_why_when_none_fits():
    """A small, unsure model: its only confident image is right, the rest are coin flips. A threshold
    answering that one image "keeps 90 %" but says nothing: none is suggested, and the reason names
    the best the model reaches at a useful coverage."""
    rng = np.random.default_rng(0)
    top = np.concatenate([[0.97], rng.uniform(0.34, 0.45, 59)])
    probs = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)
    targets = np.concatenate([[0], rng.integers(0, 3, 59)])
    single = SplitPredictions("val", [str(i) for i in range(60)], probs, targets, multi_label=False)
    report = explorer(single, ["a", "b", "c"], target_accuracy=0.9)
    assert report["suggested"]["abstain"] is None
    assert "answering at least 10%" in report["suggested"]["reason"] and "right at threshold" in report["suggested"]["reason"]
    for target in (0.3, 0.5, 0.6):  # whatever is suggested answers at least a tenth of the images
        suggested = explorer(single, ["a", "b", "c"], target_accuracy=target)["suggested"]["abstain"]
        if suggested is not None:
            assert (probs.max(axis=1) >= suggested).mean() >= 0.1
